"""Leak rate: how much of a class's co-occurring background a segmentation labels as that class.

For class k with associated background b(k) (the synthetic world knows it; on real data it has to be annotated),
over the images whose label contains k:

    leak(k) = #{pixels: background type b(k), ground truth background, predicted k} / #{pixels: b(k), gt background}

Only ground-truth background pixels count (the object's own pixels are not background), and only images labelled
k (seeds and pseudo masks never predict absent classes). This is the quantity SemPLeS is meant to lower.
"""

from __future__ import annotations

import numpy as np


class LeakRate:
    """Accumulates per-class leak counts over images.

    Args:
        class_background: (K,) background-type id associated with each foreground class (0-based classes).
        ignore_index: ground-truth value to skip.
    """

    def __init__(self, class_background: list[int] | tuple[int, ...] | np.ndarray, ignore_index: int = 255) -> None:
        self.class_background = np.asarray(class_background, dtype=np.int64)
        self.ignore_index = ignore_index
        k = len(self.class_background)
        self.leaked = np.zeros(k, dtype=np.int64)
        self.exposed = np.zeros(k, dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, background_map: np.ndarray, labels: np.ndarray) -> LeakRate:
        """Adds one image.

        Shape: pred, gt, background_map (H, W) (labels 0 = background, k + 1 = class k); labels (K,) multi-hot.
        """
        pred, gt, bmap = np.asarray(pred), np.asarray(gt), np.asarray(background_map)
        if not (pred.shape == gt.shape == bmap.shape):
            raise ValueError(f"shapes differ: prediction {pred.shape}, ground truth {gt.shape}, "
                             f"background map {bmap.shape}")
        gt_background = gt == 0
        for k in np.flatnonzero(np.asarray(labels) > 0.5):
            region = gt_background & (bmap == self.class_background[k])
            n = int(region.sum())
            if n:
                self.exposed[k] += n
                self.leaked[k] += int((region & (pred == k + 1)).sum())
        return self

    def merge(self, other: LeakRate) -> LeakRate:
        self.leaked += other.leaked
        self.exposed += other.exposed
        return self

    def rates(self) -> np.ndarray:
        """(K,) leak rate per class; NaN where the class never met its background."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.exposed > 0, self.leaked / np.maximum(self.exposed, 1), np.nan)

    def mean(self) -> float:
        r = self.rates()
        return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")

    def to_dict(self, class_names: list[str] | tuple[str, ...]) -> dict:
        """JSON-ready: per-class rate (None when undefined) and the mean over classes."""
        rates = self.rates()
        mean = self.mean()
        return {"mean": None if not np.isfinite(mean) else mean,
                "per_class": {name: (None if not np.isfinite(r) else float(r)) for name, r in zip(class_names, rates)},
                "pixels": {name: int(e) for name, e in zip(class_names, self.exposed)}}


class LeakSweep:
    """The leak rate of seeds at every background threshold of a grid, in one pass over the images.

    A pixel of class k's associated background (ground-truth background, image labelled k) leaks at threshold t
    when the seed labels it k: k is its best class and that score exceeds t — `seed_labels`' rule, compared in
    float32 as `ThresholdSweep` does. Also keeps the threshold-free mean CAM of k on those pixels.

    Args:
        class_background: (K,) background-type id associated with each foreground class (0-based classes).
        thresholds: (T,) increasing background scores.
    """

    def __init__(self, class_background, thresholds: np.ndarray) -> None:
        self.class_background = np.asarray(class_background, dtype=np.int64)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self._grid32 = self.thresholds.astype(np.float32)
        k, t = len(self.class_background), len(self.thresholds)
        self.leaked = np.zeros((t, k), dtype=np.int64)
        self.exposed = np.zeros(k, dtype=np.int64)
        self.cam_sum = np.zeros(k, dtype=np.float64)

    def update(self, cams: np.ndarray, classes: np.ndarray, gt: np.ndarray, background_map: np.ndarray,
               labels: np.ndarray) -> LeakSweep:
        """Adds one image. Shape: cams (P, H, W) of the 0-based `classes` (P,); gt, background_map (H, W);
        labels (K,) multi-hot."""
        from semples.metrics.sweep import _best_foreground

        gt, bmap = np.asarray(gt), np.asarray(background_map)
        classes = np.asarray(classes, dtype=np.int64)
        best, label = _best_foreground(cams, classes)
        background = gt == 0
        for k in np.flatnonzero(np.asarray(labels) > 0.5):
            region = background & (bmap == self.class_background[k])
            n = int(region.sum())
            if not n:
                continue
            self.exposed[k] += n
            where = np.flatnonzero(classes == k)
            if where.size:
                self.cam_sum[k] += float(np.asarray(cams[where[0]], dtype=np.float64)[region].sum())
            top = best[region & (label == k + 1)].astype(np.float32)
            below = np.searchsorted(self._grid32, top, side="left")  # thresholds strictly below each score
            hist = np.bincount(below, minlength=len(self.thresholds) + 1)
            self.leaked[:, k] += np.cumsum(hist[::-1])[::-1][1:]  # pixels with more than j thresholds below
        return self

    def merge(self, other: LeakSweep) -> LeakSweep:
        self.leaked += other.leaked
        self.exposed += other.exposed
        self.cam_sum += other.cam_sum
        return self

    def rates(self, index: int) -> np.ndarray:
        """(K,) leak rate at grid point `index`; NaN where a class never met its background."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.exposed > 0, self.leaked[index] / np.maximum(self.exposed, 1), np.nan)

    def to_dict(self, class_names, index: int) -> dict:
        """JSON-ready leak at grid point `index` (as `LeakRate.to_dict`) plus the mean CAM on those pixels and the
        mean leak over the whole grid."""
        rates = self.rates(index)
        with np.errstate(divide="ignore", invalid="ignore"):
            cam = np.where(self.exposed > 0, self.cam_sum / np.maximum(self.exposed, 1), np.nan)
            curve = np.where(self.exposed > 0, self.leaked / np.maximum(self.exposed, 1), np.nan)

        def mean(x):
            return float(np.nanmean(x)) if np.isfinite(x).any() else None

        def value(x):
            return None if not np.isfinite(x) else float(x)

        return {"threshold": float(self.thresholds[index]), "mean": mean(rates),
                "per_class": {n: value(r) for n, r in zip(class_names, rates)},
                "pixels": {n: int(e) for n, e in zip(class_names, self.exposed)},
                "mean_cam": {n: value(c) for n, c in zip(class_names, cam)}, "mean_cam_mean": mean(cam),
                "curve": [mean(row) for row in curve]}
