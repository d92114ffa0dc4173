"""The one training loop, its sampler, checkpoints, metrics and the device/precision/process setup."""

from semples.engine.distributed import make_accelerator, resolve_precision
from semples.engine.loop import StageResult, lr_at, train_stage

__all__ = ["StageResult", "lr_at", "make_accelerator", "resolve_precision", "train_stage"]
