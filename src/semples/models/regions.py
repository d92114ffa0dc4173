"""Class-agnostic regions of an image, from one interface: superpixels (scikit-image) or SAM.

Region voting (`semples.infer.region_vote`, SAMS in METHOD.md §2) labels whole regions instead of pixels. Any
object that turns an RGB image into `Regions` is a `RegionSource`:

    source = SuperpixelRegions(SuperpixelConfig(method="slic", n_segments=200))
    source = SamRegions.from_config(SamConfig(checkpoint="/weights/sam_vit_h_4b8939.pth"))
    regions = source(image)            # image (H, W, 3) uint8 RGB -> Regions

`Regions` holds either a *partition* (superpixels: every pixel in exactly one region) or overlapping boolean
*masks* (SAM), plus optional per-region scores (SAM's predicted IoU).

SAM comes from the ``segment-anything`` package, built through `SAM_BUILDERS` (a tiny dict, as in the package's
own build_sam.py) from an explicit checkpoint file; weights are never downloaded. SAM runs in fp32: its automatic
mask generator crashes under bf16 on CPU (``amg.to_numpy``), so autocast is switched off around it.

Heavy libraries (scikit-image, torch, segment-anything) are imported on first use.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SAM_CHECKPOINTS_URL = "https://github.com/facebookresearch/segment-anything#model-checkpoints"


# ----------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class SuperpixelConfig:
    """Superpixels from scikit-image (a partition of the image)."""

    method: Literal["slic", "felzenszwalb"] = "slic"
    n_segments: int = 100  # slic: approximate number of superpixels
    compactness: float = 10.0  # slic: colour vs. space trade-off (higher = more square superpixels)
    slic_sigma: float = 1.0  # slic: Gaussian pre-smoothing
    max_num_iter: int = 10  # slic: k-means iterations
    scale: float = 300.0  # felzenszwalb: higher = larger segments
    felzenszwalb_sigma: float = 0.8  # felzenszwalb: Gaussian pre-smoothing
    min_size: int = 100  # felzenszwalb: smallest segment (pixels)


@dataclass(frozen=True)
class SamConfig:
    """SAM's automatic mask generator (METHOD.md §2: 32 points per side); other values are the package's."""

    checkpoint: str | None = None  # SAM weights file (e.g. sam_vit_h_4b8939.pth); required to use SAM
    model_type: Literal["auto", "vit_b", "vit_l", "vit_h"] = "auto"  # auto: from the checkpoint file name
    points_per_side: int = 32
    points_per_batch: int = 64  # prompts decoded at once (memory vs. speed; no effect on the result)
    pred_iou_thresh: float = 0.88  # drop masks whose predicted IoU is lower
    stability_score_thresh: float = 0.95  # drop masks whose stability score is lower
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7  # box-IoU non-maximum suppression between masks
    crop_n_layers: int = 0  # > 0: also run on image crops (slower, more small masks)
    min_mask_region_area: int = 0  # > 0: remove holes/islands below this area (needs OpenCV)
    device: str = "auto"  # auto: cuda, else mps, else cpu (semples.engine.device.resolve_device)


# ----------------------------------------------------------------------------------------------- regions
@dataclass(frozen=True)
class Regions:
    """Class-agnostic regions of one image.

    Exactly one of `masks` / `partition` is set.

    Attributes:
        masks: (N, H, W) bool, possibly overlapping; pixels in no mask are uncovered.
        partition: (H, W) int32 region index 0..N-1 per pixel, -1 = uncovered (regions never overlap).
        num_regions: N (a partition may have indices with no pixel: their area is 0).
        scores: (N,) float32 quality scores from the source (SAM: predicted IoU), or None.
    """

    masks: np.ndarray | None = None
    partition: np.ndarray | None = None
    num_regions: int = 0
    scores: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_masks(cls, masks: np.ndarray | Sequence[np.ndarray], scores: np.ndarray | Sequence[float] | None = None,
                   shape: tuple[int, int] | None = None, **meta: Any) -> Regions:
        """From boolean masks: an (N, H, W) array or a list of (H, W) arrays (`shape` needed when empty)."""
        if isinstance(masks, np.ndarray) and masks.ndim == 3:
            arr = masks.astype(bool, copy=False)
        elif len(masks) == 0:
            if shape is None:
                raise ValueError("an empty list of masks needs shape=(H, W)")
            arr = np.zeros((0, *shape), dtype=bool)
        else:
            arr = np.stack([np.asarray(m, dtype=bool) for m in masks])
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float32).reshape(-1)
            if scores.shape[0] != arr.shape[0]:
                raise ValueError(f"{arr.shape[0]} masks but {scores.shape[0]} scores")
        return cls(masks=arr, num_regions=arr.shape[0], scores=scores, meta=dict(meta))

    @classmethod
    def from_partition(cls, partition: np.ndarray, scores: np.ndarray | None = None, **meta: Any) -> Regions:
        """From an (H, W) integer map of region indices (>= 0; -1 = uncovered), e.g. superpixel labels."""
        part = np.asarray(partition)
        if part.ndim != 2:
            raise ValueError(f"partition must be (H, W), got {part.shape}")
        part = part.astype(np.int32, copy=False)
        n = int(part.max()) + 1 if part.size else 0
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float32).reshape(-1)
            if scores.shape[0] != n:
                raise ValueError(f"{n} regions but {scores.shape[0]} scores")
        return cls(partition=part, num_regions=max(n, 0), scores=scores, meta=dict(meta))

    def __post_init__(self) -> None:
        if (self.masks is None) == (self.partition is None):
            raise ValueError("Regions needs exactly one of masks= or partition=")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image."""
        return tuple(self.masks.shape[1:]) if self.masks is not None else tuple(self.partition.shape)

    @property
    def is_partition(self) -> bool:
        return self.partition is not None

    def areas(self) -> np.ndarray:
        """(N,) int64 pixels per region."""
        if self.masks is not None:
            return self.masks.reshape(self.num_regions, -1 if self.num_regions else 0).sum(1).astype(np.int64)
        p = self.partition.ravel()
        return np.bincount(p[p >= 0], minlength=self.num_regions).astype(np.int64)

    def to_masks(self) -> np.ndarray:
        """(N, H, W) bool (materialises a partition: N × H × W bytes)."""
        if self.masks is not None:
            return self.masks
        return self.partition[None] == np.arange(self.num_regions, dtype=np.int32)[:, None, None]

    def coverage(self) -> float:
        """Share of pixels inside at least one region."""
        if self.masks is not None:
            return float(self.masks.any(0).mean()) if self.num_regions else 0.0
        return float((self.partition >= 0).mean())

    @staticmethod
    def concat(parts: Sequence[Regions]) -> Regions:
        """All regions of several sources as one (overlapping) mask set; scores default to 1 where absent."""
        if not parts:
            raise ValueError("nothing to concatenate")
        shape = parts[0].shape
        if any(p.shape != shape for p in parts):
            raise ValueError(f"regions of different image sizes: {[p.shape for p in parts]}")
        masks = np.concatenate([p.to_masks() for p in parts])
        any_scores = any(p.scores is not None for p in parts)
        scores = (np.concatenate([p.scores if p.scores is not None else np.ones(p.num_regions, np.float32)
                                  for p in parts]) if any_scores else None)
        return Regions.from_masks(masks, scores, shape=shape)


