"""Seed evaluation (step eval-seeds, `semples.steps.seeds`): a CAM folder against a split's ground truth over a grid
of background thresholds.

`evaluate_seeds` streams the CAM files and masks once (threads), accumulating one confusion matrix per threshold
(`semples.metrics.sweep.ThresholdSweep`); `write_seed_report` writes ``metrics.json``, ``metrics.md`` and the curve
``threshold_curve.png`` into an eval folder.

Threshold selection: by default the reported t is the one with the best mIoU *on the evaluated split's own ground
truth*, as in the paper — an oracle choice, and every output says so. ``threshold=`` reports at a t chosen
elsewhere (e.g. on another split); the whole curve is reported either way.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from semples.data.base import DataError, SegmentationDataset
from semples.infer.cam_io import cam_path, load_cam
from semples.metrics.leak import LeakSweep
from semples.metrics.sweep import SweepResult, ThresholdSweep
from semples.utils.checkpoint_io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

FORMAT = "semples-seed-eval"
ORACLE_NOTE = "threshold chosen on this split's ground truth (oracle, as in the paper)"


@dataclass
class SeedEvaluation:
    """A finished sweep and how the reported threshold was picked.

    Attributes:
        result: the whole curve.
        chosen_index: grid index of the reported threshold.
        selection: a sentence on how it was chosen.
        missing: ids of the split without a CAM file (only with allow_missing).
    """

    result: SweepResult
    chosen_index: int
    selection: str
    missing: list[str] = field(default_factory=list)
    leak: dict | None = None  # leak rate at the reported t (datasets that know each pixel's background type)

    @property
    def threshold(self) -> float:
        return float(self.result.thresholds[self.chosen_index])

    @property
    def scores(self):
        return self.result.scores[self.chosen_index]


def evaluate_seeds(cams_dir: str | Path, dataset: SegmentationDataset, thresholds: np.ndarray, *,
                   threshold: float | None = None, limit: int | None = None, allow_missing: bool = False,
                   num_workers: int = 2, progress: bool = True) -> SeedEvaluation:
    """Sweeps the background threshold over `thresholds` for the CAMs of `dataset` in `cams_dir`.

    Args:
        cams_dir: folder of ``<id>.npz`` CAM files.
        dataset: the split, with masks (0 background, 1..K, 255 ignore).
        thresholds: (T,) increasing grid.
        threshold: report at this t (nearest grid point; added to the grid when not on it) instead of the best.
        limit: only the first `limit` images of the split.
        allow_missing: evaluate the images that have a CAM file and list the others (default: error).
        num_workers: reading threads.
        progress: tqdm bar.

    Raises:
        DataError: the split has no masks, CAM files are missing, or a CAM and its mask differ in size.
    """
    from tqdm.auto import tqdm

    cams_dir = Path(cams_dir)
    if not getattr(dataset, "has_masks", False):
        raise DataError(f"{dataset.name}: this split has no ground-truth masks; seed evaluation needs them")
    grid = np.asarray(thresholds, dtype=np.float64)
    if threshold is not None and not np.isclose(grid, threshold, atol=1e-9).any():
        grid = np.unique(np.append(grid, threshold))
    n = len(dataset) if limit is None else min(limit, len(dataset))
    ids = dataset.ids
    present = [i for i in range(n) if cam_path(cams_dir, ids[i]).is_file()]
    missing = [ids[i] for i in range(n) if not cam_path(cams_dir, ids[i]).is_file()]
    if missing and not allow_missing:
        raise DataError(f"{len(missing)} of {n} images of {dataset.name} have no CAM file in {cams_dir} (first: "
                        f"{missing[0]}); run `semples cams` for this split, or pass --allow-missing")
    if not present:
        raise DataError(f"{cams_dir}: no CAM files for {dataset.name}")
    if missing:
        log.warning("%d of %d images have no CAM file; evaluating the other %d", len(missing), n, len(present))

    c = len(dataset.classes) + 1
    # the leak rate needs each pixel's background type and each class's associated background (synthetic world)
    knows_backgrounds = hasattr(dataset, "background_map") and hasattr(dataset, "class_background")
    workers = max(1, min(num_workers, len(present)))
    shards = [present[w::workers] for w in range(workers)]
    bar = tqdm(total=len(present), desc="eval-seeds", unit="img", disable=not progress, dynamic_ncols=True)
    lock = threading.Lock()

    def run(shard: list[int]) -> tuple[ThresholdSweep, LeakSweep | None]:
        sweep = ThresholdSweep(c, grid)
        leak = LeakSweep(dataset.class_background, grid) if knows_backgrounds else None
        for i in shard:
            path = cam_path(cams_dir, ids[i])
            try:
                cams, classes = load_cam(path)
            except (OSError, ValueError, KeyError) as e:
                raise DataError(f"{path}: unreadable CAM file ({type(e).__name__}: {e})") from e
            gt = dataset.load_mask(i)
            if gt is None:
                raise DataError(f"{ids[i]}: no ground-truth mask")
            if cams.shape[1:] != gt.shape:
                raise DataError(f"{path}: CAM is {cams.shape[1]}x{cams.shape[2]}, its mask {gt.shape[0]}x"
                                f"{gt.shape[1]} (CAMs made for another dataset or split?)")
            sweep.update(cams, gt, classes)
            if leak is not None:
                leak.update(cams, classes, gt, dataset.background_map(i), dataset.labels(i))
            with lock:
                bar.update(1)
        return sweep, leak

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-seeds") as pool:
            sweeps = list(pool.map(run, shards))
    finally:
        bar.close()
    total, leaks = sweeps[0]
    for s, lk in sweeps[1:]:
        total.merge(s)
        if leaks is not None:
            leaks.merge(lk)
    result = total.result(["background", *dataset.classes.names])
    if threshold is None:
        index, selection = result.best_index, ORACLE_NOTE
    else:
        index, selection = result.index_of(threshold), f"threshold given ({threshold:g}), not chosen on this split"
    leak = leaks.to_dict(list(dataset.classes.names), index) if leaks is not None else None
    return SeedEvaluation(result, index, selection, missing, leak)


def _mean(x: np.ndarray) -> float | None:
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


def _pct(x: float | None) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def seed_metrics(ev: SeedEvaluation, *, cams_dir: str | Path, split: str, dataset_name: str,
                 cams_manifest: dict | None = None) -> dict:
    """The JSON-ready content of ``metrics.json``."""
    res, s = ev.result, ev.scores
    manifest = cams_manifest or {}
    return {
        "format": FORMAT, "version": 1,
        "what": "seeds (CAMs) with a constant background score t prepended, argmax; IoU over background + K "
                "classes, ground truth 255 ignored",
        "dataset": dataset_name, "split": split,
        "cams_dir": str(cams_dir),
        "cams": {k: manifest[k] for k in ("inputs", "settings", "data") if k in manifest},
        "images": res.images, "missing": len(ev.missing), "missing_ids": ev.missing[:100],
        "threshold": ev.threshold,
        "threshold_selection": ev.selection,
        **s.to_dict(),
        "mean_precision": _mean(s.precision), "mean_recall": _mean(s.recall),
        "best_on_curve": {"threshold": res.best_threshold, "miou": res.best.miou},
        "grid": {"count": int(res.thresholds.size), "start": float(res.thresholds[0]),
                 "stop": float(res.thresholds[-1])},
        "curve": res.curve(),
        **({"leak": ev.leak} if ev.leak is not None else {}),
        "confusion_matrix": s.matrix.tolist(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def seed_markdown(ev: SeedEvaluation, metrics: dict) -> str:
    """The content of ``metrics.md``: summary, per-class table at the reported t, the whole curve."""
    s = ev.scores
    gen = metrics.get("cams", {}).get("generator", {})
    settings = metrics.get("cams", {}).get("settings", {})
    source = gen.get("path") or ("random weights" if "fresh" in gen else "unknown generator")
    lines = [
        f"# Seed evaluation: {metrics['dataset']} {metrics['split']}",
        "",
        f"- CAMs: `{metrics['cams_dir']}` — generator `{source}`"
        + (f" (sha256 {gen['sha256'][:12]})" if gen.get("sha256") else "")
        + (f", scales {settings.get('scales')}, flip {settings.get('flip')}" if settings else ""),
        f"- images: {metrics['images']}" + (f" ({metrics['missing']} without a CAM file left out)"
                                             if metrics["missing"] else ""),
        f"- **mIoU {_pct(s.miou)} at background threshold t = {ev.threshold:.2f}** — {ev.selection}",
        f"- background false-positive rate {_pct(s.bg_false_positive_rate)}%, mean precision "
        f"{_pct(metrics['mean_precision'])}, mean recall {_pct(metrics['mean_recall'])}",
        f"- best on the curve: t = {ev.result.best_threshold:.2f}, mIoU {_pct(ev.result.best.miou)} "
        f"(grid {metrics['grid']['start']:.2f}..{metrics['grid']['stop']:.2f}, {metrics['grid']['count']} points)",
    ]
    if ev.leak is not None:
        per = ", ".join(f"{n} {_pct(v)}" for n, v in ev.leak["per_class"].items())
        lines.append(f"- leak rate at t = {ev.threshold:.2f} (share of each class's associated-background pixels "
                     f"labelled as the class): mean {_pct(ev.leak['mean'])}% — {per}")
    lines += [
        "",
        s.markdown(f"Per class at t = {ev.threshold:.2f} (%)").rstrip(),
        "",
        "### Threshold curve (%)",
        "",
        "![threshold curve](threshold_curve.png)",
        "",
        "| t | mIoU | mean precision | mean recall | bg false-positive rate |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in metrics["curve"]:
        mark = " ◀" if abs(row["threshold"] - ev.threshold) < 1e-9 else ""
        lines.append(f"| {row['threshold']:.2f}{mark} | {_pct(row['miou'])} | {_pct(row['mean_precision'])} | "
                     f"{_pct(row['mean_recall'])} | {_pct(row['bg_false_positive_rate'])} |")
    return "\n".join(lines) + "\n"


def write_seed_report(out_dir: str | Path, ev: SeedEvaluation, *, cams_dir: str | Path, split: str,
                      dataset_name: str, cams_manifest: dict | None = None) -> dict:
    """Writes metrics.json, metrics.md and threshold_curve.png into `out_dir` (atomically); returns the metrics."""
    from semples.report.figures import plot_threshold_curve

    out_dir = Path(out_dir)
    metrics = seed_metrics(ev, cams_dir=cams_dir, split=split, dataset_name=dataset_name,
                           cams_manifest=cams_manifest)
    curve = metrics["curve"]
    plot_threshold_curve(out_dir / "threshold_curve.png", [r["threshold"] for r in curve],
                         [r["miou"] for r in curve], chosen=ev.threshold,
                         bg_false_positive_rate=[r["bg_false_positive_rate"] for r in curve],
                         title=f"seeds: {dataset_name} {split} ({metrics['images']} images)", note=ev.selection)
    atomic_write_text(out_dir / "metrics.md", seed_markdown(ev, metrics))
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


__all__ = ["ORACLE_NOTE", "SeedEvaluation", "evaluate_seeds", "seed_markdown", "seed_metrics", "write_seed_report"]
