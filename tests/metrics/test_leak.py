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


def test_leak_sweep_equals_the_leak_rate_of_seed_labels_at_every_threshold():
    from semples.metrics import LeakSweep
    from semples.metrics.sweep import seed_labels

    rng = np.random.default_rng(0)
    grid = np.round(np.arange(0.0, 0.96, 0.05), 2)
    sweep = LeakSweep([1, 2, 0], grid)
    per_t = [LeakRate([1, 2, 0]) for _ in grid]
    for _ in range(6):
        gt = rng.integers(0, 4, (20, 24))
        gt[rng.random(gt.shape) < 0.05] = 255
        bmap = rng.integers(0, 3, gt.shape)
        labels = (rng.random(3) < 0.7).astype(np.float32)
        classes = np.flatnonzero(labels)
        cams = rng.random((len(classes), *gt.shape)).astype(np.float16).astype(np.float32)
        cams[:, 0, 0] = 0.55  # ties the grid point: not above t, so background there
        sweep.update(cams, classes, gt, bmap, labels)
        for t, leak in zip(grid, per_t):
            leak.update(seed_labels(cams, t, classes), gt, bmap, labels)
    for j, leak in enumerate(per_t):
        assert np.array_equal(sweep.leaked[j], leak.leaked) and np.array_equal(sweep.exposed, leak.exposed)
        np.testing.assert_allclose(sweep.rates(j), leak.rates(), equal_nan=True)
    d = sweep.to_dict(["a", "b", "c"], 3)
    assert d["threshold"] == grid[3] and len(d["curve"]) == len(grid)
    assert d["curve"][0] >= d["curve"][-1]  # a higher background score leaves less to leak
