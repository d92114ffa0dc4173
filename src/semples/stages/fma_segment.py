"""Stage fma-segment — segmentation prompts of FMA-WSSS (METHOD.md §2), and the coarse seeds it learns from.

Trains: the per-class CoOp contexts of the segmentation prompts (class name first; K foreground + the background
prompts) of a CLIP Grad-CAM generator. Frozen: CLIP (held aside).
Loss: CAM activation loss between the generator's raw Grad-CAMs (differentiable w.r.t. the prompts through
``create_graph``), upsampled to the crop, and the coarse seeds of the same crop, over the positive pairs.

Seeds are handed in explicitly (``semples train --stage fma-segment --seeds DIR``, or ``fma.seeds_dir``): a folder of
label PNGs ``<id>.png`` (uint8: 0 background, k + 1 = class k, 255 ignore — what `semples pseudo-masks` and the
FMA seed functions write) or a CAM folder (`semples.infer.cam_io`), turned into labels with the background score
``fma.seeds_threshold``. The seeds travel through the training transform as the item's mask, so crop and flip
stay aligned (the stage's transform must not hold RandAugment or random erasing).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from semples.data.base import DataError, SegmentationDataset
from semples.data.io import read_mask
from semples.losses import cam_activation_loss
from semples.models.mask_generators import ClipGradCAM
from semples.stages.base import BuiltStage, Stage
from semples.stages.common import fma_config, require, start_generator
from semples.stages.masking import positive_pairs
from semples.utils.dataclass_config import ConfigError

log = logging.getLogger(__name__)


class FmaSegmentStage(Stage):
    name = "fma-segment"
    trains = ("mask_generator",)
    frozen = ("clip",)
    loss_names = ("cam_activation_loss", "cam_fg_loss", "cam_bg_loss")
    depends_on = ("clip", "generator", "fma")
    prompt_set = "segmentation"  # the generator.clip_cam.prompts this stage trains

    @classmethod
    def configure(cls, cfg):
        return fma_config(cfg, cls.name, cls.prompt_set)

    @classmethod
    def validate_inputs(cls, cfg, *, generator=None, prompts=None, seeds=None) -> None:
        require(seeds or cfg.fma.seeds_dir, "stage fma-segment learns from coarse seeds: pass --seeds DIR (label PNGs "
                                            "or a CAM folder; see semples.methods.fma) or set fma.seeds_dir")

    @classmethod
    def from_config(cls, cfg, classes, *, generator=None, prompts=None, clip=None, seeds=None,
                    dataset=None) -> BuiltStage:
        """A CLIP Grad-CAM generator with fresh segmentation prompts, trained on the coarse seeds `seeds`."""
        from semples.runs import folder_record

        cls.validate_inputs(cfg, seeds=seeds)
        seeds = seeds or cfg.fma.seeds_dir
        gen, record = start_generator(cfg, classes, generator, clip)
        inputs = {"generator": record}
        built = BuiltStage(cls(gen), inputs, config=cfg, with_mask=True)
        # the seeds folder's identity (the fingerprint of its manifest), checked when a finished run is reused
        inputs["seeds"] = {"dir": str(seeds), "threshold": cfg.fma.seeds_threshold, **folder_record(seeds)}
        if dataset is not None:
            built.dataset = SeedMaskDataset(dataset, seeds, cfg.fma.seeds_threshold)
        return built

    def __init__(self, generator: ClipGradCAM) -> None:
        super().__init__()
        if not isinstance(generator, ClipGradCAM):
            raise TypeError(f"stage fma-segment trains a ClipGradCAM generator, got {type(generator).__name__}")
        if not any(p.requires_grad for p in generator.parameters()):
            raise ValueError("stage fma-segment needs learnable prompts (generator.clip_cam.prompts: segmentation)")
        self.mask_generator = generator
        self.hold_frozen("clip", generator.clip)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        if "mask" not in batch:
            raise KeyError("stage fma-segment needs batches with the coarse seeds as 'mask' (hand in --seeds DIR)")
        labels, seeds = batch["labels"], batch["mask"]
        n, c = positive_pairs(labels)
        if n.numel() == 0:
            zero = self.zero_loss()
            return {"loss": zero, **{name: zero.detach() for name in self.loss_names}}
        out = self.mask_generator(batch["image"], labels=labels)
        raw = out.maps["raw"][n, c].unsqueeze(1)  # (P, 1, h, w)
        raw = out.to_image_size(raw, align_corners=False, size=tuple(seeds.shape[-2:]))[:, 0]
        losses = cam_activation_loss(raw, seeds, n, c)
        losses["loss"] = losses["cam_activation_loss"]
        return losses

    def describe(self) -> dict:
        info = super().describe()
        info["prompts"] = self.mask_generator.prompt_record()
        return info


def seed_format(seeds_dir: str | Path, image_id: str) -> str | None:
    """"png" or "cams" for the seed file of `image_id` in `seeds_dir`, None when there is none."""
    if (Path(seeds_dir) / f"{image_id}.png").is_file():
        return "png"
    if (Path(seeds_dir) / f"{image_id}.npz").is_file():
        return "cams"
    return None


def cams_to_seed_labels(cams: np.ndarray, classes: np.ndarray, threshold: float) -> np.ndarray:
    """CAM-file seeds -> (H, W) uint8 labels: argmax over (constant background score t, CAM_1..CAM_P).

    Shape: cams (P, H, W) in [0, 1]; classes (P,) 0-based. Returns 0 background, class + 1 elsewhere.
    """
    h, w = cams.shape[1:]
    scores = np.concatenate([np.full((1, h, w), threshold, np.float32), np.asarray(cams, np.float32)])
    lut = np.concatenate([[0], np.asarray(classes, np.int64) + 1]).astype(np.uint8)
    return lut[scores.argmax(0)]


class SeedMaskDataset(SegmentationDataset):
    """`base`'s images and image-level labels with coarse seeds as their masks.

    Args:
        base: the training split (same ids as the seed files).
        seeds_dir: label PNGs ``<id>.png`` or CAM files ``<id>.npz``.
        threshold: background score for CAM-file seeds (required for those).

    Raises:
        DataError: no folder, or images without a seed file (the message names the first).
        ConfigError: CAM-file seeds without a threshold.
    """

    has_masks = True

    def __init__(self, base: SegmentationDataset, seeds_dir: str | Path, threshold: float | None = None) -> None:
        self.base = base
        self.seeds_dir = Path(seeds_dir)
        if not self.seeds_dir.is_dir():
            raise DataError(f"{self.seeds_dir}: seeds folder does not exist (make the coarse seeds first)")
        self.classes = base.classes
        self.ids = list(base.ids)
        self.name = f"{getattr(base, 'name', 'dataset')}+seeds"
        formats = [seed_format(self.seeds_dir, i) for i in self.ids]
        missing = [i for i, f in zip(self.ids, formats) if f is None]
        if missing:
            raise DataError(f"{self.seeds_dir}: no seed file (<id>.png or <id>.npz) for {len(missing)} of "
                            f"{len(self.ids)} images (first: {missing[0]})")
        self.formats = formats
        if "cams" in formats and threshold is None:
            raise ConfigError(f"{self.seeds_dir} holds CAM files: seeds from CAMs need a background score, "
                              "set fma.seeds_threshold=T (or hand in label PNGs)")
        self.threshold = threshold
        log.info("fma-segment seeds: %s (%s)", self.seeds_dir, ", ".join(sorted(set(formats))))

    def labels(self, index: int) -> np.ndarray:
        return self.base.labels(index)

    def load_image(self, index: int):
        return self.base.load_image(index)

    def load_mask(self, index: int) -> np.ndarray:
        image_id = self.ids[index]
        if self.formats[index] == "png":
            return read_mask(self.seeds_dir / f"{image_id}.png", self.num_classes)
        from semples.infer.cam_io import load_cam

        cams, classes = load_cam(self.seeds_dir / f"{image_id}.npz")
        return cams_to_seed_labels(cams, classes, float(self.threshold))

    def __getitem__(self, index: int):
        item = super().__getitem__(index)
        if item.mask.shape != (item.image.height, item.image.width):
            raise DataError(f"{self.seeds_dir / item.id}: seed is {item.mask.shape[1]}×{item.mask.shape[0]}, its "
                            f"image is {item.image.width}×{item.image.height}")
        return item


__all__ = ["FmaSegmentStage", "SeedMaskDataset", "cams_to_seed_labels", "seed_format"]
