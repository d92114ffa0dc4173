"""`semples predict`: a trained model on a user's own images — index PNG, colour overlay and class areas per image.

The images are files, folders (searched recursively for image files) or glob patterns (`find_images`); an
`ImageFiles` dataset reads them as every viewer shows them (any mode — grayscale, palette, RGBA, CMYK, 16-bit —
as 8-bit RGB, EXIF orientation applied; `semples.data.io.read_image`). The work goes through the one inference
runner (`semples.infer.runner`: groups sharded across processes/GPUs, reading in DataLoader workers, skip-if-done,
atomic files, a manifest) with `PredictTask`:

- the image is resized so that its longer side is at most ``max_side`` (0: never), the model runs on it at each
  scale (and its flip; `semples.infer.segment.segment_probs`, the same multi-scale + flip as `eval-seg`), the
  probabilities are brought back to the image's own size, optionally refined by the dense CRF, and argmaxed;
- or, for seeds (``--seeds``), a mask generator's multi-scale CAMs of the classes it finds in the image (its own
  image-level scores > 0.5, or the classes named) with a constant background score t (`semples.infer.cams`).

Per image ``<id>`` (its path relative to the folder it was found in, without the extension; a file's stem):

    <out>/masks/<id>.png      index PNG in the VOC palette (0 background, k = class k)
    <out>/overlays/<id>.png   the image with the labelled pixels tinted in their palette colour
    <out>/areas/<id>.json     image path, size, and per class present: label, pixels, fraction of the image

and ``<out>/manifest.json`` (the model's sha256 and every setting; a folder made with another model or other
settings is refused unless forced). ``areas/<id>.json`` is written last, so an image whose JSON exists is done.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from semples.data.base import ClassTable, SegmentationDataset
from semples.data.io import IMAGE_EXTENSIONS, atomic_write_bytes, read_image, voc_colormap, write_mask_png
from semples.engine.device import autocast_factory
from semples.errors import DataError
from semples.infer.runner import ImageItem, ImageReader, ImageTask
from semples.infer.views import to_model_input

log = logging.getLogger(__name__)

OVERLAY_ALPHA = 0.5
FILE_FORMAT = ("masks/<id>.png: uint8 index PNG in the VOC palette; overlays/<id>.png: RGB; areas/<id>.json: "
               "pixels and fraction per class present")


# ---------------------------------------------------------------------------------------------------- the images
def find_images(inputs: list[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(id, path) of every image named by `inputs`: files, folders (recursive, `IMAGE_EXTENSIONS`) or globs.

    Ids: for an image found in a folder, its path relative to that folder without the extension (sub-folders
    kept); for a file or a glob match, the file's stem. Sorted within each input, inputs in the order given.

    Raises:
        DataError: an input that is neither an existing file, a folder nor a glob with matches; no images at all;
            two images with one id (the message names both).
    """
    found: list[tuple[str, Path]] = []
    for raw in inputs:
        text = str(raw)
        p = Path(text).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            found += [(f.relative_to(p).with_suffix("").as_posix(), f) for f in files]
        elif p.is_file():
            found.append((p.stem, p))
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                raise DataError(f"{text}: no file matches this pattern")
            found += [(f.stem, f) for f in files]
        else:
            raise DataError(f"{text}: no such file or folder")
    if not found:
        raise DataError(f"no image files in {', '.join(map(str, inputs))} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    seen: dict[str, Path] = {}
    for image_id, path in found:
        if image_id in seen and seen[image_id].resolve() != path.resolve():
            raise DataError(f"{seen[image_id]} and {path} would both be written as {image_id!r}; predict them into "
                            "different --out folders, or pass their folder so ids keep their sub-folders")
        seen.setdefault(image_id, path)
    unique = OrderedDict((image_id, path) for image_id, path in found)
    return list(unique.items())


class ImageFiles(SegmentationDataset):
    """A user's image files as a dataset without labels or masks (for the inference runner).

    Args:
        items: (id, path) pairs (`find_images`).
        classes: the model's class table (names of the labels 1..K).
    """

    name = "images"
    has_masks = False

    def __init__(self, items: list[tuple[str, Path]], classes: ClassTable) -> None:
        self.ids = [i for i, _ in items]
        self.paths = [Path(p) for _, p in items]
        self.classes = classes

    def labels(self, index: int) -> np.ndarray:
        return np.zeros(self.num_classes, np.float32)

    def load_image(self, index: int) -> Image.Image:
        return read_image(self.paths[index])[0]


# ---------------------------------------------------------------------------------------------------- the task
@dataclass
class PredictInput:
    """One image read for prediction: the displayed RGB pixels, and the view the model sees."""

    path: str
    image: np.ndarray  # (H, W, 3) uint8, as displayed (EXIF applied)
    view: torch.Tensor  # (3, h, w) uint8, longer side <= max_side
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.view.shape[-2:])


