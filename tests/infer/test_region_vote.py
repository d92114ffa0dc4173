"""SAMS region voting: pooled scores by hand, the painting order, and a better mask than the noisy seed."""

from __future__ import annotations

import numpy as np
import pytest

from semples.infer.region_vote import paint_order, region_means, region_vote, vote_scores
from semples.metrics import ConfusionMatrix
from semples.models.regions import Regions


def box(shape, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_region_means_partition_equals_masks():
    rng = np.random.default_rng(0)
    part = rng.integers(0, 5, (20, 30))
    part[0, 0] = -1  # uncovered pixel
    cams = rng.random((2, 20, 30)).astype(np.float32)
    a, areas_a = region_means(cams, Regions.from_partition(part))
    masks = np.stack([part == i for i in range(5)])
    b, areas_b = region_means(cams, Regions.from_masks(masks))
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_array_equal(areas_a, areas_b)
    np.testing.assert_allclose(a[3, 1], cams[1][part == 3].mean(), rtol=1e-5)


def test_vote_scores_by_hand():
    means = np.array([[0.8, 0.1], [0.4, 0.5], [0.2, 0.3]], np.float32)
    s = vote_scores(means, bg_power=0.5)
    # min-max per class across regions: class 0 (0.8, 0.4, 0.2) -> (1, 1/3, 0); class 1 (0.1, 0.5, 0.3) -> (0, 1, .5)
    np.testing.assert_allclose(s[:, 1], [1, 1 / 3, 0], atol=1e-6)
    np.testing.assert_allclose(s[:, 2], [0, 1, 0.5], atol=1e-6)
    np.testing.assert_allclose(s[:, 0], [0.0, 0.0, np.sqrt(0.5)], atol=1e-6)
    assert list(s.argmax(1)) == [1, 2, 0]


def test_a_class_without_spread_keeps_its_raw_means():
    s = vote_scores(np.array([[0.6]], np.float32), bg_power=0.7)  # one region: min == max
    np.testing.assert_allclose(s[0], [0.4 ** 0.7, 0.6], rtol=1e-6)
    empty = vote_scores(np.array([[np.nan], [0.2], [0.9]], np.float32))
    assert np.isnan(empty[0]).all() and empty[2, 1] == pytest.approx(1.0)


def whole_and_parts():
    """A 40x40 image: cat object = box W (rows 10..30, cols 10..30); CAM high on W, higher on its head A."""
    shape = (40, 40)
    whole = box(shape, 10, 30, 10, 30)  # the whole object, 400 px
    leg = box(shape, 24, 30, 10, 14)  # a part of it with a low CAM (voted background on its own), 24 px
    head = box(shape, 10, 16, 20, 30)  # a high-CAM part, 60 px
    image = np.ones(shape, bool)  # SAM-style whole-image mask
    cam = np.zeros(shape, np.float32)
    cam[whole] = 0.7
    cam[leg] = 0.05
    cam[head] = 1.0
    return cam[None], Regions.from_masks([image, head, whole, leg])


def test_default_is_methods_order_small_to_whole_whatever_the_vote():
    from semples.infer.config import RegionVoteConfig

    assert RegionVoteConfig().background_first is False
    cams, regions = whole_and_parts()
    vote = region_vote(cams, regions, bg_power=0.7)
    image_r, head_r, whole_r, leg_r = 0, 1, 2, 3
    assert vote.region_labels[whole_r] == 1 and vote.region_labels[head_r] == 1
    assert vote.region_labels[leg_r] == 0 and vote.region_labels[image_r] == 0
    # one order by area: leg (24 px) < head (60) < whole object (400) < whole image (1600)
    assert list(vote.paint_order) == [leg_r, head_r, whole_r, image_r]
    # the whole object still wins over its background-voted leg, but a background-voted whole-image mask,
    # painted last, erases it: the case background_first exists for
    assert (vote.labels == 0).all() and vote.covered.all()


def test_background_first_keeps_objects_over_background_regions():
    cams, regions = whole_and_parts()
    vote = region_vote(cams, regions, bg_power=0.7, background_first=True)
    image_r, head_r, whole_r, leg_r = 0, 1, 2, 3
    # background regions first (small to large), then foreground regions from the part to the whole
    assert list(vote.paint_order) == [leg_r, image_r, head_r, whole_r]
    whole = regions.masks[whole_r]
    assert (vote.labels[whole] == 1).all()  # the whole object wins over its background-voted leg
    assert (vote.labels[~whole] == 0).all()


def test_the_two_orders_agree_where_no_background_region_overlaps_an_object():
    cams, regions = whole_and_parts()
    head_r, whole_r, leg_r = 1, 2, 3
    sub = Regions.from_masks(regions.masks[[head_r, whole_r, leg_r]])  # no whole-image mask: the background-voted
    a, b = region_vote(cams, sub), region_vote(cams, sub, background_first=True)  # leg lies under its object
    assert list(a.region_labels) == [1, 1, 0] and np.array_equal(a.labels, b.labels)
    rng = np.random.default_rng(0)  # a partition: no overlaps at all
    part = Regions.from_partition(rng.integers(0, 6, (20, 30)))
    noisy = rng.random((2, 20, 30)).astype(np.float32)
    assert np.array_equal(region_vote(noisy, part).labels, region_vote(noisy, part, background_first=True).labels)


def test_equal_areas_paint_the_more_confident_region_last():
    shape = (20, 20)
    a, b = box(shape, 0, 10, 0, 10), box(shape, 5, 15, 5, 15)  # equal areas, overlapping
    cams = np.zeros((2, *shape), np.float32)
    cams[0][a] = 0.9  # class 0 on a, class 1 on b (more confident)
    cams[1][b] = 1.0
    cams[0][box(shape, 15, 20, 15, 20)] = 0.2  # a third region keeps the min-max spread honest
    regions = Regions.from_masks([a, b, box(shape, 15, 20, 15, 20)])
    vote = region_vote(cams, regions)
    overlap = a & b
    assert (vote.labels[overlap] == 2).all()  # b (class index 1 -> label 2) painted last
    vote_c = region_vote(cams[::-1].copy(), regions)  # swap classes: still the more confident region wins
    assert (vote_c.labels[overlap] == 1).all()


def test_paint_order_keys():
    labels = np.array([1, 1, 0, -1])
    conf = np.array([0.9, 0.5, 0.99, 0.1])
    areas = np.array([10, 100, 1000, 0])
    assert list(paint_order(labels, conf, areas, "area", background_first=True)) == [2, 0, 1]
    assert list(paint_order(labels, conf, areas, "confidence", background_first=True)) == [2, 1, 0]
    assert list(paint_order(labels, conf, areas, "area_x_confidence", background_first=True)) == [2, 0, 1]
    assert list(paint_order(labels, conf, areas, "area")) == [0, 1, 2]
    assert list(paint_order(labels, conf, areas, "confidence")) == [1, 0, 2]
    assert list(paint_order(labels, conf, areas, "area_x_confidence")) == [0, 1, 2]
    with pytest.raises(ValueError, match="paint order"):
        paint_order(labels, conf, areas, "size")


def test_uncovered_pixels_are_background_and_no_classes_is_all_background():
    shape = (10, 12)
    cams = np.zeros((1, *shape), np.float32)
    cams[0, :5] = 1.0
    regions = Regions.from_masks([box(shape, 0, 5, 0, 6), box(shape, 5, 10, 0, 6)])
    vote = region_vote(cams, regions)
    assert (vote.labels[:5, :6] == 1).all() and (vote.labels[:, 6:] == 0).all()
    assert not vote.covered[:, 6:].any() and (vote.top[:, 6:] == 1).all()
    none = region_vote(np.zeros((0, *shape), np.float32), regions)
    assert (none.labels == 0).all()
    part = np.full(shape, -1)
    part[:, :4] = 2  # regions 0 and 1 are empty
    vote = region_vote(cams, Regions.from_partition(part))
    assert list(vote.region_labels[:2]) == [-1, -1] and list(vote.paint_order) == [2]


def test_region_voting_improves_a_noisy_seed():
    ndimage = pytest.importorskip("scipy.ndimage")
    pytest.importorskip("skimage")
    from semples.models.regions import SuperpixelConfig, SuperpixelRegions

    rng = np.random.default_rng(0)
    h, w = 96, 128
    yy, xx = np.mgrid[:h, :w]
    gt = np.zeros((h, w), np.uint8)
    gt[((yy - 40) / 22.0) ** 2 + ((xx - 40) / 28.0) ** 2 <= 1] = 1
    gt[50:85, 80:118] = 2
    img = np.full((h, w, 3), 110.0) + rng.normal(0, 5, (h, w, 3))
    img[gt == 1] = (210, 50, 40)
    img[gt == 2] = (40, 60, 200)
    img = img.clip(0, 255).astype(np.uint8)
    cams = []
    for k in (1, 2):
        m = ndimage.gaussian_filter((gt == k).astype(np.float32), 8) + 0.3 * rng.random((h, w), dtype=np.float32)
        cams.append((m - m.min()) / (m.max() - m.min()))
    cams = np.stack(cams)
    seed = np.concatenate([np.full((1, h, w), 0.45, np.float32), cams]).argmax(0)
    for method in ("slic", "felzenszwalb"):
        regions = SuperpixelRegions(SuperpixelConfig(method=method, n_segments=60, scale=100, min_size=30))(img)
        voted = region_vote(cams, regions).labels
        before = ConfusionMatrix(3).update(seed, gt).scores().miou
        after = ConfusionMatrix(3).update(voted, gt).scores().miou
        assert after > before + 0.05, (method, before, after)
