"""Transforms added by the data layer: multi-scale + flip views and their inverse, letterbox with 255 padding."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from semples.data import TrainTransformConfig, TransformedDataset, collate
from semples.data.transforms import (
    MultiScaleTransform,
    ResizePadTransform,
    TrainTransform,
    denormalize,
    merge_views,
    multiscale_views,
    scaled_size,
    views_to_full_resolution,
)


def ramp_image(w=40, h=30) -> Image.Image:
    x = np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1))
    return Image.fromarray(np.stack([x, x, x], 2).astype(np.uint8))


def test_multiscale_views_sizes_order_and_flip():
    views = multiscale_views(ramp_image(), scales=(1.0, 1.2), flip=True)
    assert [(s, f) for _, s, f in views] == [(1.0, False), (1.0, True), (1.2, False), (1.2, True)]
    assert [tuple(t.shape) for t, _, _ in views] == [(3, 30, 40), (3, 30, 40), (3, 36, 48), (3, 36, 48)]
    assert torch.equal(views[1][0], views[0][0].flip(-1))
    left_to_right = denormalize(views[0][0])[0, 15]
    assert left_to_right[0] < 0.05 and left_to_right[-1] > 0.95  # not flipped
    assert scaled_size(30, 40, 1.2, multiple_of=16) == (32, 48)
    assert [tuple(t.shape[1:]) for t, _, _ in multiscale_views(ramp_image(), (0.5,), False, multiple_of=16)] == \
        [(16, 16)]


def test_views_back_to_full_resolution_undo_the_flip():
    views = multiscale_views(ramp_image(), scales=(1.0, 1.2), flip=True)
    # a "model" that returns the red channel at half resolution: every view must map back onto the original
    maps = [torch.nn.functional.avg_pool2d(t[None, :1], 2)[0] for t, _, _ in views]
    full = views_to_full_resolution(maps, [f for _, _, f in views], (30, 40))
    assert full.shape == (4, 1, 30, 40)
    reference = full[0]
    for v in range(1, 4):
        assert (full[v] - reference).abs().mean() < 0.05
    assert torch.allclose(merge_views(maps, [f for _, _, f in views], (30, 40), reduce="mean"), full.mean(0))
    assert torch.allclose(merge_views(maps, [f for _, _, f in views], (30, 40)), full.sum(0))


def test_resize_pad_pads_masks_with_ignore():
    image = ramp_image(40, 20)
    mask = np.ones((20, 40), np.uint8)
    t, m = ResizePadTransform(32)(image, mask)
    assert t.shape == (3, 32, 32) and m.shape == (32, 32)
    assert (m[:16] == 1).all() and (m[16:] == 255).all()
    assert (t[:, 16:] == 0).all()  # the image pads with the mean colour (0 once normalised)


def test_multiscale_transform_through_transformed_dataset(toy_dataset):
    tds = TransformedDataset(toy_dataset, MultiScaleTransform((1.0, 1.2), flip=True), with_mask=True)
    batch = collate([tds[0]])
    item = toy_dataset[0]
    views = batch["image"][0]
    assert len(views) == 4 and views[2].shape[-2:] == scaled_size(item.image.height, item.image.width, 1.2)
    assert batch["mask"].shape == (1, item.image.height, item.image.width)


def test_train_transform_keeps_image_and_mask_aligned(toy_dataset):
    cfg = TrainTransformConfig(crop_size=48, randaugment=None, random_erasing=0.0, scale=(0.3, 1.0))
    tds = TransformedDataset(toy_dataset, TrainTransform(cfg), seed=3, with_mask=True)
    for i in range(len(toy_dataset)):
        out = tds[(i, 2)]
        assert torch.equal(out["mask"], tds[(i, 2)]["mask"])  # seeded by (seed, epoch, index)
        fg = out["mask"] > 0
        if fg.sum() > 20:  # toy objects are saturated colours on dark noise: the crop keeps them together
            bright = denormalize(out["image"]).max(0).values > 0.6
            assert (bright[fg].float().mean()) > 0.8
