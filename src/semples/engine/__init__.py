"""The one training loop, its sampler, checkpoints and metrics, and the one device/precision/process resolver.

Names resolve on first use (`semples.engine.device` for the device names, `semples.engine.loop` for the loop): an
inference step that only needs a `ProcessState` does not import the training loop, or torch where it needs none.
"""

import importlib

_WHERE = {
    "ProcessState": "device", "autocast_factory": "device", "make_accelerator": "device", "process_state": "device",
    "resolve_device": "device", "resolve_precision": "device",
    "StageResult": "loop", "lr_at": "loop", "train_stage": "loop",
}

__all__ = ["ProcessState", "StageResult", "autocast_factory", "lr_at", "make_accelerator", "process_state",
           "resolve_device", "resolve_precision", "train_stage"]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
