"""Region voting (SAMS, METHOD.md §2): CAM scores are pooled over class-agnostic regions, each region gets one label.

For the N regions of an image (SAM masks or superpixels, `semples.models.regions`) and the CAMs of the P classes
present in the image label:

1. ``mean[n, c]``: the mean CAM score of class c inside region n;
2. min-max per class across regions: ``norm[:, c] = (mean[:, c] - min) / (max - min)``
   (a class whose means are all equal, e.g. a single region, keeps its raw means, which lie in [0, 1]);
3. background score ``bg[n] = (1 - max_c norm[n, c]) ** bg_power`` (FMA-WSSS: 0.6 coarse seeds, 0.7 fine);
4. label = argmax over (bg, norm_1..P); confidence = the winning score;
5. paint the regions in a fixed order, later regions over earlier ones; pixels in no region are background.

Painting order (``order`` argument; regions that come first are overwritten by later ones where they overlap):

- ``order="area"`` (default) sorts by area ascending, ties by confidence ascending: parts before wholes, so a
  whole object wins over its own parts — METHOD.md's "small/low-confidence to whole/high-confidence".
  ``order="confidence"`` sorts by confidence, ties by area; ``order="area_x_confidence"`` by area × confidence,
  ties by area. Remaining ties keep the source's region order (stable sort).
- ``background_first=False`` (default, METHOD.md's order): one sort over all regions, whatever their vote.
  ``background_first=True`` (the default of semples before; ``pseudo.region_vote.background_first``): all
  regions voted background are painted before all foreground regions, each group in the order above. Uncovered
  pixels are background anyway, so a background region only matters where it overlaps a foreground region; with
  it, SAM's largest masks (the whole image, "stuff" around objects) can never erase the objects inside them.
  The two orders give the same labels wherever no background-voted region overlaps a foreground-voted one
  (docs/fma.md).

For a partition (superpixels) regions never overlap, so the order does not change the result.

Pure numpy; pooling is one bincount per class for partitions and a chunked matrix product for masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from semples.models.regions import Regions

PaintOrder = Literal["area", "confidence", "area_x_confidence"]
PAINT_ORDERS: tuple[str, ...] = ("area", "confidence", "area_x_confidence")

_CHUNK_PIXELS = 1 << 22  # masks × pixels per block of the pooling product (bounds the float copy to 16 MB)


@dataclass
class RegionVote:
    """The result of `region_vote` for one image (P present classes, N regions).

    Attributes:
        labels: (H, W) int64: 0 = background, p + 1 = the class of ``cams[p]``.
        region_scores: (N, P + 1) float32: column 0 the background score, then the normalised class scores
            (NaN rows for empty regions).
        region_labels: (N,) int64 voted label per region (same coding as `labels`; -1 for empty regions).
        paint_order: (M,) indices of the non-empty regions in painting order (last = on top).
        top: (H, W) float32 score of the painted label per pixel (1 where uncovered).
        second: (H, W) float32 runner-up score of the painted region (0 where uncovered).
        covered: (H, W) bool, pixels inside at least one region.
    """

    labels: np.ndarray
    region_scores: np.ndarray
    region_labels: np.ndarray
    paint_order: np.ndarray
    top: np.ndarray
    second: np.ndarray
    covered: np.ndarray


def region_means(cams: np.ndarray, regions: Regions) -> tuple[np.ndarray, np.ndarray]:
    """Mean CAM score per region and class.

    Args:
        cams: (P, H, W) float CAMs.
        regions: N regions of the same (H, W).

    Returns:
        means (N, P) float32 (NaN for empty regions) and areas (N,) int64.
    """
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim != 3 or cams.shape[1:] != regions.shape:
        raise ValueError(f"cams must be (P, H, W) with (H, W) = {regions.shape}, got {cams.shape}")
    p, n = cams.shape[0], regions.num_regions
    flat_cams = cams.reshape(p, cams.shape[1] * cams.shape[2])
    sums = np.zeros((n, p), dtype=np.float64)
    if regions.is_partition:
        part = regions.partition.ravel()
        keep = part >= 0
        idx = part[keep]
        areas = np.bincount(idx, minlength=n).astype(np.int64)
        for c in range(p):
            sums[:, c] = np.bincount(idx, weights=flat_cams[c, keep], minlength=n)
    else:
        masks = regions.masks.reshape(n, flat_cams.shape[1])
        areas = masks.sum(1).astype(np.int64)
        step = max(1, _CHUNK_PIXELS // max(masks.shape[1], 1))
        for i in range(0, n, step):
            sums[i:i + step] = masks[i:i + step].astype(np.float32) @ flat_cams.T
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / areas[:, None]).astype(np.float32)
    means[areas == 0] = np.nan
    return means, areas


def vote_scores(means: np.ndarray, bg_power: float = 0.7, eps: float = 1e-6) -> np.ndarray:
    """Region means -> (N, P + 1) scores: background (1 - max)^p, then per-class min-max normalised means.

    Args:
        means: (N, P) mean CAM per region and class (NaN rows = empty regions, left out of min/max and NaN out).
        bg_power: exponent p of the background score.
        eps: classes whose max - min across regions is at most eps keep their raw means.
    """
    means = np.asarray(means, dtype=np.float32)
    n, p = means.shape
    valid = ~np.isnan(means).any(1) if p else np.ones(n, bool)
    norm = np.full((n, p), np.nan, dtype=np.float32)
    if valid.any() and p:
        m = means[valid]
        lo, hi = m.min(0), m.max(0)
        span = hi - lo
        flat = span <= eps
        norm[valid] = np.where(flat, m, (m - lo) / np.where(flat, 1.0, span))
    scores = np.full((n, p + 1), np.nan, dtype=np.float32)
    scores[valid, 1:] = np.clip(norm[valid], 0.0, 1.0)
    fg_max = scores[valid, 1:].max(1) if p else np.zeros(int(valid.sum()), np.float32)
    scores[valid, 0] = np.power(np.clip(1.0 - fg_max, 0.0, 1.0), bg_power)
    return scores


def paint_order(region_labels: np.ndarray, confidence: np.ndarray, areas: np.ndarray, order: PaintOrder = "area",
                background_first: bool = False) -> np.ndarray:
    """Indices of the non-empty regions in painting order (see the module docstring for the rule).

    Args:
        region_labels: (N,) voted label (0 = background, -1 = empty region: left out).
        confidence: (N,) winning score.
        areas: (N,) pixels per region.
        order: "area" | "confidence" | "area_x_confidence".
        background_first: paint all background regions before all foreground regions (default: one order).
    """
    if order not in PAINT_ORDERS:
        raise ValueError(f"unknown paint order {order!r}; valid: {', '.join(PAINT_ORDERS)}")
    idx = np.flatnonzero(region_labels >= 0)
    area = areas[idx].astype(np.float64)
    conf = confidence[idx].astype(np.float64)
    if order == "area":
        primary, secondary = area, conf
    elif order == "confidence":
        primary, secondary = conf, area
    else:
        primary, secondary = area * conf, area
    group = (region_labels[idx] > 0).astype(np.int8) if background_first else np.zeros(idx.size, np.int8)
    # np.lexsort: last key is the primary one; it is stable, so full ties keep the source's order
    return idx[np.lexsort((secondary, primary, group))]


def region_vote(cams: np.ndarray, regions: Regions, *, bg_power: float = 0.7, order: PaintOrder = "area",
                background_first: bool = False) -> RegionVote:
    """SAMS region voting for one image.

    Args:
        cams: (P, H, W) CAMs in [0, 1] of the classes present in the image label (P may be 0).
        regions: class-agnostic regions of the image (partition or masks), (H, W) as the CAMs.
        bg_power: exponent p of the background score (1 - max)^p; 0.6 coarse / 0.7 fine in FMA-WSSS.
        order: painting order key, see the module docstring.
        background_first: paint background regions before foreground regions.

    Returns:
        `RegionVote` with (H, W) labels (0 = background, p + 1 = class of cams[p]).
    """
    cams = np.asarray(cams, dtype=np.float32)
    h, w = regions.shape
    means, areas = region_means(cams, regions)
    scores = vote_scores(means, bg_power)
    n = regions.num_regions
    valid = (areas > 0) & ~np.isnan(scores).any(1)
    region_labels = np.full(n, -1, dtype=np.int64)
    confidence = np.zeros(n, dtype=np.float32)
    runner_up = np.zeros(n, dtype=np.float32)
    if valid.any():
        s = scores[valid]
        region_labels[valid] = s.argmax(1)
        srt = np.sort(s, axis=1)
        confidence[valid] = srt[:, -1]
        runner_up[valid] = srt[:, -2] if s.shape[1] > 1 else 0.0
    order_idx = paint_order(region_labels, confidence, areas, order, background_first)

    # winner[pixel] = index of the region painted last over it (-1 = uncovered)
    if regions.is_partition:
        winner = regions.partition.astype(np.int64)  # disjoint regions: the order cannot matter
    else:
        winner = np.full((h, w), -1, dtype=np.int64)
        for r in order_idx:
            winner[regions.masks[r]] = r
    covered = winner >= 0
    labels = np.zeros((h, w), dtype=np.int64)
    top = np.ones((h, w), dtype=np.float32)
    second = np.zeros((h, w), dtype=np.float32)
    labels[covered] = region_labels[winner[covered]]
    top[covered] = confidence[winner[covered]]
    second[covered] = runner_up[winner[covered]]
    return RegionVote(labels=labels, region_scores=scores, region_labels=region_labels, paint_order=order_idx,
                      top=top, second=second, covered=covered)


__all__ = ["PAINT_ORDERS", "RegionVote", "paint_order", "region_means", "region_vote", "vote_scores"]
