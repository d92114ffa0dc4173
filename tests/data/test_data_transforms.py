"""Transforms of the data layer: training crops that keep image and mask aligned, letterbox with 255 padding."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from semples.data import TrainTransformConfig, TransformedDataset
from semples.data.transforms import ResizePadTransform, TrainTransform, denormalize


def ramp_image(w=40, h=30) -> Image.Image:
    x = np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1))
    return Image.fromarray(np.stack([x, x, x], 2).astype(np.uint8))


def test_resize_pad_pads_masks_with_ignore():
    image = ramp_image(40, 20)
    mask = np.ones((20, 40), np.uint8)
    t, m = ResizePadTransform(32)(image, mask)
    assert t.shape == (3, 32, 32) and m.shape == (32, 32)
    assert (m[:16] == 1).all() and (m[16:] == 255).all()
    assert (t[:, 16:] == 0).all()  # the image pads with the mean colour (0 once normalised)


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