@runtime_checkable
class RegionSource(Protocol):
    """Anything that returns class-agnostic regions for an RGB image.

    Shape: image (H, W, 3) uint8 RGB -> `Regions` of size (H, W).
    """

    name: str

    def __call__(self, image: np.ndarray) -> Regions: ...


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


# ----------------------------------------------------------------------------------------------- superpixels
class SuperpixelRegions:
    """Superpixels (scikit-image SLIC or Felzenszwalb) as a `RegionSource`; returns a partition.

    Args:
        cfg: method and its parameters.
    """

    def __init__(self, cfg: SuperpixelConfig | None = None) -> None:
        self.cfg = cfg or SuperpixelConfig()
        if self.cfg.method not in ("slic", "felzenszwalb"):
            raise ValueError(f"unknown superpixel method {self.cfg.method!r}; valid: slic, felzenszwalb")
        self.name = self.cfg.method

    def __call__(self, image: np.ndarray) -> Regions:
        image = _check_rgb(image)
        try:
            from skimage import segmentation
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("superpixel regions need scikit-image: pip install scikit-image "
                              "(or pip install 'semples[infer]')") from e
        c = self.cfg
        if c.method == "slic":
            labels = segmentation.slic(image, n_segments=c.n_segments, compactness=c.compactness,
                                       sigma=c.slic_sigma, max_num_iter=c.max_num_iter, start_label=0,
                                       channel_axis=-1)
        else:
            labels = segmentation.felzenszwalb(image, scale=c.scale, sigma=c.felzenszwalb_sigma,
                                               min_size=c.min_size, channel_axis=-1)
        return Regions.from_partition(labels, source=self.name)


