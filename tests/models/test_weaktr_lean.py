"""The WeakTr generator's two paths (issue 14, item 1).

- The materialised path (training, no_grad stages) is bit-identical to the code before the lean path existed:
  `reference_forward` below is that code, frozen here, and a few optimiser steps of stages classify, match and
  refine end in identical weights.
- The lean path (inference mode, eval) gives the same maps and logits to 1e-5.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from semples.config import GeneratorConfig, LossConfig, MaskingConfig
from semples.infer.cams import multiscale_cams
from semples.models.clip import PromptTextEncoder
from semples.models.mask_generators import build_generator, weaktr
from semples.models.mask_generators.base import GeneratorOutput
from semples.stages import ClassifyStage, MatchStage, RefineStage
from tests.conftest import make_generator, toy_batch

NAMES = ["cat", "dog", "boat"]


# ------------------------------------------------------------------------------ the code before (commit 192e77b)
def _reference_block(block, x):
    attn_mod = block.attn
    h = block.norm1(x)
    b, n, c = h.shape
    nh, hd = attn_mod.num_heads, attn_mod.head_dim
    qkv = attn_mod.qkv(h).reshape(b, n, 3, nh, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
    attn = (q * attn_mod.scale) @ k.transpose(-2, -1)
    attn = attn.softmax(dim=-1)
    out = attn_mod.attn_drop(attn) @ v
    out = out.transpose(1, 2).reshape(b, n, nh * hd)
    out = attn_mod.norm(out)
    if getattr(attn_mod, "gate", None) is not None:
        out = out * torch.sigmoid(attn_mod.gate(h))
    out = attn_mod.proj_drop(attn_mod.proj(out))
    x = x + block.drop_path1(block.ls1(out))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, attn


def _reference_fusion(fusion, layers):
    pooled = torch.cat([fusion._pool(a.float()) for a in layers], dim=1)
    gate = torch.sigmoid(fusion.mlp(pooled))
    out, c0 = None, 0
    for a in layers:
        c = a.shape[1]
        part = torch.einsum("bc,bcnm->bnm", gate[:, c0:c0 + c], a.float())
        out = part if out is None else out + part
        c0 += c
    return out / c0


def reference_forward(self, images):
    b, _, height, width = images.shape
    p = self.patch_size
    pad_h, pad_w = (-height) % p, (-width) % p
    x = F.pad(images, (0, pad_w, 0, pad_h)) if (pad_h or pad_w) else images
    with torch.set_grad_enabled(torch.is_grad_enabled() and self.trunk_trainable):
        x_, (gh, gw) = self.embed(x)
        attn = []
        for block in self.blocks:
            x_, a = _reference_block(block, x_)
            attn.append(a.detach())
        tokens = self.norm(x_)
    k = self.num_classes
    class_tokens, patches = tokens[:, :k], tokens[:, k:]
    patches = patches.transpose(1, 2).reshape(b, -1, gh, gw)
    coarse = self.head(patches)
    fused_attn = _reference_fusion(self.fusion, attn)
    cross = fused_attn[:, :k, k:].reshape(b, k, gh, gw)
    patch_attn = fused_attn[:, k:, k:]
    coarse_in = coarse.detach() if self.detach_coarse_in_fusion else coarse
    fused = cross * F.relu(coarse_in.float())
    fine = (fused.flatten(2) @ patch_attn.transpose(1, 2)).reshape(b, k, gh, gw)
    maps = {"coarse": F.relu(coarse), "fused": fused, "fine": fine}
    logits = {"token": class_tokens.mean(-1), "coarse": coarse.mean(dim=(2, 3)), "fine": fine.mean(dim=(2, 3))}
    return GeneratorOutput(cam=maps[self.mask_source], logits=logits, maps=maps,
                           input_size=(height, width), padded_size=(height + pad_h, width + pad_w))


# ---------------------------------------------------------------------------------------- materialised = before
def test_materialised_path_is_bit_identical_to_the_code_before():
    gen = make_generator(3).eval()
    x = torch.randn(2, 3, 61, 45)
    with torch.no_grad():
        new, old = gen(x), reference_forward(gen, x)
    for name in ("coarse", "fused", "fine"):
        assert torch.equal(new.maps[name], old.maps[name]), name
    for name in old.logits:
        assert torch.equal(new.logits[name], old.logits[name]), name


def _train(stage_name: str, clip, forward, steps: int = 3) -> dict[str, torch.Tensor]:
    gen = make_generator(3)
    if stage_name == "classify":
        stage = ClassifyStage(gen)
    elif stage_name == "match":
        stage = MatchStage(gen, clip, NAMES, loss=LossConfig(), masking=MaskingConfig())
    else:
        torch.manual_seed(1)
        prompts = PromptTextEncoder(clip, 3, length=4)
        stage = RefineStage(gen, prompts, clip, NAMES, loss=LossConfig(), masking=MaskingConfig())
    stage.train()
    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=1e-2)
    original = type(gen).forward
    type(gen).forward = forward
    try:
        for i in range(steps):
            out = stage(toy_batch(seed=i))
            out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    finally:
        type(gen).forward = original
    return copy.deepcopy(gen.state_dict())


@pytest.mark.parametrize("stage_name", ["classify", "match", "refine"])
def test_training_steps_end_in_bit_identical_weights(stage_name, tiny_clip):
    new = _train(stage_name, tiny_clip, weaktr.WeakTrViT.forward)
    old = _train(stage_name, tiny_clip, reference_forward)
    assert new.keys() == old.keys()
    different = [k for k in new if not torch.equal(new[k], old[k])]
    assert not different, different
    start = make_generator(3).state_dict()
    assert any(not torch.equal(new[k], start[k]) for k in new)  # the steps did train something


# -------------------------------------------------------------------------------------------- lean = materialised
def _assert_close(a: torch.Tensor, b: torch.Tensor, name: str, rel: float = 1e-5) -> None:
    scale = float(b.abs().max())
    err = float((a - b).abs().max())
    assert err <= rel * max(scale, 1e-12) + 1e-7, f"{name}: max |diff| {err:.3g} vs max |ref| {scale:.3g}"


def _both(gen, x):
    gen.eval()
    gen.lean_min_map_bytes = 0
    with torch.no_grad():
        ref = gen(x)
    with torch.inference_mode():
        lean = gen(x)
    return ref, lean


@pytest.mark.parametrize("bf16_row_maxima", [True, False])
@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("size", [(64, 64), (61, 45), (97, 130)])
def test_lean_path_equals_materialised(pool, size, bf16_row_maxima, monkeypatch):
    monkeypatch.setattr(weaktr, "BF16_ROW_MAXIMA", bf16_row_maxima)
    torch.manual_seed(0)
    cfg = GeneratorConfig(pretrained=False, drop_path=0.0, attention_reduction=1, attention_pool=pool,
                          backbone_kwargs={"embed_dim": 32, "depth": 3, "num_heads": 2, "img_size": 64})
    gen = build_generator(cfg, 5, quiet=True)
    ref, lean = _both(gen, torch.randn(3, 3, *size))
    assert lean.input_size == ref.input_size and lean.padded_size == ref.padded_size
    for name in ("coarse", "fused", "fine"):
        _assert_close(lean.maps[name], ref.maps[name], name)
    for name in ref.logits:
        _assert_close(lean.logits[name], ref.logits[name], name)
    assert torch.equal(lean.cam, lean.maps["fine"])


def test_lean_path_with_more_classes_than_head_width():
    # K = 20 > head_dim 16: the fine map is computed in two blocks of value columns
    gen = make_generator(20)
    assert gen.blocks[0].attn.head_dim < 20
    ref, lean = _both(gen, torch.randn(2, 3, 48, 80))
    for name in ("fused", "fine"):
        _assert_close(lean.maps[name], ref.maps[name], name)


def test_lean_path_in_many_chunks(monkeypatch):
    monkeypatch.setattr(weaktr, "LEAN_CHUNK_ELEMENTS", {"cpu": 500, "other": 500})  # 6 rows of 37 tokens x 2 x 2
    monkeypatch.setattr(weaktr, "_fused_attention_with_lse",
                        lambda q, k, v, scale: (F.scaled_dot_product_attention(q, k, v, scale=scale), None))
    gen = make_generator(5)
    ref, lean = _both(gen, torch.randn(2, 3, 80, 64))
    for name in ("fused", "fine"):
        _assert_close(lean.maps[name], ref.maps[name], name)


def test_lean_path_without_a_fused_kernel_log_sum_exp(monkeypatch):
    # devices whose fused attention returns no log-sum-exp take the chunked explicit pass for the row peaks
    def public_only(q, k, v, scale):
        return F.scaled_dot_product_attention(q, k, v, scale=scale), None

    monkeypatch.setattr(weaktr, "_fused_attention_with_lse", public_only)
    gen = make_generator(4)
    ref, lean = _both(gen, torch.randn(2, 3, 80, 64))
    for name in ("fused", "fine"):
        _assert_close(lean.maps[name], ref.maps[name], name)


def test_attention_statistics_match_the_explicit_map():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 8) for _ in range(3))
    scale = 8 ** -0.5
    attn = ((q * scale) @ k.transpose(-2, -1)).softmax(-1)
    with torch.inference_mode():
        out, peak, rows = weaktr.attention_statistics(q, k, v, scale, 4, "max")
        _, mean, _ = weaktr.attention_statistics(q, k, v, scale, 4, "avg")
        applied = weaktr.attention_apply(q[:, :, 4:] * scale, k, torch.randn(2, 33, 5), skip=4)
    torch.testing.assert_close(out, attn @ v, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(peak, attn.amax(dim=(-2, -1)), rtol=1e-5, atol=0)
    torch.testing.assert_close(mean, attn.mean(dim=(-2, -1)), rtol=1e-5, atol=0)
    torch.testing.assert_close(rows, attn[:, :, :4, 4:], rtol=1e-5, atol=1e-7)
    assert applied.shape == (2, 3, 33, 5)


def test_row_peaks_of_tied_scores():
    # every key equal: each row is uniform, its peak exactly 1/N (the fused-kernel row maxima see N-way ties)
    q = torch.randn(1, 2, 50, 8)
    k = torch.ones(1, 2, 50, 8)
    with torch.inference_mode():
        _, peak, _ = weaktr.attention_statistics(q, k, torch.randn(1, 2, 50, 8), 0.35, 3, "max")
    torch.testing.assert_close(peak, torch.full((1, 2), 1 / 50), rtol=1e-5, atol=0)


def test_which_path_runs(monkeypatch):
    gen = make_generator(3)
    gen.lean_min_map_bytes = 0
    calls = []
    monkeypatch.setattr(type(gen), "_forward_lean",
                        lambda self, x: calls.append("lean") or weaktr.WeakTrViT._forward_materialised(self, x))
    x = torch.randn(1, 3, 32, 32)
    gen.train()
    with torch.inference_mode():
        gen(x)  # training mode: materialised
    gen.eval()
    with torch.no_grad():
        gen(x)  # a stage's frozen forward (no_grad, not inference mode): materialised, as before
    assert calls == []
    with torch.inference_mode():
        gen(x)
    assert calls == ["lean"]
    gen.lean_inference = False
    with torch.inference_mode():
        gen(x)
    assert calls == ["lean"]
    gen.lean_inference = True
    gen.lean_min_map_bytes = 1 * 2 * 2 * (3 + 4) ** 2 * 4 + 1  # one byte more than these maps: materialised
    with torch.inference_mode():
        gen(torch.randn(1, 3, 32, 32))
    assert calls == ["lean"]
    with torch.inference_mode():
        gen(torch.randn(2, 3, 32, 32))
    assert calls == ["lean", "lean"]


def test_multiscale_cams_equal_on_both_paths():
    # the fused map: random attention is nearly uniform, so a random fine map is nearly constant and the per-class
    # min-max of `semples cams` would magnify its float rounding ~100x; the fused map spans its whole range
    gen = make_generator(4).eval()
    gen.mask_source = "fused"
    gen.lean_min_map_bytes = 0
    views = [torch.randn(2, 3, 48, 64), torch.randn(2, 3, 58, 77)]
    classes = [[0, 2], [1]]
    lean = multiscale_cams(gen, views, (48, 64), classes)
    gen.lean_inference = False
    ref = multiscale_cams(gen, views, (48, 64), classes)
    for a, b in zip(lean, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


# ------------------------------------------------------------------- bf16 row maxima with an fp32 recheck (item 1)
def _peaked_attention(n: int, seed: int = 0):
    """Queries, keys and values of 12 maps whose peaks have close competitors: rows 5 and 6 nearly tie."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 6, n, 64, generator=g) for _ in range(3))
    q[:, :, 5] *= 3.0
    q[:, :, 6] = q[:, :, 5] * (1 + 1e-3) + 1e-3 * torch.randn(2, 6, 64, generator=g)
    return q, k, v


