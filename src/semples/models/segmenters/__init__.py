"""Final segmentation models trained on pseudo masks (METHOD.md §1.7).

`SEGMENTERS` is a plain dict (name -> builder(cfg: SegmenterConfig, num_classes, quiet=False)); its keys are the
valid values of ``segment.model.arch``:

    deeplabv3plus ...  every segmentation_models_pytorch architecture (`smp.SMP_ARCHS`: deeplabv3plus — the
                       default, on a dilated ResNet-101 at output stride 16 —, deeplabv3, unet, unetplusplus, manet,
                       linknet, fpn, pspnet, pan, upernet, segformer, dpt) on any timm (``tu-<name>``) or SMP encoder
    mask2former        Mask2Former through HF transformers (semantic segmentation; Swin-L in the paper)
    segmenter_linear   Segmenter: timm ViT (default DeiT-S/16) + linear decoder
    segmenter_mask     Segmenter: timm ViT (default DeiT-S/16) + mask-transformer decoder

Segmenter (WeakTr's final model) is written here because neither segmentation_models_pytorch (0.6: the twelve
architectures above) nor HF transformers (5.x: no Segmenter) has it.

Every model maps normalised images (B, 3, H, W) to logits (B, C, H, W), C = K + 1 (background = channel 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from semples.models.segmenters.base import SegmentationModel, create_timm_backbone, load_backbone_file
from semples.models.segmenters.mask2former import Mask2FormerSegmenter, build_mask2former
from semples.models.segmenters.segmenter import (
    LinearDecoder,
    MaskTransformerDecoder,
    Segmenter,
    build_segmenter_linear,
    build_segmenter_mask,
)
from semples.models.segmenters.smp import SMP_ARCHS, SmpSegmenter, build_smp
from semples.utils.checkpoint_io import CheckpointError, read_checkpoint, sha256_file
from semples.utils.dataclass_config import ConfigError, from_dict

SEGMENTERS: dict[str, Callable[..., SegmentationModel]] = {
    **{arch: build_smp for arch in SMP_ARCHS},
    "mask2former": build_mask2former,
    "segmenter_linear": build_segmenter_linear,
    "segmenter_mask": build_segmenter_mask,
}

# SegmenterConfig fields that define the architecture (taken from the checkpoint when a model is loaded)
ARCH_FIELDS = ("arch", "encoder", "encoder_kwargs", "arch_kwargs", "output_stride", "aspp_rates", "aspp_separable",
               "decoder_channels", "decoder_layers", "decoder_dim", "decoder_heads", "hf_config")

CHECKPOINT_MODULE = "segmenter"  # the stage's submodule name = the key under checkpoint["modules"]


def build_segmenter(cfg, num_classes: int, quiet: bool = False) -> SegmentationModel:
    """The segmentation model named by `cfg.name` (a `SegmenterConfig`) with `num_classes` outputs (incl. bg).

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
        WeightsError: pretrained backbone weights cannot be had (the message says what to pass).
    """
    try:
        builder = SEGMENTERS[cfg.arch]
    except KeyError:
        raise ConfigError(f"unknown segment.model.arch {cfg.arch!r}; valid: {', '.join(SEGMENTERS)}") from None
    return builder(cfg, num_classes, quiet=quiet)


def load_segmenter(source: str | Path | dict, seg_cfg, num_classes: int | None = None
                   ) -> tuple[SegmentationModel, dict]:
    """A trained segmentation model from a segment run folder, its checkpoint.pt, or an already read checkpoint.

    The architecture comes from the checkpoint's config (ARCH_FIELDS); other fields from `seg_cfg`. No pretrained
    weights are fetched (the checkpoint holds every weight). `num_classes` (background included) defaults to the
    class names the checkpoint records (`semples.steps.segment` writes them) + 1.

    Returns:
        (model in eval mode, record) — record: path, sha256, stage, finished, progress, config (the checkpoint's
        segment section), classes (foreground class names, None when the checkpoint predates them), for manifests
        and metrics.

    Raises:
        CheckpointError: missing/unreadable checkpoint, no segmentation model in it, or weights that do not fit
            (e.g. another number of classes).
    """
    ckpt = source if isinstance(source, dict) else read_checkpoint(source)
    state = ckpt.get("modules", {}).get(CHECKPOINT_MODULE)
    if state is None:
        raise CheckpointError(f"{ckpt['path']}: a {ckpt.get('stage')} checkpoint holds no segmentation model "
                              "(hand in the run folder of `semples train-seg`)")
    saved = ckpt.get("config", {}).get("segment", {})
    if "arch" not in saved.get("model", {"arch": None}):
        raise CheckpointError(f"{ckpt['path']}: a segmentation model of an older semples (hand-written DeepLabV3+, "
                              "before segmentation_models_pytorch); train it again with `semples train-seg --force`")
    classes = ckpt.get("config", {}).get("classes")
    if num_classes is None:
        if classes is None:
            raise CheckpointError(f"{ckpt['path']}: records no class names; pass the experiment config (--config)")
        num_classes = len(classes) + 1
    merged = dataclasses.asdict(seg_cfg)
    merged.update({k: saved["model"][k] for k in ARCH_FIELDS if k in saved.get("model", {})})
    merged.update(pretrained=False, backbone_checkpoint=None, hf_weights=None)
    model = build_segmenter(from_dict(type(seg_cfg), merged), num_classes, quiet=True)
    own = model.state_dict()
    bad = [k for k in state if k in own and own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{ckpt['path']}: segmentation weights do not fit: {k} is {tuple(state[k].shape)} in "
                              f"the checkpoint, {tuple(own[k].shape)} here ({num_classes} classes incl. background)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{ckpt['path']}: segmentation weights do not fit the architecture (missing "
                              f"{missing[:3]}, unexpected {unexpected[:3]})")
    record = {"path": ckpt["path"], "sha256": sha256_file(ckpt["path"]), "stage": ckpt.get("stage"),
              "finished": ckpt.get("finished"), "progress": ckpt.get("progress"), "config": saved,
              "classes": list(classes) if classes is not None else None}
    return model.eval(), record


__all__ = ["ARCH_FIELDS", "SEGMENTERS", "SMP_ARCHS", "LinearDecoder", "Mask2FormerSegmenter", "MaskTransformerDecoder",
           "SegmentationModel", "Segmenter", "SmpSegmenter", "build_segmenter", "create_timm_backbone",
           "load_backbone_file", "load_segmenter"]
