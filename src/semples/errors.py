"""Errors a user can fix (bad config, missing file, missing weights). The CLI prints them in one line."""

from __future__ import annotations

from semples.data.base import DataError
from semples.utils.checkpoint_io import CheckpointError
from semples.utils.dataclass_config import ConfigError


class WeightsError(RuntimeError):
    """Pretrained weights are missing or do not fit; the message says what to pass instead."""


UserError = (ConfigError, DataError, WeightsError, CheckpointError, FileNotFoundError)

__all__ = ["CheckpointError", "ConfigError", "DataError", "UserError", "WeightsError"]