@pytest.mark.parametrize("n, scale", [(400, 0.125), (1100, 0.1), (97, 0.2)])
def test_bf16_row_maxima_give_the_exact_peaks(n, scale, monkeypatch):
    q, k, v = _peaked_attention(n)
    qs = q * scale
    explicit = (qs @ k.transpose(-2, -1)).softmax(-1).amax(dim=(-2, -1))
    with torch.inference_mode():
        _, lse = weaktr._fused_attention_with_lse(q, k, v, scale)
        peak = weaktr._bf16_bounded_peak(qs, k, lse)
        # counter-check: bf16 scores alone miss the peaks by far more than the tolerance
        scores = (qs.to(torch.bfloat16) @ k.to(torch.bfloat16).transpose(-2, -1)).float()
        rough = torch.exp(scores.amax(-1) - lse).amax(-1)
        monkeypatch.setattr(weaktr, "BF16_ROW_MAXIMA", True)
        through = weaktr.attention_statistics(q, k, v, scale, 4, "max")[1]
    assert lse is not None and peak is not None, "the recheck should hold few candidate rows here"
    torch.testing.assert_close(peak, explicit, rtol=1e-5, atol=0)
    torch.testing.assert_close(through, explicit, rtol=1e-5, atol=0)
    assert ((rough - explicit).abs() / explicit).max() > 1e-4


