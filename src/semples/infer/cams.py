"""Seeds: multi-scale + flip class activation maps at full resolution, one file per image (METHOD.md §1.7).

For every image of a split and each scale s of ``cams.scales``: the image is resized by s (PIL bicubic), the
generator runs on it and on its horizontal flip, each view's maps of the classes *in the image label* are upsampled
to the full image size (the generator's `to_image_size`, which handles its padding), flipped views are flipped
back, and all views are summed. Each class map is then min-max normalised: (m − min) / (max − min + eps).
Classes absent from the label are not stored (zero by definition); see `semples.infer.cam_io` for the file format.

Batching: images are read in groups of ``cams.group_size`` consecutive images of the split; inside a group, images
of *equal size* share a forward pass (up to ``cams.batch_size`` images, × 2 with flips). Nothing is padded, so a
CAM never sees another image's padding. The group is also the unit of resumption and of sharding across processes
(`semples.infer.runner`): in a partly finished group, batches are formed over the whole group as before and those
holding a missing image are recomputed, so the files come out bit-identical to an uninterrupted run. (`--limit`
forms its last group from fewer images; with batch_size > 1 a later full run may then differ in the last bits of
those few images.)

`CamsTask` is this per-batch work for the runner; `generate_cams` runs it over a dataset (no manifest);
`semples.steps.cams` is the step from a config (generator from a run folder, manifest, reuse check).
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from semples.data.base import SegmentationDataset
from semples.engine.device import ProcessState, autocast_factory
from semples.infer.cam_io import save_cam
from semples.infer.runner import ImageItem, ImageReader, ImageTask, RunSummary, make_groups, run_images
from semples.infer.views import to_model_input, uint8_views
from semples.models.mask_generators import MaskGenerator, run_generator

log = logging.getLogger(__name__)

# settings that change the numbers in the files (compared when a folder is reused) and those that only change
# their last bits (recorded, not compared)
RESULT_SETTINGS = ("scales", "flip", "normalize", "align_corners", "eps", "mixed_precision")
BATCH_SETTINGS = ("batch_size", "group_size")
FILE_FORMAT = ("one <id>.npz per image: cams (P, H, W) float16 in [0, 1) for the P labelled classes, classes (P,) "
               "int16 0-based (semples.infer.cam_io)")


# ---------------------------------------------------------------------------------------------------- the maths
def minmax_per_class(cams: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(m − min) / (max − min + eps) for each map.

    Shape: cams (P, H, W) -> (P, H, W) in [0, 1).
    """
    if cams.shape[0] == 0:
        return cams
    flat = cams.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1)
    return (cams - lo) / (hi - lo + eps)


@torch.inference_mode()
def multiscale_cams(generator: MaskGenerator, views: Sequence[torch.Tensor], size: tuple[int, int],
                    classes: Sequence[np.ndarray | Sequence[int]], *, flip: bool = True, align_corners: bool = False,
                    eps: float = 1e-5, autocast: Callable[[], contextlib.AbstractContextManager] | None = None
                    ) -> list[torch.Tensor]:
    """Seeds of a batch of equal-sized images from their resized views.

    Args:
        generator: any `MaskGenerator` (eval mode is the caller's business).
        views: one tensor per scale, (B, 3, h_s, w_s) normalised images on the generator's device.
        size: (H, W) the full image size every map is brought to.
        classes: per image, the 0-based classes of its label (the maps kept).
        flip: also run the horizontal flip of every view (and flip its maps back).
        align_corners: of the bilinear upsampling.
        eps: of the per-class min-max.
        autocast: context factory for the generator forward (mixed precision), or None.

    Returns:
        B tensors (P_i, H, W) float32 in [0, 1), maps in the order of `classes[i]`.
    """
    b = views[0].shape[0]
    device = views[0].device
    classes = [torch.as_tensor(np.asarray(c, dtype=np.int64), device=device) for c in classes]
    acc = [torch.zeros((len(c), *size), dtype=torch.float32, device=device) for c in classes]
    if all(len(c) == 0 for c in classes):
        return acc
    # the image labels, for generators whose maps depend on them (CLIP Grad-CAM: softmax over present classes)
    labels = torch.zeros(b, generator.num_classes, device=device)
    for i, cls in enumerate(classes):
        labels[i, cls] = 1.0
    for x in views:
        if x.shape[0] != b:
            raise ValueError("every scale needs the same number of images")
        x = torch.cat([x, x.flip(-1)]) if flip else x
        with autocast() if autocast is not None else contextlib.nullcontext():
            out = run_generator(generator, x, torch.cat([labels, labels]) if flip else labels)
        cam = out.cam.float()  # (V·B, K, h, w)
        for i, cls in enumerate(classes):
            if len(cls) == 0:
                continue
            rows = [i, b + i] if flip else [i]
            maps = out.to_image_size(cam[rows][:, cls], align_corners=align_corners, size=size)  # (V, P, H, W)
            if flip:
                maps[1] = maps[1].flip(-1)
            acc[i] += maps.sum(0)
    return [minmax_per_class(a, eps) for a in acc]


