"""FMA-WSSS (METHOD.md §2): CLIP Grad-CAM prompts learnt in two phases, CAA-refined seeds, SAMS pseudo masks.

    train        stage fma-classify -> coarse CLIP CAMs (CAA, box threshold 0.4) -> coarse SAMS seeds (background
                 power 0.6) -> stage fma-segment on those seeds
    cams         fine CLIP Grad-CAM + CAA (box threshold 0.5) of the fma-segment generator
    pseudo masks fine SAMS region voting (background power 0.7)

Region sources follow the ``pseudo`` section: SAM when ``pseudo.sam.checkpoint`` is set (``pseudo.region_vote
.source``), superpixels otherwise. `sams_seeds` is the SAMS step any method can use (SemPLeS + FMA does).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from semples import steps
from semples.config import Config
from semples.methods.base import Method, RunContext, force_flag


def sams_seeds(cfg: Config, cams: str | Path, out: str | Path, *, phase: str = "coarse", split: str | None = None,
               region_source=None, limit: int | None = None, force: bool = False, progress: bool = True):
    """SAMS seeds (label PNGs) of a CAM folder: region voting with the background power of `phase`
    (``fma.coarse_bg_power`` 0.6 / ``fine_bg_power`` 0.7), regions from the ``pseudo`` section (SAM checkpoint or
    superpixels). The fine seeds are FMA-WSSS's pseudo masks. Returns the step's `PseudoMasksResult`."""
    _, power = cfg.fma.phase_settings(phase)
    pc = dataclasses.replace(cfg.pseudo, method="region-vote",
                             region_vote=dataclasses.replace(cfg.pseudo.region_vote, bg_power=power))
    return steps.pseudo_masks.run(cfg, cams, split=split or cfg.data.train_split, out=out, pseudo=pc,
                                  region_source=region_source, limit=limit, force=force, progress=progress,
                                  extra_manifest={"phase": phase})


class FmaMethod(Method):
    name = "fma"
    folder = "fma"

    def pseudo_kind(self, cfg: Config) -> str:
        return "sams_fine"

    def train(self, run: RunContext) -> dict:
        cfg, layout, split = run.cfg, run.layout, run.pseudo_split
        run.record("train", ["train", "--stage", "fma-classify", "--resume", *force_flag(run)])
        stages = steps.train.run(cfg, stage="fma-classify", resume=True, force=run.force).results
        coarse_cams = layout.cams(split, "cams_coarse")
        coarse_seeds = layout.seeds(split, "seeds_coarse")
        steps.clip_cams.run(cfg, layout.stage("fma-classify"), coarse_cams, phase="coarse", split=split,
                            force=run.force)
        sams_seeds(cfg, coarse_cams, coarse_seeds, phase="coarse", split=split, force=run.force)
        run.record("train", ["train", "--stage", "fma-segment", "--seeds", str(coarse_seeds), "--resume",
                             *force_flag(run)])
        stages.update(steps.train.run(cfg, stage="fma-segment", seeds=coarse_seeds, resume=True,
                                      force=run.force).results)
        return {"generator": str(layout.stage("fma-segment")), "coarse_cams": str(coarse_cams),
                "coarse_seeds": str(coarse_seeds), "stages": {folder: r.status for folder, r in stages.items()}}

    def cams(self, run: RunContext, split: str, out: Path) -> None:
        # CLIP Grad-CAM of the segmentation prompts, CAA with the fine box threshold
        steps.clip_cams.run(run.cfg, run.output("train", "generator"), out, phase="fine", split=split,
                            force=run.force)

    def pseudo_masks(self, run: RunContext, split: str, cams: str, out: str) -> None:
        # SAMS region voting with the fine background power
        sams_seeds(run.cfg, cams, out, phase="fine", split=split, force=run.force)


__all__ = ["FmaMethod", "sams_seeds"]
