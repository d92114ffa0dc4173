"""Multi-scale + flip CAM inference: flip/scale consistency, absent classes, file contents, interrupted re-runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import semples.infer.cams as cams_mod
from semples.config import CamConfig
from semples.data.base import ClassTable, SegmentationDataset
from semples.infer.cam_io import cam_path, dense_cams, load_cam
from semples.infer.cams import generate_cams, make_groups, minmax_per_class, multiscale_cams
from semples.models.mask_generators.base import GeneratorOutput, MaskGenerator
from tests.conftest import ToyDataset, make_generator


class PoolGenerator(MaskGenerator):
    """A flip- and scale-equivariant stub: class k's map = ReLU(mean of channel k % 3) on an 8-pixel grid.

    Pads inputs to a multiple of 8 like a patch model, so `to_image_size` crops as for a ViT.
    """

    def __init__(self, num_classes: int = 3, patch: int = 8) -> None:
        super().__init__()
        self.num_classes, self.patch = num_classes, patch
        self.calls: list[tuple[int, ...]] = []

    def trunk_modules(self):
        return []

    def forward(self, images: torch.Tensor) -> GeneratorOutput:
        self.calls.append(tuple(images.shape))
        b, _, h, w = images.shape
        ph, pw = (-h) % self.patch, (-w) % self.patch
        x = F.pad(images, (0, pw, 0, ph), mode="replicate")
        pooled = F.avg_pool2d(x, self.patch)
        cam = F.relu(torch.stack([pooled[:, k % 3] for k in range(self.num_classes)], 1))
        return GeneratorOutput(cam=cam, logits={}, input_size=(h, w), padded_size=(h + ph, w + pw))


class ImageDataset(SegmentationDataset):
    """Given images and labels (for hand-made inputs)."""

    name = "images"

    def __init__(self, images: list[np.ndarray], labels: list[list[int]], k: int = 3) -> None:
        self.classes = ClassTable(tuple(f"c{i}" for i in range(k)), tuple(f"c{i}" for i in range(k)))
        self.ids = [f"img{i}" for i in range(len(images))]
        self._images, self._labels, self._k = images, labels, k

    def labels(self, index: int) -> np.ndarray:
        out = np.zeros(self._k, np.float32)
        out[self._labels[index]] = 1
        return out

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self._images[index])


def blob_image(h: int = 40, w: int = 52, side: str = "left") -> np.ndarray:
    img = np.full((h, w, 3), 30, np.uint8)
    x0 = 4 if side == "left" else w - 20
    img[10:26, x0:x0 + 14, 0] = 240  # red blob, off-centre: a missing un-flip would smear it to both sides
    return img


def symmetric_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    half = rng.integers(0, 256, (h, w // 2, 3), dtype=np.uint8)
    return np.concatenate([half, half[:, ::-1]], 1)


def run(generator, dataset, tmp_path, name="cams", **cfg):
    out = tmp_path / name
    summary = generate_cams(generator, dataset, out, CamConfig(**cfg), progress=False)
    return out, summary


def test_minmax_per_class_maps_each_class_to_unit_range():
    x = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]]])
    y = minmax_per_class(x, eps=0.0 + 1e-12)
    assert y[0].min() == 0 and y[0].max() == pytest.approx(1.0)
    assert torch.all(y[1] == 0)  # a constant map stays zero, never NaN


def test_flip_averaging_undoes_the_flip(tmp_path):
    ds = ImageDataset([blob_image(40, 48)], [[0]])  # multiples of the stub's grid: the stub is exactly equivariant
    gen = PoolGenerator()
    no_flip, _ = run(gen, ds, tmp_path, "a", scales=(1.0,), flip=False)
    flip, _ = run(gen, ds, tmp_path, "b", scales=(1.0,), flip=True)
    a, _ = load_cam(cam_path(no_flip, "img0"))
    b, _ = load_cam(cam_path(flip, "img0"))
    # an equivariant model: the flip-averaged map equals the plain one (a missing un-flip would mirror half of it)
    np.testing.assert_allclose(a, b, atol=2e-3)
    assert b[0, :, :24].mean() > 0.1 and b[0, :, 24:].max() < 0.05  # the blob stays on the left


def test_multiscale_agrees_with_single_scale_for_a_scale_equivariant_model(tmp_path):
    ds = ImageDataset([blob_image(side="right")], [[0]])
    one, _ = run(PoolGenerator(), ds, tmp_path, "a", scales=(1.0,))
    many, _ = run(PoolGenerator(), ds, tmp_path, "b", scales=(0.8, 1.0, 1.2))
    a, _ = load_cam(cam_path(one, "img0"))
    b, _ = load_cam(cam_path(many, "img0"))
    assert a.shape == b.shape == (1, 40, 52)
    assert np.abs(a - b).mean() < 0.05
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.97


def test_flip_averaged_cams_of_a_symmetric_image_are_symmetric_with_a_real_generator(tmp_path):
    ds = ImageDataset([symmetric_image()], [[0, 2]])
    out, _ = run(make_generator(3).eval(), ds, tmp_path, scales=(1.0, 1.2), flip=True)
    cams, classes = load_cam(cam_path(out, "img0"))
    assert classes.tolist() == [0, 2] and cams.shape == (2, 48, 64)
    np.testing.assert_allclose(cams, cams[..., ::-1], atol=2e-3)  # float16 storage
    single, _ = run(make_generator(3).eval(), ds, tmp_path, "noflip", scales=(1.0,), flip=False)
    s, _ = load_cam(cam_path(single, "img0"))
    assert np.abs(s - s[..., ::-1]).max() > 0.05  # without flips the same model is not symmetric


@pytest.mark.parametrize("model", ["stub", "weaktr"])
def test_files_hold_only_labelled_classes_at_full_resolution_in_unit_range(tmp_path, model):
    ds = ToyDataset(n=4)
    gen = PoolGenerator() if model == "stub" else make_generator(3).eval()
    out, summary = run(gen, ds, tmp_path, batch_size=2, group_size=4)
    assert summary.written == 4 and summary.skipped == 0
    for i, image_id in enumerate(ds.ids):
        cams, classes = load_cam(cam_path(out, image_id))
        assert classes.tolist() == np.flatnonzero(ds.labels(i)).tolist()
        assert cams.shape[1:] == ds.load_mask(i).shape
        assert cams.min() >= 0 and cams.max() <= 1
        if model == "stub":  # (a random-weight WeakTr's maps are nearly flat: eps dominates their min-max)
            assert np.all(cams.reshape(len(classes), -1).max(1) > 0.99)
            assert np.all(cams.reshape(len(classes), -1).min(1) == 0)
        dense = dense_cams(cams, classes, 3)
        absent = np.flatnonzero(ds.labels(i) == 0)
        assert np.all(dense[absent] == 0)
        with np.load(cam_path(out, image_id)) as f:
            assert f["cams"].dtype == np.float16 and f["classes"].dtype == np.int16


def test_images_of_equal_size_share_a_batch(tmp_path):
    images = [np.zeros((32, 40, 3), np.uint8)] * 3 + [np.zeros((24, 40, 3), np.uint8)]
    ds = ImageDataset(images, [[0], [1], [2], [0]])
    gen = PoolGenerator()
    generate_cams(gen, ds, tmp_path, CamConfig(scales=(1.0,), batch_size=8, group_size=4), progress=False)
    # one forward for the three 32x40 images (x2 with flips), one for the 24x40 one
    assert sorted(gen.calls) == [(2, 3, 24, 40), (6, 3, 32, 40)]


def test_an_image_gets_the_same_maps_alone_or_in_a_batch():
    torch.manual_seed(0)
    gen = make_generator(3).eval()
    x = torch.randn(3, 3, 40, 48)
    batched = multiscale_cams(gen, [x, F.interpolate(x, size=(48, 58))], (40, 48), [[0], [0, 1], []])
    alone = multiscale_cams(gen, [x[1:2], F.interpolate(x[1:2], size=(48, 58))], (40, 48), [[0, 1]])
    torch.testing.assert_close(batched[1], alone[0], atol=1e-4, rtol=1e-3)  # float noise of batched GEMMs only
    assert batched[0].shape == (1, 40, 48) and batched[2].shape == (0, 40, 48)  # no labels: no maps


def test_make_groups_is_consecutive():
    assert make_groups(range(7), 3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_interrupted_run_resumes_to_identical_files_and_skips_finished_ones(tmp_path, monkeypatch):
    ds = ToyDataset(n=8)
    cfg = dict(batch_size=2, group_size=3, scales=(1.0, 1.2))
    reference, _ = run(make_generator(3, seed=1).eval(), ds, tmp_path, "reference", **cfg)

    real_save = cams_mod.save_cam
    calls = {"n": 0}

    def dying_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:  # the fifth file (inside the second group) is never written
            raise KeyboardInterrupt
        real_save(*args, **kwargs)

    monkeypatch.setattr(cams_mod, "save_cam", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run(make_generator(3, seed=1).eval(), ds, tmp_path, "resumed", **cfg)
    monkeypatch.setattr(cams_mod, "save_cam", real_save)
    out = tmp_path / "resumed"
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    assert 0 < len(before) < 8
    assert not list(out.glob(".*.tmp"))  # no half-written files

    _, summary = run(make_generator(3, seed=1).eval(), ds, tmp_path, "resumed", **cfg)
    assert summary.skipped == len(before) and summary.written == 8 - len(before)
    for name, mtime in before.items():
        assert (out / name).stat().st_mtime_ns == mtime  # finished files were not rewritten
    for image_id in ds.ids:
        a, ca = load_cam(cam_path(reference, image_id))
        b, cb = load_cam(cam_path(out, image_id))
        np.testing.assert_array_equal(ca, cb)
        np.testing.assert_array_equal(a, b)  # bit-identical maps

    _, again = run(make_generator(3, seed=1).eval(), ds, tmp_path, "resumed", **cfg)
    assert again.written == 0 and again.skipped == 8 and again.computed == 0


class LabelRecorder(PoolGenerator):
    """A generator whose maps depend on the image label (like CLIP Grad-CAM): records the labels it gets."""

    uses_labels = True

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.seen: list[torch.Tensor] = []

    def forward(self, images, labels=None):
        self.seen.append(labels.clone())
        return super().forward(images)


def test_generators_that_use_labels_get_each_images_label_for_every_view():
    gen = LabelRecorder(3)
    views = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 40, 40)]
    multiscale_cams(gen, views, (32, 32), [np.array([0, 2]), np.array([1])], flip=True)
    expected = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    assert len(gen.seen) == 2
    for labels in gen.seen:  # original and flipped copies of both images
        assert torch.equal(labels, torch.cat([expected, expected]))
