"""What every final segmentation model is, and how backbones are created (ImageNet weights by name, a file, or
random).

A `SegmentationModel` maps normalised images (B, 3, H, W) of any size to per-pixel class logits (B, C, H, W)
at the input's size, C = K foreground classes + background (label value c = channel c). Inside, each model
computes logits on a coarser grid (`output_stride`) and upsamples them bilinearly; models that need it pad the
input to a multiple of their stride or patch size (`size_multiple`) and crop the result, so every output pixel
stays aligned with its input pixel. `loss(images, masks)` is the model's training loss on (pseudo) masks:
per-pixel cross-entropy by default; Mask2Former brings its own (matching + mask and class losses).

Backbone weights come from one of three places: ImageNet weights by (timm / SMP / HF hub) name, an explicit file
(strictly: `semples.models.weights.load_backbone_weights` for the timm ViT backbones, `load_backbone_file` for SMP
encoders), or random with a warning.
"""

from __future__ import annotations

import abc

import torch
import torch.nn as nn
import torch.nn.functional as F

from semples.errors import WeightsError

CONFIG_KEY = "segment.model"  # where SegmenterConfig lives in the experiment config (for error messages)


class SegmentationModel(nn.Module, abc.ABC):
    """Base class of final segmentation models.

    Attributes:
        num_classes: C, output channels (background included).
        output_stride: input pixels per step of the grid `forward_grid` predicts on.
        size_multiple: inputs are padded (bottom/right, zeros = mean colour) to a multiple of this.
        source: description of the backbone weights (for manifests).
        channels_last_inference: forwards without autograd (evaluation, prediction) take their input in
            channels_last memory format — convolutional models run ~1.3x faster so on CPU (oneDNN; measured in
            benchmarks/RESULTS.md), training forwards are untouched. Convolutional families set it.
    """

    num_classes: int
    output_stride: int = 1
    size_multiple: int = 1
    source: dict
    channels_last_inference: bool = False
    backbone_prefix: str = ""  # name of the backbone submodule (its parameters can get their own lr)

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
        if self.channels_last_inference and not torch.is_grad_enabled():
            padded = padded.contiguous(memory_format=torch.channels_last)
        logits = self.forward_grid(padded)
        if logits.shape[-2:] != padded.shape[-2:]:
            logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :h, :w]

    def loss(self, images: torch.Tensor, masks: torch.Tensor, ignore_index: int = 255) -> dict[str, torch.Tensor]:
        """The training loss on (pseudo) masks: {"loss": total, "<part>_loss": ...}.

        Shape: images (B, 3, H, W) normalised; masks (B, H, W) int64 labels in 0..C-1 or `ignore_index`.
        """
        from semples.losses.segmentation import segmentation_cross_entropy

        loss = segmentation_cross_entropy(self(images), masks, ignore_index)
        return {"loss": loss, "ce_loss": loss}


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


def load_backbone_file(module: nn.Module, path: str, *, what: str = "backbone") -> None:
    """Loads an explicit weights file into a backbone (``segment.model.backbone_checkpoint``).

    Accepts a plain state dict or one wrapped under "state_dict" / "model" / "module", with or without a
    "module." / "model." / "encoder." / "backbone." prefix; classifier keys that a feature backbone lacks (fc,
    head, classifier) are dropped. Every backbone weight must be in the file with the right shape.

    Raises:
        WeightsError: missing/unreadable file, or weights that do not fit (the message names the first key).
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise WeightsError(f"{path}: cannot load as {what} weights ({type(e).__name__}: {e})") from e
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: cannot load as {what} weights (not a state dict of tensors)")
    own = module.state_dict()
    for prefix in ("module.", "model.", "encoder.", "backbone."):
        if not any(k in own for k in state) and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    heads = ("fc.", "head.", "classifier.", "head_dist.", "pre_logits.")
    state = {k: v for k, v in state.items() if k in own or not k.startswith(heads)}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or bad:
        detail = (f"{bad[0]} is {tuple(state[bad[0]].shape)} in the file, {tuple(own[bad[0]].shape)} here" if bad
                  else f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        raise WeightsError(f"{path}: cannot load as {what} weights: they do not fit ({detail})")
    module.load_state_dict(state, strict=False)


def weights_source(name: str, pretrained: bool, checkpoint: str | None, record: dict | None = None) -> dict:
    """How the backbone was initialised, for the run manifest. `record`: what a file loaded
    (`load_backbone_weights`); kept without the file's hash, which is not an identity of the run (a resume builds
    the architecture without reading the file, its checkpoint replaces every weight)."""
    if checkpoint:
        out = {"backbone": name, "weights": "file", "path": str(checkpoint)}
        if record:
            out["loaded"] = {k: v for k, v in record.items() if k not in ("path", "sha256")}
        return out
    return {"backbone": name, "weights": "imagenet" if pretrained else "random"}
