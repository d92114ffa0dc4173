"""What a method of `semples run` is: its training, its seeds, its pseudo masks, and where they go."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from semples.config import Config
from semples.runs import RunLayout


class RunContext(Protocol):
    """What a method is handed by the pipeline (`semples.pipeline.Pipeline` is one)."""

    cfg: Config
    force: bool
    layout: RunLayout

    @property
    def pseudo_split(self) -> str: ...

    def output(self, step: str, key: str) -> str:
        """An earlier step's recorded output (raises `RunError` when it has none)."""

    def record(self, step: str, argv: list[str]) -> None:
        """Records the `semples` command line equivalent to what a step ran (run.json)."""


class Method:
    """One method of `semples run`.

    Attributes:
        name: the ``pipeline.method`` value.
        folder: the sub-folder of ``<output_dir>/<experiment>`` everything after training goes to (None: the
            experiment folder itself), so the methods of one experiment share its training runs and never mix
            their seeds.
    """

    name: str = "method"
    folder: str | None = None

    def pseudo_kind(self, cfg: Config) -> str:
        """The ``pseudo_masks/<kind>`` folder name of its pseudo masks."""
        return cfg.pseudo.method

    def train(self, run: RunContext) -> dict:
        """Trains the mask generator; returns the step's outputs (``generator``: the run folder the seeds use)."""
        raise NotImplementedError

    def cams(self, run: RunContext, split: str, out: Path) -> None:
        """Writes the seeds of `split` into the CAM folder `out`."""
        raise NotImplementedError

    def pseudo_masks(self, run: RunContext, split: str, cams: str, out: str) -> None:
        """Writes the pseudo masks of `split` from the CAM folder `cams` into `out`."""
        raise NotImplementedError


def force_flag(run: RunContext) -> list[str]:
    return ["--force"] if run.force else []


__all__ = ["Method", "RunContext", "force_flag"]
