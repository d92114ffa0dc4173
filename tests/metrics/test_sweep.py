"""mIoU from hand-built confusion matrices, and the background-threshold sweep against a per-threshold brute force."""

from __future__ import annotations

import numpy as np
import pytest

from semples.metrics.confusion import ConfusionMatrix
from semples.metrics.sweep import ThresholdSweep, seed_labels, threshold_grid

# ---------------------------------------------------------------------------------------------- confusion matrix


def test_miou_from_a_hand_built_case_with_ignore_and_an_absent_class():
    # 4 labels: 0 background, 1, 2, 3 (class 3 absent from ground truth and prediction)
    gt = np.array([[0, 0, 1, 1],
                   [0, 255, 1, 2],
                   [2, 2, 255, 0]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 2, 1, 2],
                     [2, 0, 3, 0]])  # the two ignore pixels are not counted, whatever their prediction
    cm = ConfusionMatrix(4).update(pred, gt)
    expected = np.array([[3, 1, 0, 0],
                         [0, 3, 0, 0],
                         [1, 0, 2, 0],
                         [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm.matrix, expected)
    s = cm.scores(["bg", "a", "b", "c"])
    # IoU = tp / (gt + pred - tp): bg 3/(4+4-3)=0.6, a 3/(3+4-3)=0.75, b 2/(3+2-2)=2/3, c absent -> NaN
    np.testing.assert_allclose(s.iou[:3], [0.6, 0.75, 2 / 3])
    assert np.isnan(s.iou[3])
    assert s.miou == pytest.approx((0.6 + 0.75 + 2 / 3) / 3)
    np.testing.assert_allclose(s.precision[:3], [3 / 4, 3 / 4, 1.0])
    np.testing.assert_allclose(s.recall[:3], [3 / 4, 1.0, 2 / 3])
    assert s.bg_false_positive_rate == pytest.approx(1 / 4)
    assert s.pixel_accuracy == pytest.approx(8 / 10)


def test_a_class_only_in_the_prediction_counts_with_iou_zero():
    cm = ConfusionMatrix(3).update(np.array([0, 2, 2]), np.array([0, 0, 0]))
    s = cm.scores()
    assert s.iou[2] == 0.0 and np.isnan(s.iou[1])
    assert s.miou == pytest.approx((1 / 3 + 0.0) / 2)


def test_confusion_matrices_merge_like_one_pass():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 4, (5, 6)) for _ in range(4)]
    preds = [rng.integers(0, 4, (5, 6)) for _ in range(4)]
    whole = ConfusionMatrix(4)
    for p, g in zip(preds, gts):
        whole.update(p, g)
    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    for p, g in zip(preds[:2], gts[:2]):
        a.update(p, g)
    for p, g in zip(preds[2:], gts[2:]):
        b.update(p, g)
    np.testing.assert_array_equal(a.merge(b).matrix, whole.matrix)


# ---------------------------------------------------------------------------------------------- sweep


def test_threshold_grid_includes_both_ends():
    t = threshold_grid(0.0, 0.95, 0.01)
    assert t.size == 96 and t[0] == 0.0 and t[-1] == 0.95 and t[37] == 0.37
    assert threshold_grid(0.2, 0.2, 0.05).tolist() == [0.2]
    with pytest.raises(ValueError):
        threshold_grid(0.5, 0.1, 0.01)


def test_seed_labels_break_ties_towards_background_and_lower_classes():
    cams = np.array([[[0.5, 0.7, 0.2]], [[0.5, 0.7, 0.9]]], dtype=np.float32)  # (P=2, 1, 3)
    classes = np.array([4, 1])
    # pixel 0: equal scores -> first map (class 4 -> label 5); at t = 0.5 background wins the tie
    assert seed_labels(cams, 0.4, classes).tolist() == [[5, 5, 2]]
    assert seed_labels(cams, 0.5, classes).tolist() == [[0, 5, 2]]
    assert seed_labels(cams[:0], 0.0).tolist() == [[0, 0, 0]]