# ---------------------------------------------------------------------------------------------------- the task
@dataclass
class CamInput:
    """One image read for CAMs: its size, the classes of its label and its uint8 views (one per scale)."""

    size: tuple[int, int]  # (H, W)
    classes: np.ndarray  # (P,) 0-based
    views: list[torch.Tensor] = field(default_factory=list)  # (3, h_s, w_s) uint8 per scale


@dataclass
class CamReader(ImageReader):
    """Decodes an image and resizes it to every scale (in DataLoader workers)."""

    scales: tuple[float, ...]

    def __call__(self, dataset: SegmentationDataset, index: int) -> CamInput:
        labels = np.asarray(dataset.labels(index))
        image = dataset.load_image(index).convert("RGB")
        return CamInput((image.height, image.width), np.flatnonzero(labels > 0).astype(np.int64),
                        uint8_views(image, self.scales))


def _size_batches(items: list[ImageItem], batch_size: int) -> list[list[ImageItem]]:
    """Items of equal size together (first-appearance order), split into batches of at most `batch_size`."""
    by_size: OrderedDict[tuple[int, int], list[ImageItem]] = OrderedDict()
    for it in items:
        by_size.setdefault(it.data.size, []).append(it)
    return [group[i: i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]


class CamsTask(ImageTask):
    """Multi-scale + flip seeds of a mask generator, batched over equal-sized images of a group.

    Args:
        generator: any `MaskGenerator`; moved to the run's device and put in eval mode.
        cfg: a `CamConfig` (scales, flip, batch_size, normalize, align_corners, eps, mixed_precision).
    """

    name = "cams"
    suffix = ".npz"

    def __init__(self, generator: MaskGenerator, cfg) -> None:
        self.generator, self.cfg = generator, cfg
        self.device: torch.device | None = None
        self.autocast = None

    def reader(self) -> CamReader:
        return CamReader(tuple(self.cfg.scales))

    def batches(self, items: list[ImageItem]) -> list[list[ImageItem]]:
        return _size_batches(items, self.cfg.batch_size)

    def setup(self, device) -> None:
        self.device = torch.device(device)
        self.generator = self.generator.to(self.device).eval()
        self.autocast = autocast_factory(self.cfg.mixed_precision, self.device)

    def compute(self, batch: list[ImageItem]) -> list[np.ndarray]:
        cfg = self.cfg
        views = [to_model_input(torch.stack([it.data.views[s] for it in batch]).to(self.device), cfg.normalize)
                 for s in range(len(cfg.scales))]
        cams = multiscale_cams(self.generator, views, batch[0].data.size, [it.data.classes for it in batch],
                               flip=cfg.flip, align_corners=cfg.align_corners, eps=cfg.eps, autocast=self.autocast)
        return [cam.cpu().numpy() for cam in cams]

    def write(self, path: Path, item: ImageItem, output: np.ndarray) -> None:
        save_cam(path, output, item.data.classes)


CamRunSummary = RunSummary  # what `generate_cams` returns


def generate_cams(generator: MaskGenerator, dataset: SegmentationDataset, out_dir: str | Path, cfg, *,
                  device: torch.device | str = "cpu", indices: Sequence[int] | None = None, force: bool = False,
                  num_workers: int = 0, skip_bad: bool = False, progress: bool = True, process_index: int = 0,
                  num_processes: int = 1) -> RunSummary:
    """Writes one CAM file per image of `dataset` into `out_dir` (existing files are skipped unless `force`).

    No manifest: `semples.steps.cams.run` writes one around this.

    Args:
        generator: any `MaskGenerator`; moved to `device` and put in eval mode.
        dataset: the split (images + image-level labels).
        out_dir: the CAM folder.
        cfg: a `CamConfig` (scales, flip, batch_size, group_size, normalize, align_corners, eps, mixed_precision).
        device: where the generator runs.
        indices: dataset indices to process (default: all), in order; groups are formed over this list.
        force: recompute and overwrite every file.
        num_workers: DataLoader workers decoding and resizing images.
        skip_bad: record unreadable images and go on (else the first one stops the run).
        progress: show a tqdm bar (images/second).
        process_index, num_processes: this process's share of the groups (group j goes to j % num_processes).

    Returns:
        A `RunSummary` of this process's work.
    """
    state = ProcessState(torch.device(device), process_index, num_processes)
    return run_images(CamsTask(generator, cfg), dataset, out_dir, indices=indices, group_size=cfg.group_size,
                      force=force, num_workers=num_workers, skip_bad=skip_bad, progress=progress, state=state)


def cams_settings(cfg) -> dict:
    """The settings a CAM folder records from a `CamConfig` (RESULT_SETTINGS compared on reuse, batch sizes not)."""
    settings = {k: getattr(cfg, k) for k in (*RESULT_SETTINGS, *BATCH_SETTINGS)}
    settings["scales"] = [float(s) for s in settings["scales"]]
    return settings


__all__ = ["BATCH_SETTINGS", "FILE_FORMAT", "RESULT_SETTINGS", "CamInput", "CamReader", "CamRunSummary", "CamsTask",
           "cams_settings", "generate_cams", "make_groups", "minmax_per_class", "multiscale_cams"]
