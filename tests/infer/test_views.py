"""The one multi-scale + flip (`semples.infer.views`): sizes, order, flips, and the way back to full resolution."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from semples.data.transforms import denormalize, normalize, to_tensor
from semples.infer.views import (
    image_views,
    merge_views,
    resize_batch,
    scaled_size,
    to_full_resolution,
    to_model_input,
    uint8_views,
    view_plan,
)


def ramp_image(w=40, h=30) -> Image.Image:
    x = np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1))
    return Image.fromarray(np.stack([x, x, x], 2).astype(np.uint8))


def test_image_views_sizes_order_and_flip():
    views = image_views(ramp_image(), scales=(1.0, 1.2), flip=True)
    assert [(s, f) for _, s, f in views] == [(1.0, False), (1.0, True), (1.2, False), (1.2, True)]
    assert [tuple(t.shape) for t, _, _ in views] == [(3, 30, 40), (3, 30, 40), (3, 36, 48), (3, 36, 48)]
    assert torch.equal(views[1][0], views[0][0].flip(-1))
    left_to_right = denormalize(views[0][0])[0, 15]
    assert left_to_right[0] < 0.05 and left_to_right[-1] > 0.95  # not flipped
    assert scaled_size(30, 40, 1.2, multiple_of=16) == (32, 48)
    assert [tuple(t.shape[1:]) for t, _, _ in image_views(ramp_image(), (0.5,), False, multiple_of=16)] == \
        [(16, 16)]


def test_views_back_to_full_resolution_undo_the_flip():
    views = image_views(ramp_image(), scales=(1.0, 1.2), flip=True)
    # a "model" that returns the red channel at half resolution: every view must map back onto the original
    maps = [torch.nn.functional.avg_pool2d(t[None, :1], 2)[0] for t, _, _ in views]
    full = to_full_resolution(maps, [f for _, _, f in views], (30, 40))
    assert full.shape == (4, 1, 30, 40)
    reference = full[0]
    for v in range(1, 4):
        assert (full[v] - reference).abs().mean() < 0.05
    assert torch.allclose(merge_views(maps, [f for _, _, f in views], (30, 40), reduce="mean"), full.mean(0))
    assert torch.allclose(merge_views(maps, [f for _, _, f in views], (30, 40)), full.sum(0))


def test_uint8_views_normalised_on_the_device_equal_the_normalised_views():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (37, 50, 3), dtype=np.uint8))
    ours = [to_model_input(torch.stack([v]), "clip")[0] for v in uint8_views(img, (1.0, 1.2, 0.8))]
    shared = [v for v, _, _ in image_views(img, (1.0, 1.2, 0.8), flip=False, norm="clip")]
    for a, b in zip(ours, shared):
        assert torch.equal(a, b)  # bit for bit: batched CAMs and one-image CLIP CAMs see the same pixels
    # the same numbers as the training transforms' to_tensor + normalize of the bicubic resize
    resized = img.resize(scaled_size(37, 50, 1.2)[::-1], Image.BICUBIC)
    assert torch.equal(shared[1], normalize(to_tensor(resized), "clip"))


def test_view_plan_order_and_resize_batch():
    assert [(v.scale, v.flipped) for v in view_plan((1.0, 0.5))] == [(1.0, False), (1.0, True), (0.5, False),
                                                                     (0.5, True)]
    assert [(v.scale, v.flipped) for v in view_plan((1.0,), flip=False)] == [(1.0, False)]
    x = torch.randn(2, 3, 30, 40)
    assert resize_batch(x, 1.0) is x and resize_batch(x, 0.5).shape == (2, 3, 15, 20)
