"""What every final segmentation model is, and how backbones are created (ImageNet weights by name, a file, or
random).

A `SegmentationModel` maps normalised images (B, 3, H, W) of any size to per-pixel class logits (B, C, H, W)
at the input's size, C = K foreground classes + background (label value c = channel c). Inside, each model
computes logits on a coarser grid (`output_stride`) and upsamples them bilinearly; patch-based models pad the
input to a multiple of their patch size and crop the result, so every output pixel stays aligned with its input
pixel.
"""

from __future__ import annotations

import abc

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIG_KEY = "segment.model"  # where SegmenterConfig lives in the experiment config (for error messages)


class SegmentationModel(nn.Module, abc.ABC):
    """Base class of final segmentation models.

    Attributes:
        num_classes: C, output channels (background included).
        output_stride: input pixels per step of the grid `forward_grid` predicts on.
        size_multiple: inputs are padded (bottom/right, zeros = mean colour) to a multiple of this.
        source: description of the backbone weights (for manifests).
    """

    num_classes: int
    output_stride: int = 1
    size_multiple: int = 1
    source: dict

    @abc.abstractmethod
    def forward_grid(self, images: torch.Tensor) -> torch.Tensor:
        """Logits on the model's grid. Shape: images (B, 3, Hp, Wp), multiples of `size_multiple` ->
        (B, C, h, w)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits. Shape: images (B, 3, H, W) -> (B, C, H, W)."""
        h, w = images.shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        padded = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
        logits = self.forward_grid(padded)
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :h, :w]


def create_timm_backbone(name: str, *, pretrained: bool, checkpoint: str | None, kwargs: dict | None = None,
                         quiet: bool = False, what: str = "segmentation backbone", **model_args) -> nn.Module:
    """A timm model by name: ImageNet weights by (timm) name, from an explicit file, or random.

    An explicit file is loaded strictly by `semples.models.weights.load_backbone_weights` (timm's own file loading
    is non-strict for these headless models: a file that fits nothing would leave random weights without a word);
    what loaded is kept as ``model.weights_record``.

    Args:
        name: timm architecture (optionally with a pretrained tag, e.g. ``resnet101.tv_in1k``).
        pretrained: download (or read from the HF cache) the ImageNet weights named by `name`.
        checkpoint: explicit weights file (a timm/torchvision state dict); takes precedence over `pretrained`.
        kwargs: user architecture overrides (tiny test variants), from the config.
        quiet: no warning about random weights (weights are loaded from a checkpoint right after).
        what: how log/error messages name the model.
        **model_args: arguments of the model family (features_only, output_stride, dynamic_img_size, ...).

    Raises:
        WeightsError: the weights cannot be found (offline) or do not fit; the message says what to pass.
    """
    from semples.models.weights import create_timm_model

    return create_timm_model(name, pretrained=pretrained, checkpoint=checkpoint, config_key=CONFIG_KEY, what=what,
                             quiet=quiet, **{**model_args, **(kwargs or {})})


def weights_source(name: str, pretrained: bool, checkpoint: str | None, record: dict | None = None) -> dict:
    """How the backbone was initialised, for the run manifest. `record`: what a file loaded
    (`load_backbone_weights`); kept without the file's hash, which is not an identity of the run (a resume builds
    the architecture without reading the file, its checkpoint replaces every weight)."""
    if checkpoint:
        out = {"backbone": name, "weights": "file", "path": str(checkpoint)}
        if record:
            out["loaded"] = {k: v for k, v in record.items() if k not in ("path", "sha256")}
        return out
    return {"backbone": name, "weights": "imagenet (timm)" if pretrained else "random"}