class UnionRegions:
    """The regions of several sources together (e.g. SAM masks plus superpixels for what SAM leaves uncovered).

    Args:
        sources: region sources, queried in order.
    """

    def __init__(self, sources: Sequence[RegionSource]) -> None:
        if not sources:
            raise ValueError("UnionRegions needs at least one source")
        self.sources = list(sources)
        self.name = "+".join(s.name for s in self.sources)

    def __call__(self, image: np.ndarray) -> Regions:
        return Regions.concat([s(image) for s in self.sources])


# ----------------------------------------------------------------------------------------------- SAM
# model type -> builder function name in segment_anything.build_sam (the package's own tiny registry)
SAM_BUILDERS: dict[str, str] = {
    "vit_b": "build_sam_vit_b",
    "vit_l": "build_sam_vit_l",
    "vit_h": "build_sam_vit_h",
}


def _segment_anything():
    try:
        import segment_anything
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("SAM regions need the segment-anything package: pip install segment-anything "
                          "(or pip install 'semples[sam]')") from e
    return segment_anything


def sam_model_type(checkpoint: str | Path | None, model_type: str = "auto") -> str:
    """The SAM variant: `model_type`, or for "auto" the vit_b/vit_l/vit_h named in the checkpoint file name."""
    if model_type != "auto":
        if model_type not in SAM_BUILDERS:
            raise ValueError(f"unknown SAM model type {model_type!r}; valid: {', '.join(SAM_BUILDERS)}")
        return model_type
    name = Path(checkpoint).name.lower() if checkpoint else ""
    m = re.search(r"vit_?([blh])(?![a-z])", name)
    if m is None:
        raise ValueError(f"cannot tell the SAM variant from the file name {name!r}; set the model type "
                         f"({', '.join(SAM_BUILDERS)})")
    return f"vit_{m.group(1)}"


