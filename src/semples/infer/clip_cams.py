"""FMA-WSSS seeds of a CLIP Grad-CAM generator (METHOD.md §2): every multi-scale + flip view's Grad-CAMs, refined by
CAA (`semples.infer.caa`) with the attention of the same forward pass, brought to full resolution, summed and
min-max normalised per class.

`clip_seed_maps` is the maths for one image; `ClipCamsTask` runs it for the one inference runner
(`semples.infer.runner`: reading in DataLoader workers, sharding across processes, skip-if-done, atomic files,
manifests), writing CAM folders in the format of `semples cams` (`semples.infer.cam_io`), which eval-seeds and
pseudo-masks read. The config-driven step is `semples.steps.clip_cams`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from semples.data.base import SegmentationDataset
from semples.engine.device import autocast_factory
from semples.infer.caa import refine_with_attention
from semples.infer.cam_io import save_cam
from semples.infer.cams import minmax_per_class
from semples.infer.runner import ImageItem, ImageReader, ImageTask
from semples.infer.views import image_views


@torch.no_grad()
def clip_seed_maps(generator, image, classes: np.ndarray, *, scales: tuple[float, ...] = (1.0,), flip: bool = True,
                   normalize_name: str = "imagenet", caa=None, box_threshold: float = 0.4, eps: float = 1e-5,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Seeds of one image from a `ClipGradCAM`: every view's Grad-CAMs (softmax over the image's classes and the
    background prompts), CAA-refined on the patch grid with the same pass's attention, at full resolution, summed
    over views, min-max per class.

    Args:
        generator: a `ClipGradCAM` (eval mode, on `device`).
        image: PIL RGB image (H, W).
        classes: (P,) 0-based classes of the image label.
        scales, flip: the views (`semples.infer.views.image_views`).
        normalize_name: normalisation the generator expects ("imagenet" unless clip_cam.input_norm is "clip").
        caa: a `CaaConfig` (None or ``enabled: false``: plain Grad-CAM).
        box_threshold: CAA box threshold (0.4 coarse, 0.5 fine).
        eps: of the per-class min-max.

    Returns:
        (P, H, W) float32 in [0, 1) on `device`, maps in the order of `classes`.
    """
    classes = np.asarray(classes, dtype=np.int64)
    size = (image.height, image.width)
    acc = torch.zeros((len(classes), *size), dtype=torch.float32, device=device)
    if len(classes) == 0:
        return acc
    use_caa = caa is not None and caa.enabled
    labels = torch.zeros(1, generator.num_classes, device=device)
    labels[0, torch.as_tensor(classes)] = 1.0
    cls = torch.as_tensor(classes, device=device)
    for tensor, _, flipped in image_views(image, scales, flip=flip, norm=normalize_name):
        x = tensor[None].to(device)
        if use_caa:
            out, attn = generator.forward_with_attention(x, labels, layers=caa.layers)
            grid = refine_with_attention(out.cam[0, cls].float(), attn[0], box_threshold=box_threshold,
                                         iterations=caa.sinkhorn_iterations, power=caa.power,
                                         restrict_targets=caa.restrict_targets)
        else:
            out = generator(x, labels=labels)
            grid = out.cam[0, cls].float()
        full = out.to_image_size(grid[None], align_corners=False, size=size)[0]
        acc += full.flip(-1) if flipped else full
    return minmax_per_class(acc, eps)


@dataclass
class ClipImage:
    """One image read for CLIP CAMs: the RGB image and the classes of its label."""

    image: object  # PIL RGB
    classes: np.ndarray  # (P,) 0-based


class ClipImageReader(ImageReader):
    """Decodes an image and its label (in DataLoader workers)."""

    def __call__(self, dataset: SegmentationDataset, index: int) -> ClipImage:
        classes = np.flatnonzero(np.asarray(dataset.labels(index)) > 0).astype(np.int64)
        return ClipImage(dataset.load_image(index).convert("RGB"), classes)


class ClipCamsTask(ImageTask):
    """`clip_seed_maps` of each image (one image per forward: Grad-CAM backpropagates through each one).

    Args:
        generator: a `ClipGradCAM`.
        scales, flip, normalize_name, caa, box_threshold, eps: as in `clip_seed_maps`.
        mixed_precision: autocast of the forward (``cams.mixed_precision``; "no" by default).
    """

    name = "clip cams"
    suffix = ".npz"

    def __init__(self, generator, *, scales: tuple[float, ...] = (1.0,), flip: bool = True,
                 normalize_name: str = "imagenet", caa=None, box_threshold: float = 0.4, eps: float = 1e-5,
                 mixed_precision: str = "no") -> None:
        self.generator = generator
        self.kw = dict(scales=tuple(scales), flip=flip, normalize_name=normalize_name, caa=caa,
                       box_threshold=box_threshold, eps=eps)
        self.mixed_precision = mixed_precision
        self.device: torch.device | None = None
        self.autocast = None

    def settings(self) -> dict:
        """What a folder of these CAMs records as its settings."""
        from semples.utils.dataclass_config import to_dict

        caa = self.kw["caa"]
        return {"scales": [float(s) for s in self.kw["scales"]], "flip": self.kw["flip"],
                "normalize": self.kw["normalize_name"], "eps": self.kw["eps"],
                "caa": to_dict(caa) if caa is not None and caa.enabled else None,
                "box_threshold": self.kw["box_threshold"], "mixed_precision": self.mixed_precision,
                "prompts": self.generator.prompt_record()}

    def reader(self) -> ClipImageReader:
        return ClipImageReader()

    def setup(self, device) -> None:
        self.device = torch.device(device)
        self.generator = self.generator.to(self.device).eval()
        self.autocast = autocast_factory(self.mixed_precision, self.device)

    def compute(self, batch: list[ImageItem]) -> list[np.ndarray]:
        out = []
        for it in batch:
            if self.autocast is None:
                maps = clip_seed_maps(self.generator, it.data.image, it.data.classes, device=self.device, **self.kw)
            else:
                with self.autocast():
                    maps = clip_seed_maps(self.generator, it.data.image, it.data.classes, device=self.device,
                                          **self.kw)
            out.append(maps.cpu().numpy())
        return out

    def write(self, path: Path, item: ImageItem, output: np.ndarray) -> None:
        save_cam(path, output, item.data.classes)


__all__ = ["ClipCamsTask", "ClipImage", "ClipImageReader", "clip_seed_maps"]
