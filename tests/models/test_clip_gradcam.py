"""CLIP Grad-CAM generator: equals a hand-computed Grad-CAM (hook + torch.autograd.grad on open_clip's own forward),
stays differentiable w.r.t. the prompts, holds CLIP aside, and rebuilds from a checkpoint."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from semples.config import ClipConfig
from semples.data.transforms import denormalize, normalize
from semples.models import clip_visual
from semples.models.clip import load_clip
from semples.models.mask_generators import GeneratorContext, load_generator
from tests.fma_helpers import BACKGROUNDS, NAMES, make_clip_generator


def reference_gradcam(clip, text: torch.Tensor, image_clip: torch.Tensor, allowed: torch.Tensor, cls: int,
                      scale: float, create_graph: bool = False) -> torch.Tensor:
    """Grad-CAM of class `cls` for one CLIP-normalised image, by the book: open_clip's forward with a hook on the
    last block's ln_1, image feature = mean projected patch token, softmax over `allowed`, gradient by autograd."""
    visual = clip.model.visual
    store = {}
    handle = visual.transformer.resblocks[-1].ln_1.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with sdpa_kernel(SDPBackend.MATH):  # the math kernel is twice differentiable
            x = image_clip.clone().requires_grad_(True)  # so the hooked activation is part of a graph
            tokens = visual.ln_post(visual.transformer(visual._embeds(x))) @ visual.proj
            feat = F.normalize(tokens[:, 1:].mean(1), dim=-1)
            logits = scale * feat @ text.t()
            prob = logits[0].masked_fill(~allowed, float("-inf")).softmax(-1)[cls]
            grad = torch.autograd.grad(prob, store["a"], create_graph=create_graph)[0]
    finally:
        handle.remove()
    a = store["a"][0, 1:]
    weights = grad[0, 1:].mean(0)
    side = int(round(a.shape[0] ** 0.5))
    cam = F.relu((a * weights).sum(-1)).reshape(side, side)
    return cam if create_graph else cam.detach()


