"""Step predict: a trained segmentation model (or a mask generator's seeds) on a user's images (`semples predict`).

    run(cfg, model_run, images, out)                 -> <out>/masks/, overlays/, areas/, areas.json, manifest.json
    run(cfg, generator_run, images, out, seeds=True) -> the same from the generator's CAMs and a background score

The model comes from a train-seg run folder (the architecture and the class names from its checkpoint; no weights
are fetched) — or a mask generator's run folder for seeds. Everything per image is `semples.infer.predict`; the
loop is the one inference runner (devices, processes, skip-if-done, manifest) as for `semples cams`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from semples.config import Config
from semples.data.base import ClassTable
from semples.data.classes import custom_classes
from semples.engine.device import process_state
from semples.errors import UsageError
from semples.infer.predict import FILE_FORMAT, ImageFiles, PredictSettings, PredictTask, find_images
from semples.infer.runner import run_images
from semples.runs import FolderRecord
from semples.utils.checkpoint_io import atomic_write_json, read_checkpoint

log = logging.getLogger(__name__)


@dataclass
class PredictResult:
    """What `run` did (this process's share) and where."""

    out_dir: Path
    images: int
    written: int
    skipped: int
    failed: list[str]
    images_per_second: float
    computed: int
    manifest: dict


def _classes_of(cfg: Config, recorded: list[str] | None) -> ClassTable:
    if recorded is not None:
        return custom_classes(list(recorded))
    from semples.data import build_dataset

    return build_dataset(cfg.data, cfg.data.train_split).classes  # an older checkpoint: the experiment's dataset


def class_indices(names: list[str] | None, classes: ClassTable) -> tuple[int, ...] | None:
    """0-based indices of class names (canonical or prompt names); None passes through."""
    if not names:
        return None
    try:
        return tuple(sorted({classes.index(n.strip()) for n in names}))
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None


def run(cfg: Config, model: str | Path, images: list[str], out: str | Path, *, seeds: bool = False,
        settings: PredictSettings | None = None, class_names: list[str] | None = None, force: bool = False,
        progress: bool = True) -> PredictResult:
    """Predicts every image named by `images` into `out` (see the module docstring).

    Args:
        cfg: the experiment config (device, mixed precision, data.num_workers; for seeds the generator section).
        model: a train-seg run folder or checkpoint (or, with `seeds`, a mask generator's run folder).
        images: files, folders or glob patterns.
        out: the output folder.
        seeds: `model` is a mask generator; labels from its CAMs and ``settings.threshold``.
        settings: scales, flip, CRF, max side ... (default `PredictSettings()` with the model's normalisation).
        class_names: seeds: the classes to segment (default: those the generator finds).
        force: recompute every image (and accept a folder made with another model or settings).
        progress: tqdm bar.

    Raises:
        DataError: an input that names no image, or two images with one id.
        CheckpointError: the run folder holds no model of the asked kind.
        ReuseError: `out` holds predictions of another model or other settings (unless `force`).
    """
    if settings is not None and settings.crf:  # before any work, not at the first image
        from semples.utils.extras import require

        require(["pydensecrf.densecrf"], "semples predict --crf")
    ckpt = read_checkpoint(model)
    if seeds:
        from semples.models.mask_generators import checkpoint_record, generator_context, load_generator

        classes = _classes_of(cfg, None)
        net, record = load_generator(ckpt["path"], cfg.generator, len(classes),
                                     context=generator_context(cfg, classes))
        record = {**checkpoint_record(ckpt), **{k: v for k, v in record.items() if k != "path"}}
        norm = cfg.cams.normalize
    else:
        from semples.models.segmenters import load_segmenter

        classes_recorded = ckpt.get("config", {}).get("classes")
        classes = _classes_of(cfg, classes_recorded)
        net, record = load_segmenter(ckpt, cfg.segment.model, len(classes) + 1)
        record = {k: record[k] for k in ("path", "sha256", "stage", "finished")}
        norm = ckpt.get("config", {}).get("segment", {}).get("transform", {}).get("normalize",
                                                                                   cfg.segment.transform.normalize)
    settings = settings or PredictSettings()
    if settings.normalize != norm:
        import dataclasses

        settings = dataclasses.replace(settings, normalize=norm)
    if seeds:
        import dataclasses

        settings = dataclasses.replace(settings, classes=class_indices(class_names, classes))
    names = ["background", *classes.names]
    items = find_images(images)
    dataset = ImageFiles(items, classes)
    out_dir = Path(out)
    folder = FolderRecord(kind="predictions", producer="semples.steps.predict",
                          data={"dataset": "images", "root": None, "split": None, "name": "user images"},
                          classes=list(classes.names), inputs={"generator" if seeds else "model": record},
                          settings=settings.record(seeds), uncompared=("batch_size",), file_format=FILE_FORMAT,
                          extra={"source": "seeds of a mask generator" if seeds else "segmentation model"})
    state = process_state(cfg.device)
    summary = run_images(PredictTask(net, names, settings, seeds=seeds), dataset, out_dir, group_size=8,
                         force=force, num_workers=cfg.data.num_workers, skip_bad=cfg.data.skip_bad,
                         progress=progress, state=state, record=folder)
    if state.is_main_process:  # one file with the areas of every image of this call
        per_image = {}
        for image_id in dataset.ids:
            path = out_dir / "areas" / f"{image_id}.json"
            if path.is_file():
                per_image[image_id] = json.loads(path.read_text())
        atomic_write_json(out_dir / "areas.json", {"classes": names, "images": per_image})
    return PredictResult(out_dir, len(dataset), summary.written, summary.skipped, summary.failed,
                         summary.images_per_second, summary.computed, summary.manifest)


__all__ = ["PredictResult", "class_indices", "run"]
