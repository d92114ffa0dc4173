"""Inference of the final model: multi-scale/flip averaging, sliding windows, CRF post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from semples.infer.segment import crf_refine, segment_probs, sliding_window_logits
from tests.seg_helpers import tiny_segmenter


class PixelwiseModel(nn.Module):
    """A 1×1 convolution: translation- and flip-equivariant, so every view gives the same answer."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture(scope="module")
def deeplab():
    return tiny_segmenter("deeplabv3plus", num_classes=4).eval()


def test_single_scale_without_flip_is_the_plain_softmax(deeplab):
    x = torch.randn(2, 3, 37, 50)
    probs = segment_probs(deeplab, x, scales=[1.0], flip=False)
    with torch.no_grad():
        assert torch.equal(probs, deeplab(x).float().softmax(1))


def test_multi_scale_with_flip_averages_probabilities(deeplab):
    x = torch.randn(1, 3, 41, 33)
    probs = segment_probs(deeplab, x, scales=(0.75, 1.0, 1.5), flip=True)
    assert probs.shape == (1, 4, 41, 33)
    assert torch.allclose(probs.sum(1), torch.ones(1, 41, 33), atol=1e-5)
    # by hand at scale 1.0 only: the mean of the image's and the un-flipped flip's probabilities
    with torch.no_grad():
        by_hand = (deeplab(x).softmax(1) + deeplab(x.flip(-1)).softmax(1).flip(-1)) / 2
    assert torch.allclose(segment_probs(deeplab, x, scales=(1.0,), flip=True), by_hand, atol=1e-6)


def test_flip_and_scale_change_nothing_for_a_pixelwise_model():
    model = PixelwiseModel().eval()
    x = torch.randn(1, 3, 24, 30)
    assert torch.allclose(segment_probs(model, x, flip=True), segment_probs(model, x), atol=1e-6)
    flat = torch.randn(1, 3, 1, 1).expand(1, 3, 24, 30)  # any resampling of a flat image is the same image
    assert torch.allclose(segment_probs(model, flat, scales=(0.5, 1.0, 1.7), flip=True), segment_probs(model, flat),
                          atol=1e-6)


def test_sliding_windows_equal_the_whole_image_for_a_pixelwise_model():
    model = PixelwiseModel().eval()
    for size in [(50, 70), (20, 30)]:  # larger and smaller than the window
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            slide = sliding_window_logits(model, x, crop_size=32, stride=20)
            assert slide.shape == (2, 3, *size)
            assert torch.allclose(slide, model(x), atol=1e-6)
    slide_probs = segment_probs(model, x, mode="slide", crop_size=16, stride=8)
    assert torch.allclose(slide_probs, segment_probs(model, x), atol=1e-6)
    with pytest.raises(ValueError, match="whole' or 'slide"):
        segment_probs(model, x, mode="tiles")


def test_crf_refine_returns_probabilities_that_follow_the_image():
    pytest.importorskip("semples.infer.crf")
    pytest.importorskip("pydensecrf.densecrf")  # the pydensecrf2 package
    # left half dark, right half bright; the probabilities are uncertain everywhere with a slight bias
    image = np.zeros((24, 32, 3), np.uint8)
    image[:, 16:] = 255
    probs = np.full((2, 24, 32), 0.5, np.float32)
    probs[0, :, :16] += 0.05
    probs[1, :, 16:] += 0.05
    probs[:, 10:14, 12:20] = 0.5  # a band without any preference across the edge
    probs /= probs.sum(0, keepdims=True)
    out = crf_refine(image, probs, {"iterations": 5})
    assert out.shape == probs.shape and out.dtype == np.float32
    assert np.allclose(out.sum(0), 1.0, atol=1e-4)
    labels = out.argmax(0)
    assert (labels[:, :14] == 0).all() and (labels[:, 18:] == 1).all()
