"""The steps of the chain as library functions: ``run(cfg, inputs...) -> result``, each the code of one CLI verb.

    train         steps.train.run        a stage or a learning scheme (mask generator S)     semples train
    cams          steps.cams.run         multi-scale + flip seeds of S                        semples cams
    clip_cams     steps.clip_cams.run    FMA's CLIP Grad-CAM (+ CAA) seeds                    (semples run --method fma)
    caa           steps.caa.run          CAA of any CAM folder                                (semples run --method
                                                                                                semples+fma)
    seeds         steps.seeds.run        threshold sweep of a CAM folder                      semples eval-seeds
    pseudo_masks  steps.pseudo_masks.run seeds -> pseudo masks (CRF, region voting, ...)      semples pseudo-masks
    masks         steps.masks.run        mIoU of a folder of label PNGs                       semples eval-masks
    segment       steps.segment.train    the final model; .evaluate: its evaluation           train-seg, eval-seg
    figures       steps.figures.run      sample grids                                         semples figures
    data          steps.data.check / .export_masks                                            semples data
    predict       steps.predict.run      a trained model on a user's own images               semples predict
    export        steps.export.run       label PNGs -> COCO RLE json, VOC test-server RGB, index semples export

Steps raise `semples.errors.SemplesError` subclasses with their own message; `semples.cli` prints them, `semples
run` (`semples.pipeline`), `semples demo` and the benchmarks call these functions directly, so an error reaches the
user with its type, message and traceback intact.
"""

import importlib

__all__ = ["caa", "cams", "clip_cams", "data", "export", "figures", "masks", "predict", "pseudo_masks", "seeds",
           "segment", "train"]


def __getattr__(name: str):
    """``steps.<name>`` imports that step's module on first use: most of them import torch and the models, which
    a verb's ``--help`` and the torch-free steps (pseudo masks by CRF, mask evaluation) should not wait for."""
    if name in __all__:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
