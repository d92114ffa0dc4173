"""SemPLeS + FMA: SemPLeS training and seeds, refined by CAA with the frozen CLIP's attention, then FMA's fine SAMS
pseudo masks. This measures the pipeline path (SemPLeS CAMs fed to CAA + SAMS), not the probability ensemble
(0.85 · FMA + 0.15 · SemPLeS) the paper's best numbers most likely come from (METHOD.md §2)."""

from __future__ import annotations

from pathlib import Path

from semples import steps
from semples.config import Config
from semples.methods.base import RunContext, force_flag
from semples.methods.fma import sams_seeds
from semples.methods.semples import SemplesMethod


class SemplesFmaMethod(SemplesMethod):
    name = "semples+fma"
    folder = "semples_fma"

    def pseudo_kind(self, cfg: Config) -> str:
        return "sams_fine"

    def cams(self, run: RunContext, split: str, out: Path) -> None:
        generator = run.output("train", "generator")
        semples_cams = run.layout.cams(split, "cams_semples")
        run.record("cams", ["cams", "--generator", generator, "--split", split, "--out", str(semples_cams),
                            *force_flag(run)])
        steps.cams.run(run.cfg, generator, split=split, out=semples_cams, force=run.force)
        steps.caa.run(run.cfg, semples_cams, out, phase="fine", split=split, force=run.force)

    def pseudo_masks(self, run: RunContext, split: str, cams: str, out: str) -> None:
        sams_seeds(run.cfg, cams, out, phase="fine", split=split, force=run.force)


__all__ = ["SemplesFmaMethod"]
