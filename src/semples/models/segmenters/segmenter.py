"""Segmenter: a plain ViT encoder with a linear or a mask-transformer decoder.

Paper: Strudel et al., "Segmenter: Transformer for Semantic Segmentation" (ICCV 2021); WeakTr and SemPLeS report
Segmenter with a DeiT-S/16 encoder. The encoder is a timm ViT run on any input size (the position embedding is
interpolated to the patch grid); its patch tokens (B, N, D) on the grid (h, w) = (H/16, W/16) are decoded by

    linear            logits = Linear(LayerNorm(tokens))                                   (B, C, h, w)
    mask transformer  C learnable class embeddings join the projected patch tokens for a few transformer
                      layers; masks = <L2norm(W_p · patch), L2norm(W_c · class)> for every (patch, class),
                      followed by a LayerNorm over the classes                             (B, C, h, w)

and upsampled bilinearly to the (padded) input.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from semples.errors import ConfigError, WeightsError
from semples.models.segmenters.base import SegmentationModel, create_timm_backbone, weights_source


class LinearDecoder(nn.Module):
    """Shape: tokens (B, N, D), grid (h, w) with N = h·w -> logits (B, C, h, w)."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        logits = self.head(self.dropout(self.norm(tokens)))  # (B, N, C)
        return logits.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


class MaskTransformerDecoder(nn.Module):
    """Segmenter's mask transformer. Shape: tokens (B, N, D_in), grid (h, w) -> logits (B, C, h, w).

    Args:
        in_dim: width of the encoder's tokens.
        num_classes: C (one learnable class embedding each).
        dim: decoder width; heads: attention heads; depth: transformer layers (pre-norm, GELU MLP × 4).
        dropout: dropout inside the layers.
    """

    def __init__(self, in_dim: int, num_classes: int, *, dim: int, depth: int = 2, heads: int = 6,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.proj_in = nn.Linear(in_dim, dim)
        self.class_embed = nn.Parameter(torch.randn(1, num_classes, dim) * 0.02)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout, activation="gelu",
                                       batch_first=True, norm_first=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        scale = dim ** -0.5
        self.proj_patch = nn.Parameter(scale * torch.randn(dim, dim))
        self.proj_classes = nn.Parameter(scale * torch.randn(dim, dim))
        self.mask_norm = nn.LayerNorm(num_classes)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, _ = tokens.shape
        x = torch.cat([self.proj_in(tokens), self.class_embed.expand(b, -1, -1)], dim=1)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        patches = F.normalize(x[:, :n] @ self.proj_patch, dim=-1)
        classes = F.normalize(x[:, n:] @ self.proj_classes, dim=-1)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # (B, N, C)
        return masks.transpose(1, 2).reshape(b, -1, *grid)


class Segmenter(SegmentationModel):
    """A timm ViT encoder (dynamic image size) + a decoder over its patch tokens (WeakTr's final model; kept here
    because neither segmentation_models_pytorch nor HF transformers has Segmenter).

    Args:
        vit: a timm VisionTransformer built with ``num_classes=0, dynamic_img_size=True``.
        decoder: `LinearDecoder` or `MaskTransformerDecoder` for the ViT's width.
        num_classes: C (background included).
    """

    def __init__(self, vit: nn.Module, decoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = vit
        self.decoder = decoder
        self.num_classes = num_classes
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.output_stride = self.patch_size
        self.size_multiple = self.patch_size
        self.num_prefix_tokens = int(getattr(vit, "num_prefix_tokens", 1))
        self.source = {}
        self.backbone_prefix = "encoder"

    def forward_grid(self, images: torch.Tensor) -> torch.Tensor:
        grid = (images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size)
        tokens = self.encoder.forward_features(images)[:, self.num_prefix_tokens:]
        return self.decoder(tokens, grid)


def _vit(cfg, quiet: bool) -> tuple[nn.Module, str]:
    name = cfg.encoder or "deit_small_patch16_224"
    vit = create_timm_backbone(name.removeprefix("tu-"), pretrained=cfg.pretrained,
                               checkpoint=cfg.backbone_checkpoint, kwargs=cfg.encoder_kwargs, quiet=quiet,
                               num_classes=0, dynamic_img_size=True,
                               drop_path_rate=cfg.drop_path)
    if not hasattr(vit, "patch_embed") or not hasattr(vit, "forward_features"):
        raise WeightsError(f"Segmenter needs a timm ViT backbone (e.g. deit_small_patch16_224), got {name}")
    return vit, name


def build_segmenter_linear(cfg, num_classes: int, quiet: bool = False) -> Segmenter:
    """Segmenter with a linear decoder from a `SegmenterConfig` (`encoder` defaults to DeiT-S/16)."""
    vit, name = _vit(cfg, quiet)
    model = Segmenter(vit, LinearDecoder(vit.embed_dim, num_classes, cfg.dropout), num_classes)
    model.source = weights_source(name, cfg.pretrained, cfg.backbone_checkpoint)
    return model


def build_segmenter_mask(cfg, num_classes: int, quiet: bool = False) -> Segmenter:
    """Segmenter with a mask-transformer decoder (Segmenter paper: 2 layers, width = encoder width, 64-wide heads)."""
    vit, name = _vit(cfg, quiet)
    dim = cfg.decoder_dim or vit.embed_dim
    heads = cfg.decoder_heads or max(1, math.ceil(dim / 64))
    if dim % heads:
        raise ConfigError(f"segment.model.decoder_dim {dim} is not divisible by decoder_heads {heads}")
    decoder = MaskTransformerDecoder(vit.embed_dim, num_classes, dim=dim, depth=cfg.decoder_layers, heads=heads,
                                     dropout=cfg.dropout)
    model = Segmenter(vit, decoder, num_classes)
    model.source = weights_source(name, cfg.pretrained, cfg.backbone_checkpoint)
    return model