def test_bf16_score_error_stays_inside_its_bound():
    # the bound eps_i = 2^-6 ||q_i|| max_j ||k_j||, on inputs of very different magnitudes and signs
    g = torch.Generator().manual_seed(1)
    for magnitude in (1e-3, 1.0, 30.0):
        q = torch.randn(12, 300, 64, generator=g) * magnitude * torch.rand(12, 300, 1, generator=g)
        k = torch.randn(12, 300, 64, generator=g) * torch.rand(12, 1, 64, generator=g) * 4
        exact = q @ k.transpose(1, 2)
        rough = (q.to(torch.bfloat16) @ k.to(torch.bfloat16).transpose(1, 2)).float()
        eps = 2.0 ** -6 * q.norm(dim=-1) * k.norm(dim=-1).amax(dim=-1, keepdim=True)
        assert ((rough - exact).abs().amax(-1) <= eps).all()


def test_bf16_row_maxima_give_way_when_many_rows_compete(monkeypatch):
    # near-uniform maps (every row a candidate): the fused row-maxima pass runs instead, same peaks
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 200, 16, generator=g) for _ in range(3))
    q, k = q * 1e-2, k * 1e-2
    with torch.inference_mode():
        _, lse = weaktr._fused_attention_with_lse(q, k, v, 0.25)
        assert weaktr._bf16_bounded_peak(q * 0.25, k, lse) is None
        monkeypatch.setattr(weaktr, "BF16_ROW_MAXIMA", True)
        peak = weaktr.attention_statistics(q, k, v, 0.25, 3, "max")[1]
    explicit = ((q * 0.25) @ k.transpose(-2, -1)).softmax(-1).amax(dim=(-2, -1))
    torch.testing.assert_close(peak, explicit, rtol=1e-5, atol=0)


def test_bf16_row_maxima_follow_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(weaktr, "BF16_ROW_MAXIMA", None)
    monkeypatch.setattr(weaktr, "_CPU_HAS_BF16", None)
    with open("/proc/cpuinfo") as f:
        flags = next((line for line in f if line.startswith("flags")), "").split()
    assert weaktr.bf16_row_maxima_enabled() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    monkeypatch.setattr(weaktr, "BF16_ROW_MAXIMA", False)
    assert weaktr.bf16_row_maxima_enabled() is False
