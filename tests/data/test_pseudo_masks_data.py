"""Pseudo-mask datasets (pairing, clear errors) and the DeepLab-style training augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from semples.data.base import DataError, TransformedDataset
from semples.data.io import write_mask_png
from semples.data.pseudo import PseudoMaskDataset
from semples.data.seg_transforms import SegTrainTransform, SegTrainTransformConfig
from semples.data.transforms import normalize, to_tensor
from semples.utils.dataclass_config import ConfigError
from tests.conftest import ToyDataset
from tests.seg_helpers import write_masks_from_ground_truth


def shifted_masks(base: ToyDataset, folder):
    """Pseudo masks that differ from the ground truth (so pairing is visible): class k -> k mod 3 + 1."""
    for i, image_id in enumerate(base.ids):
        m = base.load_mask(i).copy()
        fg = m > 0
        m[fg] = m[fg] % 3 + 1
        m[:2] = 255
        write_mask_png(folder / f"{image_id}.png", m)
    return folder


def test_pairs_images_with_the_pseudo_masks(tmp_path):
    base = ToyDataset(5)
    ds = PseudoMaskDataset(base, shifted_masks(base, tmp_path))
    assert ds.ids == base.ids and ds.has_masks and ds.classes == base.classes and ds.missing == 0
    for i in range(len(ds)):
        item = ds[i]
        gt = base.load_mask(i)
        assert item.id == base.ids[i]
        assert np.array_equal(np.asarray(item.image), np.asarray(base.load_image(i)))
        assert (item.mask[:2] == 255).all()
        assert np.array_equal(item.mask[2:][gt[2:] > 0], gt[2:][gt[2:] > 0] % 3 + 1)
        assert np.array_equal(item.labels, base.labels(i))  # image-level labels stay the base's


def test_missing_pseudo_mask_names_the_file(tmp_path):
    base = ToyDataset(4)
    write_masks_from_ground_truth(base, tmp_path, ids=base.ids[:1] + base.ids[2:])
    missing = tmp_path / f"{base.ids[1]}.png"
    with pytest.raises(DataError, match=rf"^{missing}: pseudo mask of image 'toy001' is missing \(1 of 4.*"
                                        r"--skip-missing"):
        PseudoMaskDataset(base, tmp_path)
    ds = PseudoMaskDataset(base, tmp_path, skip_missing=True)
    assert ds.ids == [base.ids[0], base.ids[2], base.ids[3]] and ds.missing == 1
    assert np.array_equal(ds.load_mask(1), base.load_mask(2))
    assert np.array_equal(np.asarray(ds.load_image(1)), np.asarray(base.load_image(2)))


def test_folder_problems_are_one_line_errors(tmp_path):
    base = ToyDataset(2)
    with pytest.raises(DataError, match="pseudo-mask folder does not exist"):
        PseudoMaskDataset(base, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no pseudo mask for any of the 2 images"):
        PseudoMaskDataset(base, tmp_path / "empty", skip_missing=True)
    # wrong size
    write_masks_from_ground_truth(base, tmp_path / "sized")
    write_mask_png(tmp_path / "sized" / "toy001.png", np.zeros((5, 7), np.uint8))
    ds = PseudoMaskDataset(base, tmp_path / "sized")
    with pytest.raises(DataError, match=r"toy001\.png: pseudo mask is 7×5, its image is"):
        ds[1]
    # a value that is not a class (3 classes: 0..3 and 255 are valid)
    write_mask_png(tmp_path / "sized" / "toy000.png", np.full(base.load_mask(0).shape, 9, np.uint8))
    with pytest.raises(DataError, match=r"toy000\.png: mask has values \[9\]"):
        ds[0]


def test_seg_transform_keeps_image_and_mask_aligned():
    # the image's colour encodes the label, so after the transform colour and mask must still agree
    h, w = 30, 44
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, size=(h, w)).astype(np.uint8)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    image = Image.fromarray(palette[mask])
    t = SegTrainTransform(SegTrainTransformConfig(crop_size=48, scale_range=(1.0, 1.0), hflip=1.0))
    img_t, mask_t = t(image, mask)
    assert img_t.shape == (3, 48, 48) and mask_t.shape == (48, 48) and mask_t.dtype == torch.int64
    # the crop is larger than the image: padding is ignore in the mask and the mean colour (0) in the image
    assert (mask_t == 255).sum() == 48 * 48 - h * w
    assert (img_t[:, mask_t == 255] == 0).all()
    expected = normalize(to_tensor(Image.fromarray(palette[mask_t.clamp(max=2).numpy().astype(np.uint8)])))
    valid = mask_t != 255
    assert torch.allclose(img_t[:, valid], expected[:, valid], atol=1e-5)
    # horizontal flip (p = 1): the valid region sits at the right of each row
    assert valid[:h, -w:].all()


def test_seg_transform_random_scale_and_crop():
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:40] = 2
    image = Image.fromarray(np.full((40, 60, 3), 128, np.uint8))
    cfg = SegTrainTransformConfig(crop_size=32, scale_range=(0.5, 2.0))
    ds = TransformedDataset(_OneItem(image, mask), SegTrainTransform(cfg), seed=3, with_mask=True)
    outs = [ds[(0, epoch)] for epoch in range(6)]
    for out in outs:
        assert out["image"].shape == (3, 32, 32) and out["mask"].shape == (32, 32)
        assert set(out["mask"].unique().tolist()) <= {0, 2, 255}
    # seeded per (seed, epoch, index): repeatable, different across epochs
    assert torch.equal(ds[(0, 2)]["mask"], outs[2]["mask"]) and torch.equal(ds[(0, 2)]["image"], outs[2]["image"])
    assert len({o["mask"].numpy().tobytes() for o in outs}) > 1


def test_seg_transform_config_is_checked():
    with pytest.raises(ConfigError, match="scale_range"):
        SegTrainTransformConfig(scale_range=(2.0, 0.5))
    with pytest.raises(ConfigError, match="normalize"):
        SegTrainTransformConfig(normalize="cifar")


class _OneItem(ToyDataset):
    def __init__(self, image, mask):
        super().__init__(1)
        self._items = [(image, mask)]
