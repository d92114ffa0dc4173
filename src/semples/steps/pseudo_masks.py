"""Step pseudo-masks: seeds (a CAM folder) -> pseudo masks (label PNGs) by dense CRF, region voting or a threshold.

Picks the CAM folder, the split (the CAM folder's manifest by default), the background threshold (given, from an
eval-seeds metrics.json, or ``pseudo.threshold``) and the output folder, then runs
`semples.infer.pseudo_masks.generate_pseudo_masks` (the one inference runner with `PseudoMaskTask`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from semples.config import Config
from semples.data import build_dataset
from semples.errors import ConfigError
from semples.infer.config import PseudoMaskConfig
from semples.runs import RunLayout, data_record, read_folder_manifest, recorded_split

log = logging.getLogger(__name__)


@dataclass
class PseudoMasksResult:
    """Where the masks went and what was done."""

    out_dir: Path
    split: str
    dataset: str
    method: str
    region_source: str | None
    threshold: float | None
    threshold_source: str | None
    written: int
    skipped: int
    missing_cams: list[str]
    images_per_second: float
    manifest: dict


def pseudo_config(cfg: Config, pseudo: PseudoMaskConfig | None = None) -> PseudoMaskConfig:
    """The ``pseudo`` section to run with: `pseudo` (default ``cfg.pseudo``), SAM on the config's device when
    ``pseudo.sam.device`` is auto."""
    pc = pseudo or cfg.pseudo
    if pc.sam.device == "auto" and cfg.device != "auto":
        pc = dataclasses.replace(pc, sam=dataclasses.replace(pc.sam, device=cfg.device))
    return pc


def choose_threshold(pc: PseudoMaskConfig, threshold: float | None = None,
                     threshold_from: str | Path | None = None) -> tuple[float | None, str | None]:
    """(t, where it came from): `threshold`, else the best t of an eval-seeds metrics.json, else
    ``pseudo.threshold``, else (None, None)."""
    from semples.infer.pseudo_masks import read_threshold

    if threshold is not None:
        t, source = threshold, "--threshold"
    elif threshold_from is not None:
        t, source = read_threshold(threshold_from)
    elif pc.threshold is not None:
        t, source = pc.threshold, "pseudo.threshold"
    else:
        return None, None
    if not 0.0 <= t <= 1.0:
        raise ConfigError(f"background threshold must be in [0, 1], got {t}")
    return t, source


def run(cfg: Config, cams: str | Path | None = None, *, split: str | None = None, out: str | Path | None = None,
        pseudo: PseudoMaskConfig | None = None, threshold: float | None = None,
        threshold_from: str | Path | None = None, skip_missing: bool = False, limit: int | None = None,
        force: bool = False, progress: bool = True, region_source=None, folder_kind: str | None = None,
        extra_manifest: dict | None = None) -> PseudoMasksResult:
    """Writes one pseudo-mask PNG per image of the split and the folder's manifest.

    Args:
        cfg: the experiment config (data, pseudo, device).
        cams: the CAM folder (default ``pseudo.cams_dir``, else the `semples cams` folder of the split).
        split: the split (default ``pseudo.split``, else the CAM folder's manifest, else ``data.train_split``).
        out: output folder (default ``pseudo.out_dir``, else ``<output_dir>/<experiment>/pseudo_masks/<method>/
            <split>``).
        pseudo: the ``pseudo`` section to use (default ``cfg.pseudo``: method, CRF, region voting, ignore band).
        threshold / threshold_from: background threshold t, or an eval-seeds metrics.json to take its best t.
        skip_missing: leave out images without a CAM file.
        limit: only the first `limit` images.
        force: remake every PNG (also in a folder made with other parameters).
        progress: tqdm bar.
        region_source: a ready region source for region voting (tests, SAM shared across calls).
        folder_kind: the ``pseudo_masks/<kind>`` folder name of the default output (default: the method).
        extra_manifest: more manifest entries (the FMA phase ...).

    Raises:
        MissingInputError: no CAM folder, or CAM files missing (unless `skip_missing`).
        ReuseError: the output folder holds masks of other parameters or seeds (unless `force`).
        ConfigError: the method needs a threshold and none was given, or t is outside [0, 1].
    """
    from semples.infer.pseudo_masks import generate_pseudo_masks

    pc = pseudo_config(cfg, pseudo)
    layout = RunLayout(cfg)
    cams_arg = cams or pc.cams_dir
    split = split or pc.split
    if cams_arg:
        cams_dir = Path(cams_arg)
        split = split or recorded_split(cams_dir) or cfg.data.train_split
    else:
        split = split or cfg.data.train_split
        cams_dir = layout.cams(split)
    recorded = recorded_split(cams_dir)
    if recorded not in (None, split):
        log.warning("%s holds CAMs of split %s, reading images of %s", cams_dir, recorded, split)
    t, source = choose_threshold(pc, threshold, threshold_from)
    out_dir = Path(out) if out is not None else layout.pseudo_masks(folder_kind or pc.method, split)
    dataset = build_dataset(cfg.data, split)
    cams_manifest = read_folder_manifest(cams_dir) or {}
    run_ = generate_pseudo_masks(
        dataset, cams_dir, out_dir, pc, t, threshold_source=source, force=force, skip_missing=skip_missing,
        limit=limit, progress=progress, region_source=region_source,
        extra_manifest={"data": data_record(cfg, split, dataset),
                        "cams_manifest": {k: cams_manifest[k] for k in ("inputs", "settings") if k in cams_manifest},
                        **(extra_manifest or {})})
    manifest = run_.manifest or {}
    return PseudoMasksResult(out_dir, split, dataset.name, pc.method, manifest.get("region_source"), t, source,
                             run_.written, run_.skipped_existing, run_.missing_cams, run_.images_per_second, manifest)


__all__ = ["PseudoMasksResult", "choose_threshold", "pseudo_config", "run"]
