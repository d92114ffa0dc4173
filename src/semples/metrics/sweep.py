"""Background-threshold sweep for seed (CAM) evaluation: one confusion matrix per threshold, one pass over the data.

Seeds become labels by prepending a constant background score t to the foreground maps and taking the argmax
(METHOD.md §1.7). For a pixel with best foreground score m at class c (ties: the lowest class, as argmax does),

    label(t) = c   if m > t          (a tie m == t goes to background, which comes first in the argmax)
               0   otherwise

so the prediction of a pixel over the whole grid is fixed by a single number: how many thresholds lie below m.
`ThresholdSweep.update` bins every pixel by (that count, ground truth, c) with one `bincount`; `matrices()` turns
the bins into the (T, C, C) confusion matrices with two cumulative sums. Cost per image: O(pixels + T·C²), whatever
the number of thresholds.

The accumulator merges across shards and processes like `ConfusionMatrix`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from semples.metrics.confusion import IGNORE_INDEX, ConfusionMatrix, SegmentationScores


def threshold_grid(start: float, stop: float, step: float) -> np.ndarray:
    """Thresholds start, start + step, ..., stop (stop included when on the grid), rounded to 1e-9.

    >>> threshold_grid(0.0, 0.95, 0.01).shape
    (96,)
    """
    if step <= 0 or stop < start:
        raise ValueError(f"need step > 0 and stop >= start, got ({start}, {stop}, {step})")
    n = int(math.floor((stop - start) / step + 1e-6)) + 1
    return np.round(start + step * np.arange(n), 9)


def seed_labels(cams: np.ndarray, threshold: float, classes: np.ndarray | None = None) -> np.ndarray:
    """Labels of a seed at background score `threshold`: argmax over [t, cams] (0 = background, k + 1 = class k).

    Args:
        cams: (P, H, W) foreground scores; dense (K, H, W) when `classes` is None.
        threshold: the background score t.
        classes: (P,) 0-based class index of each map, or None for dense maps.

    Returns:
        (H, W) int64 labels.
    """
    best, label = _best_foreground(cams, classes)
    return np.where(best.astype(np.float32) > np.float32(threshold), label, 0)


def _best_foreground(cams: np.ndarray, classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(max score (H, W), its label 1..K (H, W)); zeros and label 0 where there is no map."""
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise ValueError(f"cams must be (P, H, W), got shape {cams.shape}")
    if cams.shape[0] == 0:
        z = np.zeros(cams.shape[1:], dtype=np.float32)
        return z, np.zeros(cams.shape[1:], dtype=np.int64)
    idx = cams.argmax(0)
    best = np.take_along_axis(cams, idx[None], 0)[0]
    lut = (np.arange(cams.shape[0]) if classes is None else np.asarray(classes, dtype=np.int64)) + 1
    return best, lut[idx]


