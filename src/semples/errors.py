"""The one tree of errors a user can fix. `semples.cli` prints any `SemplesError` as one line and exits 1 (2 for a
`UsageError`); anything else is a bug and keeps its traceback.

    SemplesError
      ConfigError        a config key or value is invalid, or a setting needs another one (names the dotted key)
      UsageError         the command line lacks what the verb needs (exit status 2)
      DataError          a dataset item or file cannot be used (names the file and the problem)
      MissingInputError  a file or folder a step reads does not exist (names it and the step that writes it)
      WeightsError       pretrained weights are missing or do not fit (says what to pass instead)
      CheckpointError    a checkpoint is missing, unreadable or of the wrong kind (names the file)
      RunError           a run folder cannot be used as asked: an earlier step's output is not recorded ...
        ReuseError       ... or a finished folder was made from other inputs or settings (names what differs)

Each error also subclasses the builtin it replaces (ValueError, FileNotFoundError, RuntimeError), so callers that
caught those keep working. This module imports nothing: every room of the package may raise these.
"""

from __future__ import annotations


class SemplesError(Exception):
    """Base of every error a user can fix; the message is one line that says what to do."""


class ConfigError(SemplesError, ValueError):
    """A config value or key is invalid. The message names the dotted key and what is allowed."""


class UsageError(SemplesError):
    """The command line lacks what the verb needs; the CLI prints the message and exits with status 2."""


class DataError(SemplesError, ValueError):
    """A dataset item or file cannot be used. The message names the file and the problem in one line."""


class MissingInputError(SemplesError, FileNotFoundError):
    """A file or folder a step reads does not exist; the message names it and how to make it."""


class MissingExtraError(SemplesError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that brings it."""


class WeightsError(SemplesError, RuntimeError):
    """Pretrained weights are missing or do not fit; the message says what to pass instead."""


class CheckpointError(SemplesError, RuntimeError):
    """A checkpoint path is missing, unreadable or not a semples checkpoint (message names the file)."""


class RunError(SemplesError, RuntimeError):
    """A run folder or run manifest cannot be used as asked (e.g. an earlier step's output is not recorded)."""


class ReuseError(RunError):
    """A finished output folder was made from other inputs or settings than asked for now.

    The message names every difference (config key with old and new value, or input with both sha256) and the
    way out: ``--force`` to redo it, or another output folder (``--run-dir`` / ``--out``).
    """


__all__ = ["CheckpointError", "ConfigError", "DataError", "MissingExtraError", "MissingInputError", "ReuseError",
           "RunError", "SemplesError", "UsageError", "WeightsError"]
