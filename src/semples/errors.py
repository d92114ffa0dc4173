"""Errors a user can fix (bad config, missing file, missing weights). The CLI prints them in one line."""

from __future__ import annotations

from semples.data.base import DataError
from semples.utils.checkpoint_io import CheckpointError
from semples.utils.dataclass_config import ConfigError
from semples.utils.extras import MissingExtraError


class WeightsError(RuntimeError):
    """Pretrained weights are missing or do not fit; the message says what to pass instead."""


class PipelineError(RuntimeError):
    """A step of `semples run` failed or an earlier step's output is missing; the message names the step."""


class UsageError(Exception):
    """The command line lacks what the verb needs; the CLI prints the message and exits with status 2."""


UserError = (ConfigError, DataError, WeightsError, CheckpointError, PipelineError, FileNotFoundError,
             MissingExtraError)

__all__ = ["CheckpointError", "ConfigError", "DataError", "MissingExtraError", "PipelineError", "UsageError",
           "UserError", "WeightsError"]
