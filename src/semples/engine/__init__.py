"""The one training loop, its sampler, checkpoints and metrics, and the one device/precision/process resolver."""

from semples.engine.device import (
    ProcessState,
    autocast_factory,
    make_accelerator,
    process_state,
    resolve_device,
    resolve_precision,
)
from semples.engine.loop import StageResult, lr_at, train_stage

__all__ = ["ProcessState", "StageResult", "autocast_factory", "lr_at", "make_accelerator", "process_state",
           "resolve_device", "resolve_precision", "train_stage"]
