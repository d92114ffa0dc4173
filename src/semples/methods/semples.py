"""SemPLeS (paper §3): classify -> match -> prompt -> refine, seeds of S (`semples cams`), pseudo masks by the
``pseudo`` section (dense CRF at the best threshold of eval-seeds by default)."""

from __future__ import annotations

from pathlib import Path

from semples import steps
from semples.methods.base import Method, RunContext, force_flag
from semples.runs import final_generator_folder


class SemplesMethod(Method):
    name = "semples"
    folder = None

    def train(self, run: RunContext) -> dict:
        cfg = run.cfg
        run.record("train", ["train", "--scheme", cfg.scheme.scheme, "--resume", *force_flag(run)])
        result = steps.train.run(cfg, scheme=cfg.scheme.scheme, resume=True, force=run.force)
        return {"generator": str(run.layout.stage(final_generator_folder(cfg))),
                "stages": {folder: r.status for folder, r in result.results.items()}}

    def cams(self, run: RunContext, split: str, out: Path) -> None:
        generator = run.output("train", "generator")
        run.record("cams", ["cams", "--generator", generator, "--split", split, "--out", str(out), *force_flag(run)])
        steps.cams.run(run.cfg, generator, split=split, out=out, force=run.force)

    def pseudo_masks(self, run: RunContext, split: str, cams: str, out: str) -> None:
        threshold_from = run.output("eval-seeds", "metrics") if run.cfg.pseudo.threshold is None else None
        run.record("pseudo-masks", ["pseudo-masks", "--cams", cams, "--split", split, "--out", out,
                                    *(["--threshold-from", threshold_from] if threshold_from else []),
                                    *force_flag(run)])
        steps.pseudo_masks.run(run.cfg, cams, split=split, out=out, threshold_from=threshold_from, force=run.force)


__all__ = ["SemplesMethod"]
