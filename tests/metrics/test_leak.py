"""Leak rate against hand counts."""

from __future__ import annotations

import numpy as np

from semples.metrics import LeakRate


def test_leak_rate_by_hand():
    # 2 classes; class 0 belongs to background type 1 ("water"), class 1 to type 2
    bmap = np.array([[1, 1, 1, 2],
                     [1, 1, 2, 2]])
    gt = np.array([[0, 0, 1, 0],     # one class-0 object pixel on water (not background: never counts)
                   [0, 255, 0, 0]])  # one ignore pixel on water
    pred = np.array([[1, 0, 1, 2],
                     [1, 1, 1, 0]])
    leak = LeakRate([1, 2]).update(pred, gt, bmap, labels=np.array([1.0, 0.0]))
    # class 0: gt-background water pixels = (0,0), (0,1), (1,0) -> predicted class 0 at (0,0) and (1,0): 2 / 3
    assert leak.leaked.tolist() == [2, 0] and leak.exposed.tolist() == [3, 0]
    rates = leak.rates()
    assert np.isclose(rates[0], 2 / 3) and np.isnan(rates[1])  # class 1 absent from the label: undefined
    leak.update(pred, gt, bmap, labels=np.array([0.0, 1.0]))
    # class 1: gt-background pixels of type 2 = (0,3), (1,2), (1,3); predicted 2 at (0,3): 1 / 3
    assert np.isclose(leak.rates()[1], 1 / 3)
    assert np.isclose(leak.mean(), 0.5)
    d = leak.to_dict(["boat", "plane"])
    assert d["per_class"]["boat"] == 2 / 3 and d["pixels"] == {"boat": 3, "plane": 3}
