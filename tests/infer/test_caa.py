"""CAA: Sinkhorn rows sum to 1; the symmetrised and squared affinities have exactly the row sums the module
docstring states; shapes are kept; only patches inside the CAM's boxes send activation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semples.infer.caa import (
    attention_affinity,
    box_mask,
    caa_refine,
    component_boxes,
    refine_with_attention,
    sinkhorn,
)


def random_attention(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, n, generator=g, dtype=torch.float64).softmax(-1)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_sinkhorn_makes_rows_sum_to_one(iterations):
    a = random_attention(12)
    t = sinkhorn(a, iterations).double()
    torch.testing.assert_close(t.sum(-1), torch.ones(12, dtype=torch.float64), rtol=0, atol=1e-6)
    assert t.shape == a.shape and (t >= 0).all()
    # one iteration = columns first, then rows
    cols = a / a.sum(0, keepdim=True)
    torch.testing.assert_close(sinkhorn(a, 1).double(), cols / cols.sum(1, keepdim=True), rtol=1e-6, atol=1e-7)


def test_row_sums_after_symmetrise_and_power_are_as_documented():
    a = random_attention(10, seed=3)
    t = sinkhorn(a, 1).double()
    s = (t + t.t()) / 2
    r = s.sum(1)
    # symmetrise: row i sums to (1 + column sum i of T) / 2; all entries sum to n
    torch.testing.assert_close(r, (1 + t.sum(0)) / 2, rtol=0, atol=1e-6)
    torch.testing.assert_close(s.sum(), torch.tensor(10.0, dtype=torch.float64), rtol=0, atol=1e-5)
    aff1 = attention_affinity(a, 1, power=1).double()
    torch.testing.assert_close(aff1, s, rtol=0, atol=1e-6)
    torch.testing.assert_close(aff1, aff1.t())
    # power 2 (square): row sums are S · r
    aff2 = attention_affinity(a, 1, power=2).double()
    assert aff2.shape == (10, 10)
    torch.testing.assert_close(aff2, s @ s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aff2.sum(1), s @ r, rtol=1e-5, atol=1e-6)
    # a doubly stochastic input stays doubly stochastic, so then every row of every step sums to 1
    ds = sinkhorn(a, 200).double()
    torch.testing.assert_close(attention_affinity(ds, 1, power=2).sum(1).double(), torch.ones(10, dtype=torch.float64),
                               rtol=0, atol=1e-4)


def test_batched_affinity():
    a = torch.stack([random_attention(6, 0), random_attention(6, 1)])
    out = attention_affinity(a)
    assert out.shape == (2, 6, 6)
    torch.testing.assert_close(out[1], attention_affinity(a[1]))


def test_component_boxes_and_box_mask():
    m = np.zeros((6, 7), bool)
    m[0:2, 0:2] = True
    m[2, 2] = True  # diagonal neighbour: same 8-connected region
    m[4:6, 5] = True
    boxes = sorted(component_boxes(m))
    assert boxes == [(0, 3, 0, 3), (4, 6, 5, 6)]
    cam = torch.zeros(6, 7)
    cam[1, 1], cam[4, 5], cam[3, 0] = 1.0, 0.6, 0.3
    mask = box_mask(cam, threshold=0.5)
    assert mask.sum() == 2 and mask[1, 1] and mask[4, 5]
    assert box_mask(cam, threshold=0.2).sum() == 3
    assert not box_mask(torch.ones(3, 3), 0.4).any()  # a constant map has no confident region


def test_refine_keeps_shape_and_sends_only_from_inside_the_boxes():
    h, w = 4, 5
    aff = attention_affinity(random_attention(h * w, 7)).float()
    cams = torch.rand(3, h, w)
    cams[0] = 0.0
    cams[0, 1, 1] = 1.0  # one confident patch: its box is that patch
    cams[0, 3, 4] = 0.3  # below 0.4 of the max: outside every box
    out = caa_refine(cams, aff, box_threshold=0.4)
    assert out.shape == cams.shape
    # class 0 = the affinity column of patch (1, 1): A · e_(1,1)
    torch.testing.assert_close(out[0], aff[:, 1 * w + 1].reshape(h, w))
    targets = caa_refine(cams, aff, box_threshold=0.4, restrict_targets=True)
    assert targets[0].count_nonzero() == 1 and targets[0, 1, 1] == out[0, 1, 1]
    assert caa_refine(torch.zeros(0, h, w), aff).shape == (0, h, w)
    with pytest.raises(ValueError, match="grid"):
        caa_refine(cams, aff[:-1, :-1])


def test_refine_with_attention_drops_the_class_token():
    h, w = 3, 3
    attn = random_attention(1 + h * w, 2).float()
    cams = torch.rand(2, h, w)
    want = caa_refine(cams, attention_affinity(attn[1:, 1:]), 0.5)
    torch.testing.assert_close(refine_with_attention(cams, attn, box_threshold=0.5), want)
