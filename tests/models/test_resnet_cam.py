"""CLIMS-style ResNet CAM generator: shapes at any size, logits = classifier(GAP(features)), frozen trunk, weights."""

from __future__ import annotations

import pytest
import torch

from semples.errors import WeightsError
from semples.models.mask_generators import GENERATORS, ResNetCAM, build_generator
from tests.fma_helpers import RESNET_TINY, make_resnet_generator, resnet_cfg


def test_registered():
    assert {"weaktr_vit", "resnet_cam", "clip_gradcam"} <= set(GENERATORS)


@pytest.mark.parametrize("size", [(64, 64), (61, 45), (16, 16)])
def test_shapes_padding_and_logits(size):
    gen = make_resnet_generator(4).eval()
    h, w = size
    with torch.no_grad():
        out = gen(torch.randn(2, 3, h, w))
    gh, gw = -(-h // 16), -(-w // 16)
    assert out.cam.shape == (2, 4, gh, gw) and out.padded_size == (gh * 16, gw * 16)
    assert (out.cam >= 0).all() and set(out.logits) == {"gap"}
    assert out.to_image_size().shape == (2, 4, h, w)


def test_logits_are_the_classifier_on_pooled_features():
    gen = make_resnet_generator(3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = gen.backbone.forward_features(x)
        want = torch.einsum("kc,bc->bk", gen.head.weight[:, :, 0, 0], feats.mean(dim=(2, 3)))
        out = gen(x)
    torch.testing.assert_close(out.logits["gap"], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.cam, out.maps["linear"].clamp_min(0))


def test_frozen_trunk_trains_only_the_classifier():
    gen = make_resnet_generator(3)
    gen.set_trunk_trainable(False)
    gen.train()
    assert not gen.backbone.training and gen.training
    gen(torch.randn(2, 3, 64, 64)).cam.sum().backward()
    assert {n for n, p in gen.named_parameters() if p.grad is not None} == {"head.weight"}
    gen = make_resnet_generator(3)
    gen.set_trunk_trainable(True)
    sum(v.sum() for v in gen(torch.randn(2, 3, 64, 64)).logits.values()).backward()
    assert all(p.grad is not None for p in gen.parameters())


def test_offline_imagenet_weights_name_what_to_pass(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise RuntimeError("Hugging Face hub is unreachable")

    monkeypatch.setattr(timm, "create_model", offline)
    cfg = resnet_cfg()
    with pytest.raises(WeightsError, match=r"generator\.backbone_checkpoint="):
        build_generator(type(cfg)(**{**cfg.__dict__, "pretrained": True}), 20)


def test_backbone_checkpoint_file_is_loaded(tmp_path):
    import timm

    torch.manual_seed(5)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0, **RESNET_TINY)
    path = tmp_path / "resnet18_tiny.pth"
    torch.save(net.state_dict(), path)
    cfg = resnet_cfg()
    gen = build_generator(type(cfg)(**{**cfg.__dict__, "backbone_checkpoint": str(path)}), 2)
    assert isinstance(gen, ResNetCAM)
    assert torch.equal(gen.backbone.conv1.weight, net.conv1.weight)