@pytest.mark.parametrize("kind", ["segmentation", "classification", "handcrafted"])
def test_gradcam_equals_hand_computed_gradcam(kind, tiny_clip):
    gen = make_clip_generator(tiny_clip, kind).eval()
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32)  # ImageNet-normalised, the tiny CLIP's native 4×4 grid
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = gen(images, labels=labels)
    assert out.cam.shape == (2, 3, 4, 4) and out.padded_size == (32, 32)
    with torch.no_grad():
        text = gen.text_features()
    clip_images = normalize(denormalize(images, "imagenet"), "clip")
    checked = 0
    for n in range(2):
        allowed = torch.cat([labels[n] > 0, torch.ones(len(BACKGROUNDS), dtype=torch.bool)])
        for c in range(3):
            if labels[n, c] == 0:
                assert out.cam[n, c].abs().max() == 0, "absent classes have no CAM"
                continue
            ref = reference_gradcam(tiny_clip, text, clip_images[n:n + 1], allowed, c, gen.logit_scale)
            assert ref.abs().max() > 0
            torch.testing.assert_close(out.cam[n, c], ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
            checked += 1
    assert checked == 3


def test_without_labels_every_class_is_in_the_softmax(tiny_clip):
    gen = make_clip_generator(tiny_clip).eval()
    image = torch.randn(1, 3, 32, 32)
    out = gen(image)
    with torch.no_grad():
        text = gen.text_features()
    ref = reference_gradcam(tiny_clip, text, normalize(denormalize(image, "imagenet"), "clip"),
                            torch.ones(5, dtype=torch.bool), 1, gen.logit_scale)
    torch.testing.assert_close(out.cam[0, 1], ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_cam_is_differentiable_wrt_the_prompts_like_the_hand_computation(tiny_clip):
    gen = make_clip_generator(tiny_clip, "segmentation")
    torch.manual_seed(2)
    image = torch.randn(1, 3, 32, 32)
    labels = torch.tensor([[0.0, 1.0, 1.0]])
    weights = torch.rand(3, 4, 4)
    (gen(image, labels=labels).cam[0] * weights).sum().backward()
    ours = gen.prompts.context.grad.clone()
    gen.prompts.context.grad = None
    allowed = torch.tensor([False, True, True, True, True])
    text = gen.text_features()
    clip_image = normalize(denormalize(image, "imagenet"), "clip")
    ref = sum((reference_gradcam(tiny_clip, text, clip_image, allowed, c, gen.logit_scale, create_graph=True)
               * weights[c]).sum() for c in (1, 2))
    ref.backward()
    assert ours.abs().sum() > 0
    torch.testing.assert_close(ours, gen.prompts.context.grad, rtol=1e-3, atol=1e-3 * float(ours.abs().max()))


def test_no_graph_when_prompts_are_frozen_or_grad_is_off(tiny_clip):
    gen = make_clip_generator(tiny_clip)
    image, labels = torch.randn(1, 3, 32, 32), torch.ones(1, 3)
    with torch.no_grad():
        assert not gen(image, labels=labels).cam.requires_grad
    gen.requires_grad_(False)
    assert not gen(image, labels=labels).cam.requires_grad
    with torch.inference_mode():  # what seed inference runs under: Grad-CAM still works
        out = gen(image, labels=labels)
    assert out.cam.abs().sum() > 0


def test_batching_pairs_and_chunking_do_not_change_the_cams(tiny_clip):
    gen = make_clip_generator(tiny_clip).eval()
    images = torch.randn(3, 3, 32, 32)
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    with torch.no_grad():
        batch = gen(images, labels=labels).cam
        gen.pair_chunk = 2
        chunked = gen(images, labels=labels).cam
        single = torch.cat([gen(images[i:i + 1], labels=labels[i:i + 1]).cam for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(batch, chunked, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("size", [(32, 32), (40, 56), (17, 9)])
def test_any_size_is_padded_to_whole_patches(size, tiny_clip):
    gen = make_clip_generator(tiny_clip).eval()
    h, w = size
    out, attn = gen.forward_with_attention(torch.randn(2, 3, h, w), torch.ones(2, 3), layers=8)
    gh, gw = -(-h // 8), -(-w // 8)
    assert out.cam.shape == (2, 3, gh, gw) and out.padded_size == (gh * 8, gw * 8) and out.input_size == (h, w)
    assert out.to_image_size().shape == (2, 3, h, w)
    assert attn.shape == (2, 1 + gh * gw, 1 + gh * gw)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 1 + gh * gw))  # softmax rows
    assert out.logits["clip"].shape == (2, 3) and gen.image_logits(torch.randn(2, 3, h, w)).shape == (2, 5)


def test_clip_normalised_input_matches_imagenet_input(tiny_clip):
    gen_in = make_clip_generator(tiny_clip, "handcrafted").eval()
    gen_clip = make_clip_generator(tiny_clip, "handcrafted", input_norm="clip").eval()
    pixels = torch.rand(1, 3, 32, 32)
    a = gen_in(normalize(pixels, "imagenet"), labels=torch.ones(1, 3)).cam
    b = gen_clip(normalize(pixels, "clip"), labels=torch.ones(1, 3)).cam
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("block_type", ["custom", "default"])
def test_manual_blocks_equal_open_clip_blocks(block_type):
    torch.manual_seed(0)
    clip = load_clip(ClipConfig(arch="tiny-clip", pretrained="none", block_type=block_type))
    visual = clip.model.visual
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens, grid = clip_visual.embed(visual, x)
        torch.testing.assert_close(tokens, visual._embeds(x))
        assert grid == (4, 4)
        for block in visual.transformer.resblocks:
            ours, attn = clip_visual.block_forward(block, tokens)
            tokens = block(tokens)
            torch.testing.assert_close(ours, tokens, rtol=1e-5, atol=1e-5)
            assert attn.shape == (2, block.attn.num_heads, 17, 17)


def test_clip_is_held_aside_and_only_prompts_are_state(tiny_clip):
    gen = make_clip_generator(tiny_clip)
    assert set(gen.state_dict()) == {"prompts.context", "prompts.token_ids", "prompts.context_slots",
                                     "prompts.eot_index"}
    assert [n for n, p in gen.named_parameters()] == ["prompts.context"]
    assert gen.trunk_modules() == [] and gen.uses_labels
    assert make_clip_generator(tiny_clip, "handcrafted").state_dict() == {}


def save_generator(gen, gen_cfg, path, clip_arch: str = "tiny-clip"):
    """A checkpoint as the engine writes it: trainable state + the resolved config."""
    from semples.utils.checkpoint_io import FORMAT
    from semples.utils.dataclass_config import to_dict

    torch.save({"format": FORMAT, "version": 1, "stage": "fma-segment", "finished": True,
                "modules": {"mask_generator": {k: v.detach().cpu() for k, v in gen.state_dict().items()}},
                "config": {"generator": to_dict(gen_cfg), "clip": {"arch": clip_arch, "pretrained": "none"}}}, path)


@pytest.mark.parametrize("kind", ["segmentation", "classification"])
def test_checkpoint_rebuilds_the_same_generator_from_its_state(kind, tiny_clip, tmp_path, caplog):
    gen = make_clip_generator(tiny_clip, kind, seed=3)
    with torch.no_grad():
        gen.prompts.context.add_(torch.randn_like(gen.prompts.context))
    path = tmp_path / "checkpoint.pt"
    from semples.config import GeneratorConfig
    from tests.fma_helpers import clip_cam_cfg

    save_generator(gen, clip_cam_cfg(kind), path)
    # no names given: the token ids (names included) come from the checkpoint
    loaded, record = load_generator(path, GeneratorConfig(name="clip_gradcam"), 3,
                                    context=GeneratorContext(clip=tiny_clip))
    assert loaded.prompt_record()["kind"] == kind and record["stage"] == "fma-segment"
    image, labels = torch.randn(2, 3, 40, 40), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, labels=labels).cam, gen(image, labels=labels).cam)
    # names given: checked against the loaded prompts
    with caplog.at_level(logging.WARNING):
        load_generator(path, GeneratorConfig(name="clip_gradcam"), 3,
                       context=GeneratorContext(NAMES, BACKGROUNDS, tiny_clip))
    assert "other names" not in caplog.text
    with caplog.at_level(logging.WARNING):
        load_generator(path, GeneratorConfig(name="clip_gradcam"), 3,
                       context=GeneratorContext(("horse", "dog", "boat"), None, tiny_clip))
    assert "other names" in caplog.text


def test_builder_needs_clip_and_names(tiny_clip):
    from semples.models.mask_generators import build_generator
    from semples.utils.dataclass_config import ConfigError
    from tests.fma_helpers import clip_cam_cfg

    with pytest.raises(ConfigError, match="frozen CLIP"):
        build_generator(clip_cam_cfg(), 3)
    with pytest.raises(ConfigError, match="class names"):
        build_generator(clip_cam_cfg(), 3, context=GeneratorContext(clip=tiny_clip))


def test_generator_moves_its_clip_along(tiny_clip):
    import copy

    clip = copy.deepcopy(tiny_clip)
    gen = make_clip_generator(clip)
    gen.to(torch.float64)
    assert next(clip.parameters()).dtype == torch.float64 and gen.prompts.context.dtype == torch.float64


def test_checkpoint_without_context_brings_up_the_clip_its_config_names(tiny_clip, tmp_path, caplog):
    from semples.config import GeneratorConfig
    from tests.fma_helpers import clip_cam_cfg

    path = tmp_path / "checkpoint.pt"
    save_generator(make_clip_generator(tiny_clip), clip_cam_cfg(), path)
    with caplog.at_level(logging.INFO):
        loaded, _ = load_generator(path, GeneratorConfig(), 3)  # e.g. `semples cams`, which passes no context
    assert "loading the checkpoint's CLIP tiny-clip" in caplog.text
    assert loaded.clip is not tiny_clip and loaded.prompt_record()["kind"] == "segmentation"
    with torch.no_grad():
        assert loaded(torch.randn(1, 3, 32, 32)).cam.shape == (1, 3, 4, 4)


def test_bf16_autocast_gives_float32_maps_close_to_fp32(tiny_clip):
    """Under bf16 autocast (what mixed_precision auto picks on CPUs with AVX512-BF16) the maps stay float32."""
    gen = make_clip_generator(tiny_clip).eval()
    images = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    with torch.no_grad():
        ref = gen(images, labels=labels).cam
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = gen(images, labels=labels).cam
    assert low.dtype == torch.float32 and low.shape == ref.shape
    assert torch.isfinite(low).all() and (low > 0).any()
