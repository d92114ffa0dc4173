"""WeakTr / MCTformer-style mask generator on a timm ViT (METHOD.md §1.6).

Papers: MCTformer (Xu et al., CVPR 2022) — K class tokens; WeakTr (Zhu et al., 2023) — adaptive fusion of all
heads' attention maps. The ViT's single class token is replaced by K class tokens. From the last layer:

    coarse = Conv3x3(patch tokens)                              (B, K, h, w)
    A      = Σ_heads,layers gate_i · attn_i / (L·H)            gate = sigmoid(MLP(pool(attn_i)))
    fused  = A[class -> patch] ⊙ ReLU(coarse)
    fine   = A[patch -> patch] @ fused                          the map that becomes the soft mask

Attention maps enter the fusion detached (as in WeakTr): the fine map trains the conv head and the gating MLP.
The trunk (patch embedding, class tokens, position embedding, blocks) can be frozen; it then runs under
no_grad, which is what the SemPLeS stages do by default.

Two ways to compute the same maps:

- *materialised* (training, and every forward outside inference mode): each block's attention probabilities
  (B, H, N, N) are kept for the fusion — L·H maps, ~0.9 GB per 480x640 view in fp32 for DeiT-S.
- *lean* (under ``torch.inference_mode``, i.e. `semples cams`, when the maps would take ≥ `lean_min_map_bytes`):
  no map is kept. Each block runs fused SDPA, which also gives every row's log-sum-exp on CPU, and a second fused
  pass for the row maxima (or, elsewhere, one explicit pass over its scores in row chunks): together the peak
  max_j p_ij of every row (max pooling; average pooling is exactly 1/N); the K class-token rows are computed
  explicitly; the block's scaled queries and keys are kept (hd/N of a map's size). After the last block, with the
  gates and the fused map known, each layer's patch→patch product ``P_l @ fused`` is recomputed as one fused SDPA
  whose values are the fused map. Equal to the materialised path to float rounding (tests: 1e-5); the fine map
  cannot be accumulated earlier, because ``fused`` needs the last layer's tokens and every layer's gate.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from semples.errors import WeightsError
from semples.models.mask_generators.base import GeneratorOutput, MaskGenerator
from semples.models.weights import create_timm_model


def create_timm_vit(backbone: str, *, pretrained: bool, checkpoint: str | None, drop_path: float,
                    kwargs: dict | None = None, quiet: bool = False) -> nn.Module:
    """A timm backbone of a mask generator (``num_classes=0``): ImageNet weights by name, an explicit file (loaded
    strictly, whatever its wrapper and key prefix: `semples.models.weights`), or random with a warning.

    Raises:
        WeightsError: the weights cannot be found (offline) or do not fit; the message says what to pass.
    """
    return create_timm_model(backbone, pretrained=pretrained, checkpoint=checkpoint, config_key="generator",
                             what="mask generator backbone", quiet=quiet, num_classes=0, drop_path_rate=drop_path,
                             **dict(kwargs or {}))


class AttentionFusion(nn.Module):
    """Learned per-head weighting of attention maps: pool each map, MLP, sigmoid gate, weighted mean.

    Shape: attn (B, C, N, N) with C = layers × heads, or a list of per-layer (B, H, N, N) maps -> (B, N, N).
    The list form never stacks the layers: at inference on full-size images the stacked copy of all L·H maps
    would be the largest tensor of the whole forward pass.
    """

    def __init__(self, channels: int, reduction: int = 8, pool: str = "max") -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.pool = pool
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def _pool(self, attn: torch.Tensor) -> torch.Tensor:
        return attn.amax(dim=(-2, -1)) if self.pool == "max" else attn.mean(dim=(-2, -1))

    def gates(self, pooled: torch.Tensor) -> torch.Tensor:
        """Per-map weights in (0, 1). Shape: pooled (B, C) -> (B, C)."""
        return torch.sigmoid(self.mlp(pooled))

    def forward(self, attn: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        layers = [attn] if isinstance(attn, torch.Tensor) else list(attn)
        pooled = torch.cat([self._pool(a.float()) for a in layers], dim=1)  # (B, C)
        gate = self.gates(pooled)  # (B, C)
        out, c0 = None, 0
        for a in layers:
            c = a.shape[1]
            part = torch.einsum("bc,bcnm->bnm", gate[:, c0:c0 + c], a.float())
            out = part if out is None else out + part
            c0 += c
        return out / c0


class TokenEmbedding(nn.Module):
    """Patch embedding + K class tokens + patch position embedding (interpolated to any grid)."""

    def __init__(self, vit: nn.Module, num_classes: int) -> None:
        super().__init__()
        if getattr(vit, "num_prefix_tokens", 1) != 1 or getattr(vit, "cls_token", None) is None:
            raise WeightsError("the mask generator needs a ViT with exactly one class token and no register tokens")
        self.patch_embed = vit.patch_embed
        self.patch_size = int(self.patch_embed.patch_size[0])
        self.grid = tuple(int(g) for g in self.patch_embed.grid_size)
        pos = vit.pos_embed.detach()
        cls_pos = pos[:, :1] if pos.shape[1] == self.grid[0] * self.grid[1] + 1 else torch.zeros_like(pos[:, :1])
        patch_pos = pos[:, -self.grid[0] * self.grid[1]:]
        self.pos_embed = nn.Parameter(patch_pos.clone(memory_format=torch.contiguous_format))
        # every class token starts from the pretrained class token (+ its position embedding)
        self.class_tokens = nn.Parameter((vit.cls_token.detach() + cls_pos).repeat(1, num_classes, 1).clone())
        self.norm_pre = getattr(vit, "norm_pre", nn.Identity())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 3, Hp, Wp) with Hp, Wp multiples of the patch size -> tokens (B, K + h·w, D), (h, w)."""
        x = self.patch_embed.proj(images)  # (B, D, h, w)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = self.patch_embed.norm(x)
        pos = self.pos_embed
        if (h, w) != self.grid:
            d = pos.shape[-1]
            pos = pos.reshape(1, self.grid[0], self.grid[1], d).permute(0, 3, 1, 2)
            pos = F.interpolate(pos, size=(h, w), mode="bicubic", align_corners=False)
            pos = pos.permute(0, 2, 3, 1).reshape(1, h * w, d)
        x = x + pos
        x = torch.cat([self.class_tokens.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm_pre(x), (h, w)


def _qkv(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """LN1 output h (B, N, D) and the normalised queries, keys and values (B, heads, N, head_dim) of a timm block."""
    attn_mod = block.attn
    h = block.norm1(x)
    b, n, _ = h.shape
    qkv = attn_mod.qkv(h).reshape(b, n, 3, attn_mod.num_heads, attn_mod.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return h, attn_mod.q_norm(q), attn_mod.k_norm(k), v


def _block_rest(block: nn.Module, x: torch.Tensor, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The block after its attention: heads merged (out (B, heads, N, hd)), projection, residuals, MLP."""
    attn_mod = block.attn
    b, n, _ = x.shape
    out = out.transpose(1, 2).reshape(b, n, attn_mod.num_heads * attn_mod.head_dim)
    out = attn_mod.norm(out)
    if getattr(attn_mod, "gate", None) is not None:
        out = out * torch.sigmoid(attn_mod.gate(h))
    out = attn_mod.proj_drop(attn_mod.proj(out))
    x = x + block.drop_path1(block.ls1(out))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def block_with_attention(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One timm ViT block, also returning its attention probabilities (B, heads, N, N)."""
    attn_mod = block.attn
    h, q, k, v = _qkv(block, x)
    attn = (q * attn_mod.scale) @ k.transpose(-2, -1)
    attn = attn.softmax(dim=-1)
    out = attn_mod.attn_drop(attn) @ v
    return _block_rest(block, x, h, out), attn


# score elements per chunk of the explicit pass over a layer's scores (devices whose fused attention returns no
# log-sum-exp): ~4 MB of fp32 on CPU stays in cache and below glibc's mmap threshold (a fresh mmap page-faults on
# every touch); GPUs take 256 MB chunks (few kernel launches; the memory is there)
LEAN_CHUNK_ELEMENTS = {"cpu": 1 << 20, "other": 1 << 26}
# a fused kernel run with scores x beta returns log-sum-exp(beta·s) / beta in [max s, max s + log(N)/beta]: the
# row maxima within 4.5e-7 for N up to 1750 (5e-7 at 4000), below the float error of the scores themselves
ROW_MAX_BETA = 2.0 ** 24


def _fused_attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(scale·q kᵀ) v by a fused kernel, with the rows' log-sum-exp where the kernel returns it (CPU).

    Shape: q, k, v (B, H, N, hd) -> out (B, H, N, hd), lse (B, H, N) or None.
    """
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if q.device.type == "cpu" and op is not None and q.dtype == k.dtype == v.dtype:
        try:
            out, lse = op(q, k, v, 0.0, False, attn_mask=None, scale=scale)[:2]
            return out, lse
        except RuntimeError:  # an input this kernel does not take: the public path below
            pass
    return F.scaled_dot_product_attention(q, k, v, scale=scale), None


# bf16 row maxima (see `_bf16_bounded_peak`): None = where the CPU has bf16 GEMM instructions (avx512_bf16 or
# AMX, read from /proc/cpuinfo), True / False forces it (tests, benchmarks)
BF16_ROW_MAXIMA: bool | None = None
# rows per bf16 score chunk (B·H·rows·N elements at a time: ~5 MB at N = 1,750, 12 maps)
BF16_ROW_CHUNK = 256
# above this share of candidate rows the fp32 recheck costs more than the fused row-maxima pass it replaces
BF16_MAX_CANDIDATE_SHARE = 0.2
_CPU_HAS_BF16: bool | None = None


def bf16_row_maxima_enabled() -> bool:
    """Whether the lean path takes bf16 row maxima (`BF16_ROW_MAXIMA`; auto: the CPU's flags)."""
    global _CPU_HAS_BF16
    if BF16_ROW_MAXIMA is not None:
        return BF16_ROW_MAXIMA
    if _CPU_HAS_BF16 is None:
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                flags = next((line for line in f if line.startswith("flags")), "").split()
        except OSError:
            flags = []
        _CPU_HAS_BF16 = "avx512_bf16" in flags or "amx_bf16" in flags
    return _CPU_HAS_BF16


def _bf16_bounded_peak(qs: torch.Tensor, k: torch.Tensor, lse: torch.Tensor) -> torch.Tensor | None:
    """Every map's peak max_ij exp(s_ij - lse_i), s = qs kᵀ, exact in fp32, from bf16 scores and a bound.

    The scores in bf16 (inputs rounded, products summed in fp32, result rounded) are within
    eps_i = 2^-6 ||q_i|| max_j ||k_j|| of the fp32 scores (4 bf16 roundings of 2^-8 relative each, bounded by
    Cauchy-Schwarz; a 10% margin for the fp32 sum). With the fused kernel's log-sum-exp, each row's bf16 maximum
    - eps_i bounds its log peak from below, + eps_i from above (amax: a max with indices costs twice as much). Only
    rows whose upper bound reaches the best lower bound of their map can hold the peak: those rows (well under 1%
    on DeiT-S at VOC sizes) get their probabilities recomputed in fp32, by the softmax the materialised path
    takes. Returns None (the caller takes the fused pass) when more than
    `BF16_MAX_CANDIDATE_SHARE` of the rows are candidates.

    Shape: qs (B, H, N, hd) scaled queries, k (B, H, N, hd), lse (B, H, N) -> (B, H) float32.
    """
    b, nh, n, hd = qs.shape
    qf, kf = qs.reshape(b * nh, n, hd), k.reshape(b * nh, n, hd)
    qb, kbt = qf.to(torch.bfloat16), kf.to(torch.bfloat16).transpose(1, 2)
    row_max = [torch.bmm(qb[:, r0:r0 + BF16_ROW_CHUNK], kbt).amax(dim=-1) for r0 in range(0, n, BF16_ROW_CHUNK)]
    approx = torch.cat(row_max, dim=1).float()  # (BH, N)
    lse = lse.reshape(b * nh, n).float()
    eps = 2.0 ** -6 * 1.1 * qf.norm(dim=-1) * kf.norm(dim=-1).amax(dim=-1, keepdim=True)
    best_lower = (approx - eps - lse).amax(dim=-1, keepdim=True)
    # 1e-3 of slack in log space for the fused kernel's log-sum-exp, whose sums run in another order than a GEMM's
    candidates = approx + eps - lse >= best_lower - 1e-3
    if candidates.sum().item() > BF16_MAX_CANDIDATE_SHARE * candidates.numel():
        return None
    peak = torch.empty(b * nh, dtype=torch.float32, device=qs.device)
    for i in range(b * nh):
        rows = candidates[i].nonzero().squeeze(1)  # never empty: the best lower bound's row is a candidate
        # the candidate rows' probabilities as the materialised path computes them (softmax of fp32 scores)
        peak[i] = torch.softmax(qf[i, rows] @ kf[i].transpose(0, 1), dim=-1).amax()
    return peak.view(b, nh)


def attention_statistics(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, num_rows: int,
                         pool: str, chunk_elements: int | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's attention output and what the fusion needs from its map P = softmax(scale·q kᵀ), without
    keeping P.

    Args:
        q, k, v: (B, H, N, hd) queries, keys and values of the layer.
        scale: the attention scale.
        num_rows: R, the leading rows (class tokens) whose probabilities over the other keys are returned.
        pool: "max" (the map's largest probability) or "avg" (its mean, which is exactly 1/N: rows sum to 1).
        chunk_elements: score elements per chunk of the explicit pass (default: `LEAN_CHUNK_ELEMENTS`).

    Returns:
        out (B, H, N, hd) = P v, pooled (B, H) float32, rows (B, H, R, N - R) float32 = P[:, :, :R, R:].
    """
    b, nh, n, hd = q.shape
    out, lse = _fused_attention_with_lse(q, k, v, scale)
    qs = q * scale
    kt = k.transpose(-2, -1)
    rows = torch.softmax((qs[:, :, :num_rows] @ kt).float(), dim=-1)[..., num_rows:]
    if pool != "max":
        return out, torch.full((b, nh), 1.0 / n, dtype=torch.float32, device=q.device), rows
    if lse is not None and q.dtype == torch.float32:
        # the row peak max_j P_ij = exp(max_j s_ij - lse_i): on CPUs with bf16 GEMMs, bounded bf16 row maxima
        # with the few rows that can hold the peak recomputed in fp32 (exact; ~0.35 of a fused pass)
        if bf16_row_maxima_enabled():
            peak = _bf16_bounded_peak(qs, k, lse)
            if peak is not None:
                return out, peak, rows
        # else the row maxima come from the same fused kernel on scores x beta (its output is not used), cheaper
        # on CPU than a GEMM + max over explicit score chunks
        row_max = _fused_attention_with_lse(q, k, v, scale * ROW_MAX_BETA)[1]
        if row_max is not None:
            peak = torch.exp(row_max / ROW_MAX_BETA - lse).amax(dim=-1)
            return out, torch.clamp(peak, max=1.0), rows
    qf, kf = qs.reshape(b * nh, n, hd), k.reshape(b * nh, n, hd).transpose(1, 2)
    budget = chunk_elements or LEAN_CHUNK_ELEMENTS["cpu" if q.device.type == "cpu" else "other"]
    step = max(budget // max(b * nh * n, 1), 1)
    peak = None
    for r0 in range(0, n, step):
        chunk = torch.softmax(torch.bmm(qf[:, r0:r0 + step], kf).float(), dim=-1).amax(dim=-1).amax(dim=-1)
        peak = chunk if peak is None else torch.maximum(peak, chunk)
    return out, peak.view(b, nh), rows


def attention_apply(q: torch.Tensor, k: torch.Tensor, values: torch.Tensor, skip: int) -> torch.Tensor:
    """softmax(q kᵀ)[:, :, :, skip:] @ values, by fused SDPA (no (N, N) map kept).

    Shape: q (B, H, M, hd) already scaled; k (B, H, N, hd); values (B, N - skip, C) shared by all heads ->
    (B, H, M, C). SDPA wants values of the keys' head size, so `values` are zero-padded (keys before `skip` get
    zero rows) and split into blocks of hd columns.
    """
    b, nh, n, hd = k.shape
    c = values.shape[-1]
    outs = []
    for c0 in range(0, c, hd):
        part = values[..., c0:c0 + hd]
        v = values.new_zeros(b, 1, n, hd)
        v[:, 0, skip:, : part.shape[-1]] = part
        out = F.scaled_dot_product_attention(q, k, v.expand(b, nh, n, hd), scale=1.0)
        outs.append(out[..., : part.shape[-1]])
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)


class WeakTrViT(MaskGenerator):
    """K-class-token ViT with a coarse conv head and adaptive attention fusion (see module docstring).

    Args:
        num_classes: K foreground classes.
        vit: a timm VisionTransformer (DeiT-S/16 for real runs); its head is unused.
        attention_reduction: hidden = (layers × heads) / reduction in the gating MLP.
        attention_pool: "max" or "avg" pooling of each attention map before the MLP.
        mask_source: which map is returned as `cam`: "fine" (default), "fused" or "coarse".

    Attributes:
        lean_inference: take the lean path (no attention map kept; see the module docstring) under
            ``torch.inference_mode`` in eval mode. Off: every forward materialises the maps.
        lean_min_map_bytes: inference forwards whose maps (B·L·H·N² fp32) would take less stay materialised:
            small maps cost little to keep and the lean path's two extra passes per layer cost more than they
            save there (benchmarks/cam_forward.py; the synthetic demo's 96 px images never go lean).
    """

    def __init__(self, num_classes: int, vit: nn.Module, attention_reduction: int = 8,
                 attention_pool: str = "max", mask_source: str = "fine") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed = TokenEmbedding(vit, num_classes)
        self.blocks = vit.blocks
        self.norm = vit.norm
        self.patch_size = self.embed.patch_size
        width = self.norm.weight.shape[0] if hasattr(self.norm, "weight") else vit.embed_dim
        heads = self.blocks[0].attn.num_heads
        self.head = nn.Conv2d(width, num_classes, kernel_size=3, padding=1)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.fusion = AttentionFusion(len(self.blocks) * heads, attention_reduction, attention_pool)
        if mask_source not in ("fine", "fused", "coarse"):
            raise ValueError(f"mask_source must be fine, fused or coarse, got {mask_source!r}")
        self.mask_source = mask_source
        self.trunk_trainable = True
        self.detach_coarse_in_fusion = False
        self.lean_inference = True
        self.lean_min_map_bytes = 256 * 2**20

    def trunk_modules(self) -> list[nn.Module]:
        return [self.embed, self.blocks, self.norm]

    def _trunk(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], tuple[int, int]]:
        x, grid = self.embed(images)
        attns = []
        for block in self.blocks:
            x, attn = block_with_attention(block, x)
            attns.append(attn.detach())  # the fusion reads attention, it never trains through it
        return self.norm(x), attns, grid  # attns: L × (B, H, N, N)

    def forward(self, images: torch.Tensor) -> GeneratorOutput:
        b, _, height, width = images.shape
        p = self.patch_size
        pad_h, pad_w = (-height) % p, (-width) % p
        x = F.pad(images, (0, pad_w, 0, pad_h)) if (pad_h or pad_w) else images
        if self._lean(x):
            tokens, coarse, fused, fine, (gh, gw) = self._forward_lean(x)
        else:
            tokens, coarse, fused, fine, (gh, gw) = self._forward_materialised(x)
        k = self.num_classes
        maps = {"coarse": F.relu(coarse), "fused": fused, "fine": fine}
        logits = {"token": tokens[:, :k].mean(-1), "coarse": coarse.mean(dim=(2, 3)), "fine": fine.mean(dim=(2, 3))}
        return GeneratorOutput(cam=maps[self.mask_source], logits=logits, maps=maps,
                               input_size=(height, width), padded_size=(height + pad_h, width + pad_w))

    def _lean(self, x: torch.Tensor) -> bool:
        if not (self.lean_inference and torch.is_inference_mode_enabled() and not self.training):
            return False
        n = self.num_classes + (x.shape[-2] // self.patch_size) * (x.shape[-1] // self.patch_size)
        heads = self.blocks[0].attn.num_heads
        return x.shape[0] * len(self.blocks) * heads * n * n * 4 >= self.lean_min_map_bytes

    def _coarse(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        patches = tokens[:, self.num_classes:]
        return self.head(patches.transpose(1, 2).reshape(tokens.shape[0], -1, *grid))

    def _forward_materialised(self, x: torch.Tensor):
        """Every layer's attention maps kept for the fusion (training; differentiable in head and gates)."""
        b = x.shape[0]
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trunk_trainable):
            tokens, attn, (gh, gw) = self._trunk(x)
        k = self.num_classes
        coarse = self._coarse(tokens, (gh, gw))
        fused_attn = self.fusion(attn)  # (B, N, N)
        cross = fused_attn[:, :k, k:].reshape(b, k, gh, gw)
        patch_attn = fused_attn[:, k:, k:]
        coarse_in = coarse.detach() if self.detach_coarse_in_fusion else coarse
        fused = cross * F.relu(coarse_in.float())
        fine = (fused.flatten(2) @ patch_attn.transpose(1, 2)).reshape(b, k, gh, gw)
        return tokens, coarse, fused, fine, (gh, gw)

    def _forward_lean(self, x: torch.Tensor):
        """The same maps without keeping any (N, N) attention map (inference only; see the module docstring)."""
        b, k = x.shape[0], self.num_classes
        h_, grid = self.embed(x)
        pool = self.fusion.pool
        pooled, cross, keys = [], [], []
        for block in self.blocks:
            h, q, key, v = _qkv(block, h_)
            q, key, v = q.contiguous(), key.contiguous(), v.contiguous()
            out, peak, rows = attention_statistics(q, key, v, block.attn.scale, k, pool)
            pooled.append(peak)
            cross.append(rows)
            keys.append(((q[:, :, k:] * block.attn.scale).contiguous(), key))  # patch queries: for the fine map
            h_ = _block_rest(block, h_, h, out)
        tokens = self.norm(h_)
        coarse = self._coarse(tokens, grid)
        gate = self.fusion.gates(torch.cat(pooled, dim=1).float())  # (B, C)
        channels = gate.shape[1]
        heads = gate.shape[1] // len(keys)
        cross_attn = None
        for i, rows in enumerate(cross):
            part = torch.einsum("bc,bcnm->bnm", gate[:, i * heads:(i + 1) * heads], rows.float())
            cross_attn = part if cross_attn is None else cross_attn + part
        cross_attn = cross_attn / channels  # (B, K, h·w)
        fused = cross_attn.reshape(b, k, *grid) * F.relu(coarse.float())
        values = fused.flatten(2).transpose(1, 2)  # (B, h·w, K)
        fine = None
        for i, (q, key) in enumerate(keys):
            applied = attention_apply(q, key, values.to(q.dtype), skip=k)  # (B, H, h·w, K)
            part = torch.einsum("bc,bcnm->bmn", gate[:, i * heads:(i + 1) * heads], applied.float())
            fine = part if fine is None else fine + part
        fine = (fine / channels).reshape(b, k, *grid)
        return tokens, coarse, fused, fine, grid


def build_weaktr(cfg, num_classes: int, quiet: bool = False, context=None) -> WeakTrViT:
    """A `WeakTrViT` from a `GeneratorConfig` (`context` is not needed)."""
    vit = create_timm_vit(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.backbone_checkpoint,
                          drop_path=cfg.drop_path, kwargs=cfg.backbone_kwargs, quiet=quiet)
    generator = WeakTrViT(num_classes, vit, cfg.attention_reduction, cfg.attention_pool, cfg.mask_source)
    generator.backbone_weights = vit.weights_record  # what a backbone file loaded (the manifest keeps it)
    return generator
