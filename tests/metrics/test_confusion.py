"""mIoU, mean precision and mean recall: one class set (present in ground truth or prediction) for all three."""

from __future__ import annotations

import numpy as np
import pytest

from semples.metrics import MEAN_CONVENTION, ConfusionMatrix


def test_one_class_set_for_every_mean():
    # 4 classes: 0 and 1 in both, 2 only in the ground truth (never predicted), 3 only predicted, and a fifth
    # class 4 absent from both
    gt = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    pred = np.array([0, 0, 1, 0, 0, 1, 3, 1])
    s = ConfusionMatrix(5).update(pred, gt).scores()
    assert np.isnan(s.iou[4]) and np.isnan(s.precision[4]) and np.isnan(s.recall[4])  # absent from both: out
    assert s.precision[2] == 0.0  # in the ground truth, never predicted
    assert s.recall[3] == 0.0  # predicted, absent from the ground truth (was NaN: left out of the mean recall)
    assert s.iou[2] == 0.0 and s.iou[3] == 0.0
    counted = ~np.isnan(s.iou)
    assert (counted == ~np.isnan(s.precision)).all() and (counted == ~np.isnan(s.recall)).all()
    # by hand: class 0: tp 2, gt 3, pred 4; class 1: tp 2, gt 3, pred 3
    assert s.miou == pytest.approx(np.mean([2 / 5, 2 / 4, 0, 0]))
    assert s.mean_precision == pytest.approx(np.mean([2 / 4, 2 / 3, 0, 0]))
    assert s.mean_recall == pytest.approx(np.mean([2 / 3, 2 / 3, 0, 0]))
    d = s.to_dict()
    assert d["mean_recall"] == pytest.approx(s.mean_recall) and d["mean_convention"] == MEAN_CONVENTION
    md = s.markdown("t")
    assert "present in the ground truth or the prediction" in md and "absent from both is left out" in md


def test_where_every_class_is_in_the_ground_truth_nothing_changes():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, 500)
    pred = np.where(rng.random(500) < 0.7, gt, rng.integers(0, 4, 500))
    s = ConfusionMatrix(4).update(pred, gt).scores()
    m = s.matrix.astype(float)
    np.testing.assert_allclose(s.recall, np.diag(m) / m.sum(1))
    np.testing.assert_allclose(s.precision, np.diag(m) / m.sum(0))
    assert s.mean_recall == pytest.approx(np.mean(np.diag(m) / m.sum(1)))


def test_the_run_summary_states_the_convention():
    from semples.pipeline import run_summary

    text = run_summary("x", {"steps": {"eval-seeds": {"outputs": {"miou": 0.5, "dir": "d"}}}})
    assert "| eval-seeds | d | 50.0 |" in text and MEAN_CONVENTION[1:] in text
