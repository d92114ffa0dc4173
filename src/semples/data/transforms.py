"""Joint image/mask transform pipelines and the normalisation constants of the package (one place).

Randomness comes from python `random` and torch's global RNG, which `TransformedDataset` seeds per
(seed, epoch, index) — so pipelines here never hold generators of their own.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from semples.data.base import IGNORE_INDEX
from semples.data.config import TrainTransformConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a named normalisation ("imagenet" or "clip")."""
    try:
        return NORMALIZATIONS[name]
    except KeyError:
        raise ValueError(f"unknown normalisation {name!r}; valid: {', '.join(NORMALIZATIONS)}") from None


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 in [0, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def normalize(image: torch.Tensor, name: str = "imagenet") -> torch.Tensor:
    """(…, 3, H, W) in [0, 1] -> normalised with the named mean/std."""
    mean, std = normalization(name)
    m = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - m) / s


def denormalize(image: torch.Tensor, name: str = "imagenet") -> torch.Tensor:
    """Inverse of `normalize`."""
    mean, std = normalization(name)
    m = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return image * s + m


def random_resized_crop_box(width: int, height: int, scale: tuple[float, float],
                            ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a random-resized-crop box (torchvision's algorithm, python `random`)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, width - w), random.randint(0, height - h), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _random_erasing(image: torch.Tensor, p: float) -> torch.Tensor:
    """Random erasing with per-pixel normal noise (timm's 'pixel' mode), on a normalised image."""
    if p <= 0 or random.random() >= p:
        return image
    _, h, w = image.shape
    area = h * w
    for _ in range(10):
        target = area * random.uniform(0.02, 1 / 3)
        aspect = math.exp(random.uniform(math.log(0.3), math.log(1 / 0.3)))
        eh = int(round(math.sqrt(target * aspect)))
        ew = int(round(math.sqrt(target / aspect)))
        if eh < h and ew < w:
            top, left = random.randint(0, h - eh), random.randint(0, w - ew)
            image = image.clone()
            image[:, top:top + eh, left:left + ew] = torch.randn(3, eh, ew)
            return image
    return image


class TrainTransform:
    """Random resized crop + flip on image and mask, RandAugment and random erasing on the image only.

    Output: image (3, S, S) normalised; mask (S, S) int64 (nearest-neighbour resampled) or None.
    """

    def __init__(self, cfg: TrainTransformConfig) -> None:
        self.cfg = cfg
        self.randaugment = None
        if cfg.randaugment:
            from timm.data.auto_augment import rand_augment_transform

            mean, _ = normalization(cfg.normalize)
            self.randaugment = rand_augment_transform(
                cfg.randaugment, {"translate_const": int(cfg.crop_size * 0.45),
                                  "img_mean": tuple(int(round(255 * m)) for m in mean)})

    def __call__(self, image: Image.Image, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.cfg
        image = image.convert("RGB")
        left, top, w, h = random_resized_crop_box(image.width, image.height, cfg.scale, cfg.ratio)
        size = (cfg.crop_size, cfg.crop_size)
        box = (left, top, left + w, top + h)
        image = image.resize(size, Image.BICUBIC, box=box)
        mask_img = Image.fromarray(mask).resize(size, Image.NEAREST, box=box) if mask is not None else None
        if random.random() < cfg.hflip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
            if mask_img is not None:
                mask_img = mask_img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.randaugment is not None:
            image = self.randaugment(image)
        tensor = normalize(to_tensor(image), cfg.normalize)
        tensor = _random_erasing(tensor, cfg.random_erasing)
        mask_t = torch.from_numpy(np.asarray(mask_img, dtype=np.int64).copy()) if mask_img is not None else None
        return tensor, mask_t


class EvalTransform:
    """Deterministic: optional resize to a square side (None keeps the full image), then normalise."""

    def __init__(self, size: int | None = None, norm: str = "imagenet") -> None:
        self.size = size
        self.norm = norm

    def __call__(self, image: Image.Image, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = image.convert("RGB")
        if self.size is not None:
            image = image.resize((self.size, self.size), Image.BICUBIC)
        tensor = normalize(to_tensor(image), self.norm)
        mask_t = None
        if mask is not None:
            mask_t = torch.from_numpy(np.asarray(mask, dtype=np.int64).copy())
            if self.size is not None:
                mask_t = F.interpolate(mask_t[None, None].float(), size=(self.size, self.size),
                                       mode="nearest")[0, 0].long()
        return tensor, mask_t


def pad_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pads an (H, W) mask at the bottom/right to (height, width) with the ignore index."""
    out = torch.full((height, width), IGNORE_INDEX, dtype=mask.dtype)
    out[: mask.shape[0], : mask.shape[1]] = mask
    return out


def pad_image(image: torch.Tensor, height: int, width: int, value: float = 0.0) -> torch.Tensor:
    """Pads a (3, H, W) image at the bottom/right to (3, height, width) with `value` (0 = mean colour once
    normalised)."""
    out = image.new_full((image.shape[0], height, width), value)
    out[:, : image.shape[1], : image.shape[2]] = image
    return out


class ResizePadTransform:
    """Deterministic letterbox: resize so the longer side is `size` (aspect kept), pad to a square.

    The image is padded with 0 after normalisation (the mean colour), the mask with the ignore index 255, both at
    the bottom/right, so every item has the same shape and batches stack.
    Output: image (3, S, S) normalised; mask (S, S) int64 or None.
    """

    def __init__(self, size: int, norm: str = "imagenet") -> None:
        self.size = size
        self.norm = norm

    def __call__(self, image: Image.Image, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = image.convert("RGB")
        scale = self.size / max(image.width, image.height)
        w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        tensor = normalize(to_tensor(image.resize((w, h), Image.BICUBIC)), self.norm)
        tensor = pad_image(tensor, self.size, self.size)
        mask_t = None
        if mask is not None:
            m = np.asarray(Image.fromarray(np.asarray(mask, dtype=np.uint8)).resize((w, h), Image.NEAREST))
            mask_t = pad_mask(torch.from_numpy(m.astype(np.int64)), self.size, self.size)
        return tensor, mask_t