class ThresholdSweep:
    """Confusion matrices of seed labels for every background threshold of a grid, accumulated image by image.

    Args:
        num_classes: C = K + 1 (background + foreground classes).
        thresholds: (T,) increasing background scores.
        ignore_index: ground-truth value that is not counted.
    """

    def __init__(self, num_classes: int, thresholds: np.ndarray | list[float],
                 ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = int(num_classes)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        if self.thresholds.ndim != 1 or self.thresholds.size == 0 or np.any(np.diff(self.thresholds) <= 0):
            raise ValueError("thresholds must be a non-empty increasing 1-D grid")
        self._grid32 = self.thresholds.astype(np.float32)
        if np.any(np.diff(self._grid32) <= 0):
            raise ValueError("thresholds must stay distinct in float32")
        self.ignore_index = ignore_index
        # bins[n, g, c]: pixels with ground truth g whose best foreground class c wins at the n lowest thresholds
        self.bins = np.zeros((self.thresholds.size + 1, self.num_classes, self.num_classes), dtype=np.int64)
        self.images = 0

    def update(self, cams: np.ndarray, gt: np.ndarray, classes: np.ndarray | None = None) -> ThresholdSweep:
        """Adds one image.

        Args:
            cams: (P, H, W) foreground scores of the classes in `classes`, or dense (K, H, W) when `classes` is None.
            gt: (H, W) integer ground truth, 0 = background, 1..K classes, `ignore_index` skipped.
            classes: (P,) 0-based foreground class of each map.
        """
        gt = np.asarray(gt).astype(np.int64, copy=False)
        if tuple(np.shape(cams)[1:]) != gt.shape:
            raise ValueError(f"seed is {tuple(np.shape(cams)[1:])}, ground truth {gt.shape}")
        best, label = _best_foreground(cams, classes)
        if label.size and label.max(initial=0) >= self.num_classes:
            raise ValueError(f"seed holds class {int(label.max())}, the sweep has {self.num_classes} labels")
        keep = (gt != self.ignore_index) & (gt >= 0) & (gt < self.num_classes)
        # compared in float32, as argmax over a float32 stack [t, cams] would (t = 0.55 ties a float32 0.55)
        below = np.searchsorted(self._grid32, best[keep].astype(np.float32), side="left")  # thresholds < m
        c = self.num_classes
        flat = (below * c + gt[keep]) * c + label[keep]
        self.bins += np.bincount(flat, minlength=self.bins.size).reshape(self.bins.shape)
        self.images += 1
        return self

    def merge(self, other: ThresholdSweep) -> ThresholdSweep:
        """Adds another sweep over the same grid (another shard or process)."""
        if other.bins.shape != self.bins.shape or not np.array_equal(other.thresholds, self.thresholds):
            raise ValueError("cannot merge sweeps over different grids or class counts")
        self.bins += other.bins
        self.images += other.images
        return self

    def reduce_across_processes(self) -> ThresholdSweep:
        """Sums the bins over all torch.distributed processes (no-op when not distributed)."""
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            t = torch.from_numpy(np.append(self.bins.ravel(), self.images))
            dist.all_reduce(t)
            self.bins = t[:-1].numpy().reshape(self.bins.shape)
            self.images = int(t[-1])
        return self

    def matrices(self) -> np.ndarray:
        """(T, C, C) confusion matrices (rows ground truth, columns prediction), one per threshold."""
        t = self.thresholds.size
        # threshold j: pixels with more than j thresholds below their score keep their class ...
        from_top = np.cumsum(self.bins[::-1], axis=0)[::-1]  # from_top[n] = sum over n' >= n
        out = from_top[1: t + 1].copy()
        # ... the others are background
        background = np.cumsum(self.bins.sum(axis=2), axis=0)[:t]  # (T, C): per ground-truth class
        out[:, :, 0] += background
        return out

    def confusion(self, index: int) -> ConfusionMatrix:
        """The `ConfusionMatrix` at threshold number `index`."""
        cm = ConfusionMatrix(self.num_classes, self.ignore_index)
        cm.matrix = self.matrices()[index]
        return cm

    def result(self, class_names: list[str] | None = None) -> SweepResult:
        """Scores at every threshold and the best one (highest mIoU; the lowest t on ties)."""
        scores = [SegmentationScores.from_matrix(m, class_names) for m in self.matrices()]
        miou = np.array([s.miou for s in scores], dtype=np.float64)
        best = int(np.nanargmax(miou)) if np.isfinite(miou).any() else 0
        return SweepResult(thresholds=self.thresholds.copy(), scores=scores, best_index=best, images=self.images)


@dataclass
class SweepResult:
    """The whole threshold curve.

    Attributes:
        thresholds: (T,) the grid.
        scores: T `SegmentationScores`, one per threshold.
        best_index: the threshold with the highest mIoU.
        images: images accumulated.
    """

    thresholds: np.ndarray
    scores: list[SegmentationScores]
    best_index: int
    images: int

    @property
    def best_threshold(self) -> float:
        return float(self.thresholds[self.best_index])

    @property
    def best(self) -> SegmentationScores:
        return self.scores[self.best_index]

    def index_of(self, threshold: float) -> int:
        """Index of the grid point nearest to `threshold`."""
        return int(np.argmin(np.abs(self.thresholds - threshold)))

    def curve(self) -> list[dict]:
        """One JSON-ready row per threshold: t, mIoU, mean precision/recall, pixel accuracy, background FPR."""
        def clean(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        rows = []
        for t, s in zip(self.thresholds, self.scores):
            with np.errstate(all="ignore"):
                prec, rec = s.mean_precision, s.mean_recall  # over the mIoU's classes (metrics.confusion)
            rows.append({"threshold": float(t), "miou": clean(s.miou), "mean_precision": clean(prec),
                         "mean_recall": clean(rec), "pixel_accuracy": clean(s.pixel_accuracy),
                         "bg_false_positive_rate": clean(s.bg_false_positive_rate)})
        return rows


__all__ = ["SweepResult", "ThresholdSweep", "seed_labels", "threshold_grid"]
