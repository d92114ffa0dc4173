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

    def forward(self, attn: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        layers = [attn] if isinstance(attn, torch.Tensor) else list(attn)
        pooled = torch.cat([self._pool(a.float()) for a in layers], dim=1)  # (B, C)
        gate = torch.sigmoid(self.mlp(pooled))  # (B, C)
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


def block_with_attention(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One timm ViT block, also returning its attention probabilities (B, heads, N, N)."""
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


class WeakTrViT(MaskGenerator):
    """K-class-token ViT with a coarse conv head and adaptive attention fusion (see module docstring).

    Args:
        num_classes: K foreground classes.
        vit: a timm VisionTransformer (DeiT-S/16 for real runs); its head is unused.
        attention_reduction: hidden = (layers × heads) / reduction in the gating MLP.
        attention_pool: "max" or "avg" pooling of each attention map before the MLP.
        mask_source: which map is returned as `cam`: "fine" (default), "fused" or "coarse".
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
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trunk_trainable):
            tokens, attn, (gh, gw) = self._trunk(x)
        k = self.num_classes
        class_tokens, patches = tokens[:, :k], tokens[:, k:]
        patches = patches.transpose(1, 2).reshape(b, -1, gh, gw)
        coarse = self.head(patches)
        fused_attn = self.fusion(attn)  # (B, N, N)
        cross = fused_attn[:, :k, k:].reshape(b, k, gh, gw)
        patch_attn = fused_attn[:, k:, k:]
        coarse_in = coarse.detach() if self.detach_coarse_in_fusion else coarse
        fused = cross * F.relu(coarse_in.float())
        fine = (fused.flatten(2) @ patch_attn.transpose(1, 2)).reshape(b, k, gh, gw)
        maps = {"coarse": F.relu(coarse), "fused": fused, "fine": fine}
        logits = {"token": class_tokens.mean(-1), "coarse": coarse.mean(dim=(2, 3)), "fine": fine.mean(dim=(2, 3))}
        return GeneratorOutput(cam=maps[self.mask_source], logits=logits, maps=maps,
                               input_size=(height, width), padded_size=(height + pad_h, width + pad_w))


def build_weaktr(cfg, num_classes: int, quiet: bool = False, context=None) -> WeakTrViT:
    """A `WeakTrViT` from a `GeneratorConfig` (`context` is not needed)."""
    vit = create_timm_vit(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.backbone_checkpoint,
                          drop_path=cfg.drop_path, kwargs=cfg.backbone_kwargs, quiet=quiet)
    generator = WeakTrViT(num_classes, vit, cfg.attention_reduction, cfg.attention_pool, cfg.mask_source)
    generator.backbone_weights = vit.weights_record  # what a backbone file loaded (the manifest keeps it)
    return generator