@dataclass
class PredictReader(ImageReader):
    """Decodes an image (any mode, EXIF-rotated) and makes its inference view (in DataLoader workers)."""

    max_side: int = 0

    def __call__(self, dataset: ImageFiles, index: int) -> PredictInput:
        image = dataset.load_image(index)
        view = image
        if self.max_side and max(image.size) > self.max_side:
            s = self.max_side / max(image.size)
            view = image.resize((max(1, round(image.width * s)), max(1, round(image.height * s))), Image.BICUBIC)
        arr = np.asarray(image, dtype=np.uint8)
        tensor = torch.from_numpy(np.asarray(view, dtype=np.uint8).copy()).permute(2, 0, 1)
        return PredictInput(str(dataset.paths[index]), arr, tensor)


@dataclass(frozen=True)
class PredictSettings:
    """How predictions are made (recorded in the folder's manifest).

    Attributes:
        scales, flip: views of `segment_probs` (seeds: of the CAMs).
        mode, crop_size, stride: whole-image or sliding-window inference per view (segmentation models).
        crf, crf_params: dense CRF on the probabilities (segmentation models).
        max_side: longer side of the inference view (0 = the image's own size).
        normalize: the input normalisation the model was trained with.
        batch_size: images of one inference size per forward.
        mixed_precision: autocast setting.
        threshold: seeds: the constant background score t.
        classes: seeds: the classes to segment (None: those the generator finds, score > 0.5).
    """

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    mode: str = "whole"
    crop_size: int = 512
    stride: int = 341
    crf: bool = False
    crf_params: dict = field(default_factory=dict)
    max_side: int = 1024
    normalize: str = "imagenet"
    batch_size: int = 4
    mixed_precision: str = "no"
    threshold: float = 0.5
    classes: tuple[int, ...] | None = None

    def record(self, seeds: bool) -> dict:
        keys = (("scales", "flip", "max_side", "normalize", "threshold", "classes", "mixed_precision") if seeds else
                ("scales", "flip", "mode", "crop_size", "stride", "crf", "crf_params", "max_side", "normalize",
                 "mixed_precision"))
        out = {k: getattr(self, k) for k in keys}
        out["scales"] = [float(s) for s in self.scales]
        if "classes" in out and out["classes"] is not None:
            out["classes"] = list(out["classes"])
        return out


