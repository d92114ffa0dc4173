"""WeakTr-style mask generator: shapes at any size, frozen trunk, gradients, weights errors."""

from __future__ import annotations

import pytest
import torch

from semples.config import GeneratorConfig
from semples.errors import WeightsError
from semples.models.mask_generators import build_generator
from tests.conftest import make_generator


@pytest.mark.parametrize("size", [(64, 64), (61, 45), (97, 130), (16, 16)])
def test_shapes_and_finite_for_odd_sizes(size):
    gen = make_generator(4).eval()
    h, w = size
    out = gen(torch.randn(2, 3, h, w))
    gh, gw = -(-h // 16), -(-w // 16)
    assert out.cam.shape == (2, 4, gh, gw)
    assert out.padded_size == (gh * 16, gw * 16) and out.input_size == (h, w)
    for name, t in {**out.maps, **out.logits}.items():
        assert torch.isfinite(t).all(), name
    assert (out.cam >= 0).all()
    assert out.to_image_size().shape == (2, 4, h, w)
    assert set(out.logits) == {"token", "coarse", "fine"}


def test_fine_map_is_patch_attention_times_fused_map():
    gen = make_generator(3).eval()
    out = gen(torch.randn(1, 3, 32, 48))
    # the fine map is a convex combination of fused values (attention rows sum to <= 1 after gating)
    assert out.maps["fine"].max() <= out.maps["fused"].max() + 1e-6
    assert torch.equal(out.cam, out.maps["fine"])


def test_frozen_trunk_gets_no_gradient_and_runs_without_graph():
    gen = make_generator(3)
    gen.set_trunk_trainable(False)
    gen.train()
    assert all(not m.training for m in gen.trunk_modules())
    assert gen.head.training and gen.fusion.training
    out = gen(torch.randn(2, 3, 64, 64))
    out.cam.sum().backward()
    trainable = {n for n, p in gen.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias", "fusion.mlp.0.weight", "fusion.mlp.0.bias",
                         "fusion.mlp.2.weight", "fusion.mlp.2.bias"}
    for name, p in gen.named_parameters():
        if name in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_every_parameter_gets_a_gradient_when_the_trunk_trains():
    gen = make_generator(3)
    gen.set_trunk_trainable(True)
    gen.detach_coarse_in_fusion = True
    out = gen(torch.randn(2, 3, 64, 64))
    loss = sum(v.sum() for v in out.logits.values())
    loss.backward()
    missing = [n for n, p in gen.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_position_embedding_interpolates_to_other_grids():
    gen = make_generator(2).eval()
    assert gen.embed.grid == (4, 4)
    with torch.no_grad():
        a = gen(torch.randn(1, 3, 64, 64)).cam
        b = gen(torch.randn(1, 3, 128, 80)).cam
    assert a.shape[-2:] == (4, 4) and b.shape[-2:] == (8, 5)


def test_class_tokens_start_from_the_pretrained_class_token():
    gen = make_generator(5)
    tokens = gen.embed.class_tokens.detach()[0]
    assert torch.allclose(tokens, tokens[0:1].expand_as(tokens))


def test_offline_pretrained_backbone_names_what_to_pass(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise RuntimeError("Hugging Face hub is unreachable")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError, match=r"generator\.backbone_checkpoint="):
        build_generator(GeneratorConfig(pretrained=True), 20)


def test_backbone_checkpoint_file_is_loaded(tmp_path):
    import timm

    kwargs = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 64}
    torch.manual_seed(3)
    vit = timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=0, **kwargs)
    path = tmp_path / "deit_tiny_test.pth"
    torch.save({"model": vit.state_dict()}, path)
    gen = build_generator(GeneratorConfig(backbone_checkpoint=str(path), backbone_kwargs=kwargs), 2)
    assert torch.equal(gen.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    assert torch.equal(gen.embed.pos_embed, vit.pos_embed[:, 1:])


def test_attention_fusion_of_layer_list_equals_fusion_of_stacked_maps():
    from semples.models.mask_generators.weaktr import AttentionFusion

    torch.manual_seed(0)
    fusion = AttentionFusion(channels=6, reduction=2)
    layers = [torch.rand(2, 3, 5, 5).softmax(-1) for _ in range(2)]
    stacked = torch.cat(layers, dim=1)  # (B, L·H, N, N), layer-major like the gate channels
    torch.testing.assert_close(fusion(layers), fusion(stacked))
    # and by hand: sigmoid(MLP(max-pooled maps)) weighted mean over the 6 maps
    gate = torch.sigmoid(fusion.mlp(stacked.amax(dim=(-2, -1))))
    torch.testing.assert_close(fusion(layers), (gate[:, :, None, None] * stacked).mean(1))
