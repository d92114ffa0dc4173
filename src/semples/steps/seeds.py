"""Step eval-seeds: mIoU of seeds (a CAM folder) over a grid of background thresholds (`semples eval-seeds`).

`semples.evaluate.seeds` sweeps the thresholds and writes metrics.json, metrics.md and threshold_curve.png; this
step picks the folder and split (the split recorded in the CAM folder's manifest by default), and draws the sample
grid (image | ground truth | seed heat map | seed mask at t).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from semples.config import Config
from semples.data import build_dataset
from semples.errors import MissingInputError
from semples.runs import RunLayout, read_folder_manifest, recorded_split
from semples.steps.cams import default_split

log = logging.getLogger(__name__)


@dataclass
class SeedsResult:
    """Where the evaluation went and its headline numbers (the rest is in ``metrics``)."""

    out_dir: Path
    split: str
    dataset: str
    threshold: float
    selection: str
    metrics: dict

    @property
    def miou(self) -> float | None:
        return self.metrics.get("miou")


def run(cfg: Config, cams: str | Path | None = None, *, split: str | None = None, out: str | Path | None = None,
        threshold: float | None = None, allow_missing: bool = False, limit: int | None = None, samples: int = 8,
        progress: bool = True) -> SeedsResult:
    """Evaluates a CAM folder against the split's ground truth.

    Args:
        cfg: the experiment config (data, seeds.thresholds, seeds.num_workers, seed for the sample choice).
        cams: the CAM folder (default: the `semples cams` folder of the split).
        split: the split (default: the CAM folder's manifest, else ``cams.split`` / ``data.eval_split``).
        out: the eval folder (default ``<output_dir>/<experiment>/eval_seeds/<split>``, or ``seeds.out_dir``).
        threshold: report at this background threshold (chosen elsewhere) instead of the best on this split.
        allow_missing: evaluate the images that have a CAM file (default: every image must have one).
        limit: only the first `limit` images of the split.
        samples: images in samples.png (0: no figure).
        progress: tqdm bar.

    Raises:
        MissingInputError: no CAM folder there.
        DataError: CAM files missing (unless `allow_missing`) or of another dataset.
    """
    from semples.evaluate.seeds import evaluate_seeds, write_seed_report
    from semples.infer.cam_io import cam_path
    from semples.metrics.sweep import threshold_grid
    from semples.report.figures import pick_samples, write_sample_grid

    layout = RunLayout(cfg)
    if cams is not None:
        cams_dir = Path(cams)
        split = split or recorded_split(cams_dir) or default_split(cfg)
    else:
        split = split or default_split(cfg)
        cams_dir = layout.cams(split)
    if not cams_dir.is_dir():
        raise MissingInputError(f"{cams_dir}: no CAM folder (run `semples cams` first, or pass --cams DIR)")
    manifest = read_folder_manifest(cams_dir)
    recorded = recorded_split(cams_dir)
    if recorded not in (None, split):
        log.warning("%s holds CAMs of split %s, evaluating against %s", cams_dir, recorded, split)
    dataset = build_dataset(cfg.data, split)
    ev = evaluate_seeds(cams_dir, dataset, threshold_grid(*cfg.seeds.thresholds), threshold=threshold, limit=limit,
                        allow_missing=allow_missing, num_workers=cfg.seeds.num_workers, progress=progress)
    out_dir = Path(out) if out is not None else layout.eval_seeds(split)
    metrics = write_seed_report(out_dir, ev, cams_dir=cams_dir, split=split, dataset_name=dataset.name,
                                cams_manifest=manifest)
    if samples > 0:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        with_cams = [i for i in range(n) if cam_path(cams_dir, dataset.ids[i]).is_file()]
        chosen = [with_cams[j] for j in pick_samples(len(with_cams), samples, cfg.seed)]
        write_sample_grid(out_dir / "samples.png", dataset, chosen, cams_dir=cams_dir, threshold=ev.threshold,
                          title=f"seeds, {dataset.name} {split}, t = {ev.threshold:.2f}")
    return SeedsResult(out_dir, split, dataset.name, ev.threshold, ev.selection, metrics)


__all__ = ["SeedsResult", "run"]