def _random_case(seed: int, k: int = 4):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(5, 12), rng.integers(5, 12)
    gt = rng.integers(0, k + 1, (h, w))
    gt[rng.random((h, w)) < 0.1] = 255
    present = np.flatnonzero(rng.random(k) < 0.6)
    # float16 round-trip like the files, with exact grid values sprinkled in to exercise ties
    cams = rng.random((len(present), h, w)).astype(np.float16).astype(np.float32)
    cams[rng.random(cams.shape) < 0.1] = 0.5
    return cams, present, gt


def test_sweep_matches_a_brute_force_confusion_matrix_at_every_threshold():
    k = 4
    grid = threshold_grid(0.0, 0.95, 0.05)
    cases = [_random_case(s, k) for s in range(6)]
    cases.append((np.zeros((0, 6, 7), np.float32), np.zeros(0, np.int64), np.ones((6, 7), np.int64)))  # no labels
    sweep = ThresholdSweep(k + 1, grid)
    for cams, classes, gt in cases:
        sweep.update(cams, gt, classes)
    mats = sweep.matrices()
    for j, t in enumerate(grid):
        cm = ConfusionMatrix(k + 1)
        for cams, classes, gt in cases:
            dense = np.zeros((k, *gt.shape), np.float32)
            dense[classes] = cams
            pred = np.concatenate([np.full((1, *gt.shape), t, np.float32), dense]).argmax(0)  # the definition
            cm.update(pred, gt)
        np.testing.assert_array_equal(mats[j], cm.matrix, err_msg=f"threshold {t}")
    assert sweep.images == len(cases)


def test_sweeps_merge_like_one_pass_and_refuse_other_grids():
    grid = threshold_grid(0.0, 0.9, 0.1)
    cases = [_random_case(s) for s in range(4)]
    whole, a, b = (ThresholdSweep(5, grid) for _ in range(3))
    for n, (cams, classes, gt) in enumerate(cases):
        whole.update(cams, gt, classes)
        (a if n % 2 else b).update(cams, gt, classes)
    np.testing.assert_array_equal(a.merge(b).matrices(), whole.matrices())
    with pytest.raises(ValueError):
        whole.merge(ThresholdSweep(5, threshold_grid(0.0, 0.5, 0.1)))


def test_sweep_picks_the_right_threshold_on_a_constructed_case():
    # one 10x10 image: object (class 2) scored 0.6, background pixels scored 0.55 -> every t in [0.55, 0.6) is
    # perfect; the argmax tie at t = 0.55 goes to background, so the best (lowest) t is exactly 0.55
    gt = np.zeros((10, 10), np.int64)
    gt[2:6, 3:8] = 2
    cam = np.where(gt == 2, 0.6, 0.55).astype(np.float32)[None]
    sweep = ThresholdSweep(4, threshold_grid(0.0, 0.95, 0.01))
    sweep.update(cam, gt, np.array([1]))
    res = sweep.result()
    assert res.best_threshold == pytest.approx(0.55)
    assert res.best.miou == pytest.approx(1.0)
    curve = [r["miou"] for r in res.curve()]
    assert curve[54] < 1.0 and curve[55] == pytest.approx(1.0) and curve[60] < 1.0
    assert len(curve) == 96


def test_sweep_reports_the_global_best_not_the_first_peak():
    # a curve that rises, drops, then rises higher: stopping at the first drop (the reference) would miss the best
    # background: 50 px at 0.1, 200 px at 0.5; class 1: 30 px at 0.3, 400 px at 0.8
    gt = np.array([0] * 250 + [1] * 430)[None]
    score = np.array([0.1] * 50 + [0.5] * 200 + [0.3] * 30 + [0.8] * 400, np.float32)[None, None]
    sweep = ThresholdSweep(2, threshold_grid(0.0, 0.95, 0.05))
    sweep.update(score, gt, np.array([0]))
    res = sweep.result()
    miou = np.array([r["miou"] for r in res.curve()])
    first_drop = int(np.argmax(np.diff(miou) < 0))
    assert miou[first_drop] < miou.max()  # the constructed curve has an earlier local peak
    assert res.best_threshold == pytest.approx(0.5)
    assert res.best.miou == pytest.approx(miou.max())
