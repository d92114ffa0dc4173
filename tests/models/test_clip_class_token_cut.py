"""The image tower's last block run for the class token only (issue 14: less work in every CLIP stage): the
features and their gradients w.r.t. the images equal open_clip's full pass."""

from __future__ import annotations

import pytest
import torch

from semples.config import ClipConfig
from semples.models.clip import load_clip


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    err, scale = float((a - b).abs().max().detach()), float(b.abs().max().detach())
    assert err <= rel * scale, f"max |diff| {err:.3g} vs max |ref| {scale:.3g}"


@pytest.mark.parametrize("arch", ["tiny-clip", "ViT-B-32"])
def test_features_and_image_gradients_equal_the_full_pass(arch):
    torch.manual_seed(0)
    clip = load_clip(ClipConfig(arch=arch, pretrained="none"))
    assert clip.class_token_cut
    images = torch.randn(3, 3, *clip.image_size, requires_grad=True)
    cut = clip.encode_image(images)
    grad_cut = torch.autograd.grad(cut.square().sum(), images)[0]
    full = clip.model.encode_image(images)
    grad_full = torch.autograd.grad(full.square().sum(), images)[0]
    assert cut.shape == full.shape
    _close(cut, full)
    _close(grad_cut, grad_full)


def test_towers_whose_feature_is_not_the_class_token_take_the_full_pass():
    torch.manual_seed(0)
    clip = load_clip(ClipConfig(arch="tiny-clip", pretrained="none"))
    clip.model.visual.pool_type = "avg"  # the mean of the patch tokens: every token of the last block is read
    from semples.models.clip import _class_token_pooled

    assert not _class_token_pooled(clip.model.visual)
    default = load_clip(ClipConfig(arch="tiny-clip", pretrained="none", block_type="default"))
    assert not default.class_token_cut  # nn.MultiheadAttention blocks: open_clip's own pass
    images = torch.randn(2, 3, *default.image_size)
    _close(default.encode_image(images), default.model.encode_image(images))