def build_sam(model_type: str, checkpoint: str | Path | None, device: str = "cpu", *,
              random_init: bool = False) -> torch.nn.Module:
    """Builds SAM of `model_type` (vit_b / vit_l / vit_h) and loads `checkpoint` (weights_only), in eval mode, fp32.

    Args:
        model_type: a key of `SAM_BUILDERS` (or "auto": read from the checkpoint file name).
        checkpoint: the official SAM weights file for that variant.
        device: torch device.
        random_init: allow `checkpoint=None` and keep random weights (tests and benchmarks only).

    Raises:
        WeightsError: the checkpoint is not given, missing, or does not fit the variant.
    """
    from semples.errors import WeightsError

    if checkpoint is None and not random_init:
        raise WeightsError(f"SAM needs a checkpoint file: pass --sam-checkpoint PATH (or pseudo.sam.checkpoint); "
                           f"get sam_vit_h_4b8939.pth / sam_vit_l_0b3195.pth / sam_vit_b_01ec64.pth from "
                           f"{SAM_CHECKPOINTS_URL}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise WeightsError(f"{checkpoint}: SAM checkpoint file not found (download it from {SAM_CHECKPOINTS_URL})")
    if checkpoint is None and model_type == "auto":
        model_type = "vit_b"  # random weights: the smallest variant
    else:
        model_type = sam_model_type(checkpoint, model_type)
    import torch

    _segment_anything()  # a clear error when the package is missing
    import importlib

    # the module, not the package's re-exported build_sam function of the same name
    builder = getattr(importlib.import_module("segment_anything.build_sam"), SAM_BUILDERS[model_type])
    model = builder(checkpoint=None)
    if checkpoint is not None:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(f"{checkpoint}: cannot read SAM checkpoint ({type(e).__name__}: {e})") from e
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise WeightsError(f"{checkpoint}: does not fit SAM {model_type} (is it another variant? set the "
                               f"model type): {str(e).splitlines()[0]}") from e
    else:
        log.warning("SAM %s with RANDOM weights: for wiring tests and timings only, its masks mean nothing",
                    model_type)
    model.to(device=device, dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class SamRegions:
    """SAM's automatic mask generator as a `RegionSource`; returns overlapping masks scored by predicted IoU.

    Args:
        model: a segment_anything ``Sam`` (see `build_sam`); moved to fp32.
        points_per_side ... min_mask_region_area: `SamAutomaticMaskGenerator` settings (see `SamConfig`).
    """

    name = "sam"

    def __init__(self, model: torch.nn.Module, *, points_per_side: int = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 min_mask_region_area: int = 0) -> None:
        import torch

        sa = _segment_anything()
        self.model = model.to(torch.float32).eval()
        self.settings = dict(points_per_side=points_per_side, points_per_batch=points_per_batch,
                             pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
                             stability_score_offset=stability_score_offset, box_nms_thresh=box_nms_thresh,
                             crop_n_layers=crop_n_layers, min_mask_region_area=min_mask_region_area)
        self.generator = sa.SamAutomaticMaskGenerator(self.model, output_mode="binary_mask", **self.settings)

    @classmethod
    def from_config(cls, cfg: SamConfig, *, device: str = "cpu", random_init: bool = False) -> SamRegions:
        """Builds SAM from `cfg.checkpoint` (explicit file; see `build_sam`) with `cfg`'s generator settings, on
        `device` (callers resolve ``cfg.device`` with `semples.engine.device.resolve_device`)."""
        model = build_sam(cfg.model_type, cfg.checkpoint, device, random_init=random_init)
        return cls(model, points_per_side=cfg.points_per_side, points_per_batch=cfg.points_per_batch,
                   pred_iou_thresh=cfg.pred_iou_thresh, stability_score_thresh=cfg.stability_score_thresh,
                   stability_score_offset=cfg.stability_score_offset, box_nms_thresh=cfg.box_nms_thresh,
                   crop_n_layers=cfg.crop_n_layers, min_mask_region_area=cfg.min_mask_region_area)

    def __call__(self, image: np.ndarray) -> Regions:
        import torch

        image = _check_rgb(image)
        device_type = next(self.model.parameters()).device.type
        # fp32 only: under bf16 autocast the generator crashes in amg.to_numpy (bf16 -> numpy)
        with torch.inference_mode(), torch.autocast(device_type=device_type, enabled=False):
            records = self.generator.generate(image)
        masks = [r["segmentation"] for r in records]
        scores = [float(r["predicted_iou"]) for r in records]
        stability = np.asarray([float(r["stability_score"]) for r in records], dtype=np.float32)
        return Regions.from_masks(masks, scores, shape=image.shape[:2], source="sam", stability_score=stability)


# ----------------------------------------------------------------------------------------------- factory
def build_region_source(kind: str, superpixels: SuperpixelConfig | None = None,
                        sam: SamConfig | None = None, device: str = "cpu") -> RegionSource:
    """A region source by name: "sam" (needs `sam.checkpoint`; runs on `device`), "slic", "felzenszwalb" or
    "superpixels" (the method in `superpixels`)."""
    superpixels = superpixels or SuperpixelConfig()
    if kind == "sam":
        return SamRegions.from_config(sam or SamConfig(), device=device)
    if kind == "superpixels":
        return SuperpixelRegions(superpixels)
    if kind in ("slic", "felzenszwalb"):
        return SuperpixelRegions(dataclasses.replace(superpixels, method=kind))
    raise ValueError(f"unknown region source {kind!r}; valid: sam, superpixels, slic, felzenszwalb")


__all__ = [
    "SAM_BUILDERS",
    "RegionSource",
    "Regions",
    "SamConfig",
    "SamRegions",
    "SuperpixelConfig",
    "SuperpixelRegions",
    "UnionRegions",
    "build_region_source",
    "build_sam",
    "sam_model_type",
]