def _size_batches(items: list[ImageItem], batch_size: int) -> list[list[ImageItem]]:
    by_size: OrderedDict[tuple[int, int], list[ImageItem]] = OrderedDict()
    for it in items:
        by_size.setdefault(it.data.size, []).append(it)
    return [group[i: i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The image with every labelled (non-background) pixel blended with its VOC palette colour.

    Shape: image (H, W, 3) uint8, labels (H, W) uint8 -> (H, W, 3) uint8.
    """
    colours = voc_colormap()[labels]
    out = image.astype(np.float32)
    fg = (labels > 0) & (labels != 255)
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    return out.round().clip(0, 255).astype(np.uint8)


def class_areas(labels: np.ndarray, names: list[str]) -> dict:
    """{name: {label, pixels, fraction}} of every label present (background first; 255 as "ignore")."""
    counts = np.bincount(labels.ravel(), minlength=256)
    total = int(labels.size)
    out = {}
    for value in np.flatnonzero(counts):
        name = names[value] if value < len(names) else ("ignore" if value == 255 else f"label {value}")
        out[name] = {"label": int(value), "pixels": int(counts[value]), "fraction": round(counts[value] / total, 6)}
    return out


class PredictTask(ImageTask):
    """Index PNG, overlay and class areas of each image, from a segmentation model or a mask generator's seeds.

    Args:
        model: a `SegmentationModel` (or, with ``seeds=True``, a `MaskGenerator`).
        names: label names, background first (index = label value).
        settings: `PredictSettings`.
        seeds: the model is a mask generator: CAMs + background threshold instead of class probabilities.
    """

    name = "predict"
    suffix = ".json"

    def __init__(self, model: torch.nn.Module, names: list[str], settings: PredictSettings, *,
                 seeds: bool = False) -> None:
        self.model, self.names, self.settings, self.seeds = model, list(names), settings, seeds
        self.device: torch.device | None = None
        self.autocast = None

    def output_path(self, out_dir: Path, image_id: str) -> Path:
        return Path(out_dir) / "areas" / f"{image_id}.json"

    def reader(self) -> PredictReader:
        return PredictReader(self.settings.max_side)

    def batches(self, items: list[ImageItem]) -> list[list[ImageItem]]:
        return _size_batches(items, self.settings.batch_size)

    def setup(self, device) -> None:
        self.device = torch.device(device)
        self.model = self.model.to(self.device).eval()
        self.autocast = autocast_factory(self.settings.mixed_precision, self.device)

    def _context(self):
        return self.autocast() if self.autocast is not None else contextlib.nullcontext()

    def compute(self, batch: list[ImageItem]) -> list[np.ndarray]:
        s = self.settings
        x = to_model_input(torch.stack([it.data.view for it in batch]).to(self.device), s.normalize)
        if self.seeds:
            return self._seed_labels(batch, x)
        from semples.infer.segment import crf_refine, segment_probs

        with self._context():
            probs = segment_probs(self.model, x, scales=s.scales, flip=s.flip, mode=s.mode, crop_size=s.crop_size,
                                  stride=s.stride).float()
        out = []
        for it, p in zip(batch, probs):
            h, w = it.data.image.shape[:2]
            if tuple(p.shape[-2:]) != (h, w):
                p = F.interpolate(p[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            if s.crf:
                p = torch.from_numpy(crf_refine(it.data.image, p.cpu().numpy(), s.crf_params))
            out.append(p.argmax(0).to(torch.uint8).cpu().numpy())
        return out

    @torch.inference_mode()
    def _seed_labels(self, batch: list[ImageItem], x: torch.Tensor) -> list[np.ndarray]:
        from semples.infer.cams import multiscale_cams
        from semples.infer.views import resize_batch
        from semples.models.mask_generators import run_generator

        s = self.settings
        k = self.model.num_classes
        if s.classes is not None:
            present = [np.asarray(s.classes, np.int64)] * len(batch)
        else:  # the classes the generator itself finds in the image
            with self._context():
                out = run_generator(self.model, x, torch.ones(len(batch), k, device=x.device))
            if not out.logits:
                raise DataError("this mask generator gives no image-level scores; name the classes with --classes")
            scores = torch.stack([v.float().sigmoid() for v in out.logits.values()]).mean(0)
            present = [np.flatnonzero(row.cpu().numpy() > 0.5).astype(np.int64) for row in scores]
        views = [resize_batch(x, float(scale)) for scale in s.scales]
        cams = multiscale_cams(self.model, views, tuple(x.shape[-2:]), present, flip=s.flip, autocast=self.autocast)
        labels = []
        for it, cls, cam in zip(batch, present, cams):
            h, w = it.data.image.shape[:2]
            if tuple(cam.shape[-2:]) != (h, w) and cam.shape[0]:
                cam = F.interpolate(cam[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            scores = torch.cat([torch.full((1, h, w), s.threshold, device=cam.device), cam.reshape(-1, h, w)])
            lut = torch.as_tensor(np.concatenate([[0], cls + 1]), device=cam.device)
            labels.append(lut[scores.argmax(0)].to(torch.uint8).cpu().numpy())
        return labels

    def write(self, path: Path, item: ImageItem, output: np.ndarray) -> None:
        out_dir = path.parents[len(Path(item.id).parts)]  # <out>/areas/<id>.json, ids may hold sub-folders
        write_mask_png(out_dir / "masks" / f"{item.id}.png", output)
        buf = io.BytesIO()
        Image.fromarray(overlay(item.data.image, output)).save(buf, format="PNG")
        atomic_write_bytes(out_dir / "overlays" / f"{item.id}.png", buf.getvalue())
        h, w = output.shape
        record = {"id": item.id, "image": item.data.path, "width": int(w), "height": int(h),
                  "classes": class_areas(output, self.names)}
        atomic_write_bytes(path, (json.dumps(record, indent=1) + "\n").encode())  # last: the image is done


__all__ = ["FILE_FORMAT", "ImageFiles", "PredictInput", "PredictReader", "PredictSettings", "PredictTask",
           "class_areas", "find_images", "overlay"]
