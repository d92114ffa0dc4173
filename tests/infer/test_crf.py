"""Dense CRF (pydensecrf2): refines a constructed noisy seed, keeps absent labels absent, clear import error."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("pydensecrf.densecrf")
ndimage = pytest.importorskip("scipy.ndimage")

from semples.infer import crf as crf_module  # noqa: E402
from semples.infer.crf import crf_on_labels, dense_crf_probs  # noqa: E402
from semples.metrics import ConfusionMatrix  # noqa: E402


def scene(h: int = 96, w: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured grey background with a red ellipse (label 1) and a blue rectangle (label 2)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = (90 + 30 * np.sin(xx / 9.0)[..., None] + rng.normal(0, 6, (h, w, 3))).clip(0, 255)
    gt = np.zeros((h, w), np.uint8)
    ellipse = ((yy - 40) / 22.0) ** 2 + ((xx - 40) / 28.0) ** 2 <= 1
    gt[ellipse] = 1
    gt[50:85, 80:118] = 2
    img[gt == 1] = (210, 50, 40) + rng.normal(0, 6, (int((gt == 1).sum()), 3))
    img[gt == 2] = (40, 60, 200) + rng.normal(0, 6, (int((gt == 2).sum()), 3))
    return img.clip(0, 255).astype(np.uint8), gt


def noisy_seed(gt: np.ndarray, seed: int = 0) -> np.ndarray:
    """CAM-like blobs: blurred, shifted object masks plus noise, thresholded low -> over-extended labels."""
    rng = np.random.default_rng(seed)
    cams = []
    for k in (1, 2):
        m = ndimage.gaussian_filter((gt == k).astype(np.float32), 7)
        m = np.roll(m, (4, -5), axis=(0, 1)) + 0.15 * rng.random(gt.shape, dtype=np.float32)
        cams.append((m - m.min()) / (m.max() - m.min()))
    scores = np.concatenate([np.full((1, *gt.shape), 0.25, np.float32), np.stack(cams)])
    return scores.argmax(0)


def miou(pred: np.ndarray, gt: np.ndarray) -> float:
    return ConfusionMatrix(3).update(pred, gt).scores().miou


def test_crf_on_labels_improves_a_noisy_seed():
    img, gt = scene()
    seed = noisy_seed(gt)
    refined = crf_on_labels(img, seed, 3)
    before, after = miou(seed, gt), miou(refined, gt)
    assert refined.shape == gt.shape and refined.dtype == seed.dtype
    assert after > before + 0.05, (before, after)


def test_over_present_keeps_absent_labels_absent_and_values_map_back():
    img, gt = scene()
    seed = noisy_seed(gt)
    sparse = np.choose(seed, [0, 7, 3])  # labels 0, 7, 3 of 9: 1, 2, 4, 5, 6, 8 absent
    refined = crf_on_labels(img, sparse, 9, over="present")
    assert set(np.unique(refined)) <= {0, 3, 7}
    # same result as on the compact labels with the same num_labels
    assert np.array_equal(np.choose(crf_on_labels(img, seed, 9, over="present"), [0, 7, 3]), refined)


def test_over_all_labels_is_the_default_and_differs_only_on_boundary_pixels():
    """The reference runs the CRF over all 1 + |labels| labels: the same as over the present ones when every label
    wins somewhere in the seed; otherwise the marginals are spread over more labels and a few boundary pixels
    change (and only those)."""
    import inspect

    assert inspect.signature(crf_on_labels).parameters["over"].default == "all"
    from semples.infer.config import CrfConfig

    assert CrfConfig().over == "all"
    img, gt = scene()
    seed = noisy_seed(gt)
    # every label present: identical
    assert np.array_equal(crf_on_labels(img, seed, 3), crf_on_labels(img, seed, 3, over="present"))
    for num_labels in (6, 9):  # labels 3.. never win in the seed
        every, present = crf_on_labels(img, seed, num_labels), crf_on_labels(img, seed, num_labels, over="present")
        diff = every != present
        assert 0 < diff.sum() < 0.002 * diff.size
        boundary = ndimage.binary_dilation(ndimage.morphological_gradient(present, size=3) > 0, iterations=2)
        assert not (diff & ~boundary).any()


def test_single_label_and_ignore_pixels():
    img, _ = scene(32, 40)
    ones = np.full((32, 40), 4, np.int64)
    ones[:5, :5] = 255
    out = crf_on_labels(img, ones, 6)
    assert np.all(out == 4)  # one label: unchanged, ignore filled with it
    two = np.zeros((32, 40), np.int64)
    two[:, 20:] = 1
    two[10:20, 10:30] = 255  # unsure band across the boundary
    out = crf_on_labels(img, two, 2)
    assert set(np.unique(out)) <= {0, 1}
    assert (out[:, :5] == 0).all() and (out[:, -5:] == 1).all()


def test_bad_inputs():
    img, gt = scene(32, 40)
    with pytest.raises(ValueError, match="gt_prob"):
        crf_on_labels(img, gt, 3, gt_prob=1.0)
    with pytest.raises(ValueError, match="0..1"):
        crf_on_labels(img, np.full_like(gt, 2), 2)  # label 2 >= num_labels
    with pytest.raises(ValueError, match="uint8"):
        crf_on_labels(img.astype(np.float32), gt, 3)
    with pytest.raises(ValueError, match="image is"):
        crf_on_labels(img[:20], gt, 3)


def test_dense_crf_probs_sharpens_noisy_probabilities():
    img, gt = scene()
    rng = np.random.default_rng(1)
    onehot = np.eye(3, dtype=np.float32)[gt].transpose(2, 0, 1)
    probs = 0.45 * onehot + 0.55 * rng.dirichlet(np.ones(3), size=gt.shape).transpose(2, 0, 1).astype(np.float32)
    q = dense_crf_probs(img, probs)
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    assert miou(q.argmax(0), gt) > miou(probs.argmax(0), gt) + 0.05


def test_missing_library_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ImportError, match="pip install pydensecrf2"):
        crf_module._densecrf()
