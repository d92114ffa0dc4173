"""A readable pass through open_clip's vision transformer, for the methods that need more than `encode_image`.

CLIP Grad-CAM (FMA-WSSS / CLIP-ES, METHOD.md §2) needs, for images of any size:

- the patch tokens, with the position embedding interpolated to the image's patch grid;
- the input of the last block and its LN1 output A (the Grad-CAM activation), and the rest of that block run
  from A so that gradients w.r.t. A exist and are themselves differentiable (create_graph);
- the self-attention probabilities of the last blocks (class-aware attention affinity, CAA);
- every token projected into the joint space (ln_post, then proj), to pool the patch tokens.

open_clip's forward gives none of these, and its "custom" blocks use fused SDPA, which returns no attention
weights and whose backward is not twice differentiable on every device. So the blocks whose attention or double
backward is needed are computed here from their own weights (`block_forward`); all other blocks run through
their own fast forward. Nothing here patches open_clip; the functions only read a frozen model's modules.

Supported: open_clip ``VisionTransformer`` with a learnable position embedding, batch-first blocks (open_clip's
``ResidualAttentionBlock`` with ``nn.MultiheadAttention`` or ``CustomResidualAttentionBlock``), no attentional
pooler and no scaled-cosine attention — which covers the OpenAI / LAION ViT-B/16, ViT-B/32, ViT-L/14 models.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from semples.errors import WeightsError


def check_visual(visual: nn.Module) -> None:
    """Raises WeightsError when `visual` is not an open_clip ViT this module can run."""
    for attr in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj"):
        if not hasattr(visual, attr):
            raise WeightsError(f"CLIP image tower {type(visual).__name__} has no '{attr}': CLIP Grad-CAM needs an "
                               "open_clip VisionTransformer (e.g. ViT-B-16)")
    if getattr(visual, "attn_pool", None) is not None:
        raise WeightsError("CLIP image towers with an attentional pooler (CoCa) are not supported by CLIP Grad-CAM")
    if visual.proj is None:
        raise WeightsError("CLIP image tower has no output projection (pruned head): cannot project patch tokens")
    if not getattr(visual.transformer, "batch_first", True):
        raise WeightsError("CLIP image tower runs sequence-first blocks; only batch-first towers are supported")
    attn = visual.transformer.resblocks[0].attn
    if getattr(attn, "logit_scale", None) is not None:
        raise WeightsError("CLIP image towers with scaled-cosine attention are not supported by CLIP Grad-CAM")


def patch_size(visual: nn.Module) -> int:
    """Side of the square patches of the image tower."""
    k = visual.conv1.kernel_size
    return int(k[0] if isinstance(k, (tuple, list)) else k)


def native_grid(visual: nn.Module) -> tuple[int, int]:
    """(h, w) patch grid the position embedding was trained for."""
    n = visual.positional_embedding.shape[0] - 1
    grid = getattr(visual, "grid_size", None)
    if grid is not None and grid[0] * grid[1] == n:
        return int(grid[0]), int(grid[1])
    side = int(round(n ** 0.5))
    return side, side


def embed(visual: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Patch embedding + class token + position embedding (bicubically interpolated to the grid) + ln_pre.

    Shape: images (B, 3, H, W) CLIP-normalised, H and W multiples of the patch size.
    Returns tokens (B, 1 + h·w, D) (class token first) and the grid (h, w).
    """
    x = visual.conv1(images.to(visual.conv1.weight.dtype))  # (B, D, h, w)
    h, w = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    pos = visual.positional_embedding.to(x.dtype)
    cls_pos, patch_pos = pos[:1], pos[1:]
    grid = native_grid(visual)
    if (h, w) != grid:
        d = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, grid[0], grid[1], d).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos.float(), size=(h, w), mode="bicubic", align_corners=False)
        patch_pos = patch_pos.to(x.dtype).permute(0, 2, 3, 1).reshape(h * w, d)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + torch.cat([cls_pos, patch_pos])[None]
    return visual.ln_pre(x), (int(h), int(w))


def self_attention(block: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's multi-head self-attention on its normalised input, computed from the block's own weights.

    Plain softmax attention (no fused kernel), so the attention probabilities are available and the result is
    differentiable twice.

    Shape: h (B, N, D) = LN1 output. Returns (out (B, N, D) after the output projection, attn (B, heads, N, N)).
    """
    mod = block.attn
    b, n, d = h.shape
    if isinstance(mod, nn.MultiheadAttention):
        heads = mod.num_heads
        weight, bias, out_proj = mod.in_proj_weight, mod.in_proj_bias, mod.out_proj
        q_norm = k_norm = nn.Identity()
        head_scale, inner_norm = None, nn.Identity()
    else:  # open_clip.transformer.Attention (custom blocks)
        heads = mod.num_heads
        weight, bias, out_proj = mod.in_proj_weight, mod.in_proj_bias, mod.out_proj
        q_norm, k_norm = mod.ln_q, mod.ln_k
        head_scale, inner_norm = mod.head_scale, mod.ln_inner
    hd = d // heads
    q, k, v = F.linear(h, weight, bias).chunk(3, dim=-1)
    q = q_norm(q.reshape(b, n, heads, hd).transpose(1, 2))
    k = k_norm(k.reshape(b, n, heads, hd).transpose(1, 2))
    v = v.reshape(b, n, heads, hd).transpose(1, 2)
    attn = ((q * hd ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    out = attn @ v
    if head_scale is not None:
        out = out * head_scale
    out = inner_norm(out.transpose(1, 2).reshape(b, n, d))
    return out_proj(out), attn


def block_forward(block: nn.Module, x: torch.Tensor, ln1: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One residual attention block of the image tower, from its own weights.

    Args:
        block: an open_clip ``ResidualAttentionBlock`` or ``CustomResidualAttentionBlock``.
        x: (B, N, D) the block input (the residual stream).
        ln1: (B, N, D) the block's LN1 output to use instead of ``ln_1(x)`` — the Grad-CAM activation A, handed
            in as a tensor that requires grad, so that d(output)/dA exists.

    Returns:
        (the block output (B, N, D), attention probabilities (B, heads, N, N)).
    """
    h = block.ln_1(x) if ln1 is None else ln1
    out, attn = self_attention(block, h)
    out = getattr(block, "ln_attn", nn.Identity())(out)
    x = x + block.ls_1(out)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, attn


def run_blocks(visual: nn.Module, x: torch.Tensor, stop: int, attention_from: int | None = None
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Runs blocks ``0 .. stop-1`` on tokens `x`; blocks from index `attention_from` on also return attention.

    Blocks whose attention is not asked for run through their own (fused, fast) forward.

    Returns:
        (tokens after block stop-1 (B, N, D), attention maps (B, heads, N, N) of blocks attention_from..stop-1).
    """
    attns = []
    for i, block in enumerate(visual.transformer.resblocks[:stop]):
        if attention_from is not None and i >= attention_from:
            x, attn = block_forward(block, x)
            attns.append(attn)
        else:
            x = block(x)
    return x, attns


def project_tokens(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every token in the joint embedding space: ``ln_post(x) @ proj``. Shape: (B, N, D) -> (B, N, E)."""
    return visual.ln_post(x) @ visual.proj


def patch_feature(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The image feature of FMA-WSSS: the mean of the projected patch tokens (class token left out), not
    normalised. Shape: tokens after the last block (B, 1 + h·w, D) -> (B, E)."""
    return project_tokens(visual, x)[:, 1:].mean(dim=1)


__all__ = ["block_forward", "check_visual", "embed", "native_grid", "patch_feature", "patch_size", "project_tokens",
           "run_blocks", "self_attention"]
