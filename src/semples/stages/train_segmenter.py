"""Stage segment: the final segmentation model trained on pseudo masks (METHOD.md §1.7).

Trains: the whole segmentation model (backbone and decoder). Frozen: nothing. Loss: the model's own
(`SegmentationModel.loss`): per-pixel cross-entropy against the pseudo mask, 255 ignored (unsure pixels and the
crop padding), for the SMP models and Segmenter; Mask2Former's matching + class/mask/dice losses for Mask2Former.
The backbone may get its own learning rate (``segment.backbone_lr_mult``: DeepLab's head ×10, Mask2Former's
backbone ×0.1). The engine (`semples.engine.train_stage`) runs it like any other stage: checkpoints, resume,
several GPUs.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from semples.losses.segmentation import IGNORE_INDEX
from semples.models.segmenters import SegmentationModel, build_segmenter
from semples.models.segmenters.base import weights_source
from semples.stages.base import Stage


class SegmentStage(Stage):
    """Cross-entropy training of a `SegmentationModel` on batches with ``image`` (B, 3, H, W) and ``mask``
    (B, H, W) int64 (255 = ignore)."""

    name = "segment"
    trains = ("segmenter",)
    frozen = ()
    loss_names = ("ce_loss",)  # Mask2Former: class_loss, mask_loss, dice_loss (the model's `loss_names`)
    depends_on = ("experiment",)
    needs_clip = False

    @classmethod
    def recorded_config(cls, cfg) -> dict:
        """What a segment checkpoint records (and resume compares): the training sections, without the splits and
        settings of evaluation (``data.eval_split``, ``segment.eval``), which never change the trained model."""
        out = super().recorded_config(cfg)
        out["data"] = {k: v for k, v in out["data"].items() if k != "eval_split"}
        out[cls.section()] = {k: v for k, v in out[cls.section()].items() if k != "eval"}
        return out

    @classmethod
    def from_config(cls, cfg, classes, *, generator=None, prompts=None, clip=None, seeds=None, dataset=None,
                    sync_bn: bool = False, fetch_weights: bool = True):
        """A fresh segmentation model from ``segment.model`` for the dataset's classes (+ background)."""
        from semples.stages.base import BuiltStage

        stage = build_segment_stage(cfg.segment.model, len(classes) + 1, sync_bn=sync_bn, fetch_weights=fetch_weights,
                                    backbone_lr_mult=cfg.segment.backbone_lr_mult)
        return BuiltStage(stage, {"segmenter": stage.segmenter.source, "sync_bn": sync_bn}, with_mask=True)

    def __init__(self, segmenter: SegmentationModel, *, ignore_index: int = IGNORE_INDEX,
                 backbone_lr_mult: float = 1.0) -> None:
        super().__init__()
        self.segmenter = segmenter
        self.ignore_index = ignore_index
        self.backbone_lr_mult = float(backbone_lr_mult)
        self.loss_names = tuple(getattr(segmenter, "loss_names", type(self).loss_names))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        if "mask" not in batch:
            raise KeyError("stage segment needs batches with a 'mask' (TransformedDataset(..., with_mask=True))")
        return self.segmenter.loss(batch["image"], batch["mask"], self.ignore_index)

    def lr_multipliers(self) -> dict[str, float]:
        """Parameter-name prefixes with their lr relative to the stage's lr (read by the engine)."""
        prefix = getattr(self.segmenter, "backbone_prefix", "")
        if not prefix or self.backbone_lr_mult == 1.0:
            return {}
        return {f"segmenter.{prefix}.": self.backbone_lr_mult}

    @torch.no_grad()
    def sample_images(self, batch: dict, count: int = 4) -> dict[str, torch.Tensor]:
        """Image | pseudo mask | prediction of the first `count` images, for TensorBoard.

        Shape: each value (N, 3, H, W) float in [0, 1].
        """
        from semples.stages.base import colour_labels, denormalize

        images = batch["image"][:count]
        pred = self.segmenter(images).argmax(1)
        out = {"image": denormalize(images), "prediction": colour_labels(pred)}
        if "mask" in batch:
            out["pseudo mask"] = colour_labels(batch["mask"][:count])
        return out

    def describe(self) -> dict:
        info = super().describe()
        info["segmenter"] = {"class": type(self.segmenter).__name__, "num_classes": self.segmenter.num_classes,
                             **getattr(self.segmenter, "source", {})}
        return info


def build_segment_stage(seg_cfg, num_classes: int, *, sync_bn: bool = False, fetch_weights: bool = True,
                        backbone_lr_mult: float = 1.0) -> SegmentStage:
    """A fresh `SegmentStage` from a `SegmenterConfig` (`num_classes` includes background).

    Args:
        seg_cfg: the model's config.
        num_classes: outputs, background included.
        sync_bn: turn BatchNorm layers into SyncBatchNorm (several CUDA processes: statistics over the global
            batch).
        fetch_weights: False builds the architecture without reading backbone weights (quietly) — for a run folder
            whose checkpoint replaces every weight anyway; `source` still describes the configured weights.
        backbone_lr_mult: the backbone's lr relative to the stage's.
    """
    if fetch_weights:
        model = build_segmenter(seg_cfg, num_classes)
    else:
        model = build_segmenter(dataclasses.replace(seg_cfg, pretrained=False, backbone_checkpoint=None,
                                                    hf_weights=None), num_classes, quiet=True)
        configured = weights_source(model.source["backbone"], seg_cfg.pretrained, seg_cfg.backbone_checkpoint)
        if seg_cfg.hf_weights and seg_cfg.pretrained and not seg_cfg.backbone_checkpoint:
            configured["weights"] = f"hf: {seg_cfg.hf_weights}"
        model.source = {**model.source, **configured}
    if getattr(seg_cfg, "channels_last", None):
        model = model.to(memory_format=torch.channels_last)  # convolutions then run NHWC, forward and backward
    if sync_bn:
        source = model.source
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.source = source
    return SegmentStage(model, backbone_lr_mult=backbone_lr_mult)
