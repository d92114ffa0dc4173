"""The one multi-scale + flip: the inference views of an image and the way back to full resolution.

Every inference path builds its views here (seeds of `semples cams`, FMA's CLIP CAMs, the final model's
multi-scale evaluation) and brings per-view maps back here:

    view_plan(scales, flip)     the views in order: scale 0, scale 0 flipped, scale 1, ...
    scaled_size(h, w, s)        the size of a view (sides rounded; optionally to a multiple of the patch size)
    uint8_views(image, scales)  PIL images resized by each scale (bicubic) as uint8 tensors: what DataLoader workers
                                hand over (4x less data than floats); `to_model_input` normalises them on the device
    image_views(image, ...)     the same views normalised, flipped copies included (one image at a time)
    resize_batch(x, s)          a normalised batch resized by s (bilinear): the final model's views
    to_full_resolution(...)     undo each view's flip and resize its maps to the image size; `merge_views` reduces

Flipped views are made from the resized tensor (a flip of the bicubic resize), so a flipped view holds exactly the
mirrored pixels of its unflipped twin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from semples.data.transforms import normalize


@dataclass(frozen=True)
class View:
    """One inference view: a resize factor and whether the view is the horizontal flip."""

    scale: float
    flipped: bool


def view_plan(scales: Sequence[float], flip: bool = True) -> list[View]:
    """The views of `scales` (and their flips), in the order every path uses: s0, s0 flipped, s1, s1 flipped ..."""
    return [View(float(s), f) for s in scales for f in ((False, True) if flip else (False,))]


def scaled_size(height: int, width: int, scale: float, multiple_of: int = 1) -> tuple[int, int]:
    """(h, w) of an image scaled by `scale`, rounded to the nearest multiple of `multiple_of` (at least one)."""
    def r(x: int) -> int:
        return max(multiple_of, int(round(x * scale / multiple_of)) * multiple_of)

    return r(height), r(width)


def resize_image(image: Image.Image, scale: float, multiple_of: int = 1) -> Image.Image:
    """`image` resized by `scale` (PIL bicubic); the image itself when the size does not change."""
    h, w = scaled_size(image.height, image.width, scale, multiple_of)
    return image if (w, h) == image.size else image.resize((w, h), Image.BICUBIC)


def uint8_views(image: Image.Image, scales: Sequence[float], multiple_of: int = 1) -> list[torch.Tensor]:
    """The RGB image resized by each scale (bicubic) as uint8 tensors (3, h_s, w_s), one per scale (no flips).

    Kept as uint8 so DataLoader workers hand over 4x less data; `to_model_input` normalises on the device.
    """
    image = image.convert("RGB")
    return [torch.from_numpy(np.asarray(resize_image(image, s, multiple_of), dtype=np.uint8).copy()).permute(2, 0, 1)
            for s in scales]


def to_model_input(views: torch.Tensor, norm: str = "imagenet") -> torch.Tensor:
    """uint8 (..., 3, h, w) -> float32 in [0, 1] -> normalised with the named mean/std (as the training transforms)."""
    return normalize(views.float().div_(255.0), norm)


def image_views(image: Image.Image, scales: Sequence[float] = (1.0,), flip: bool = True, norm: str = "imagenet",
                multiple_of: int = 1) -> list[tuple[torch.Tensor, float, bool]]:
    """The normalised inference views of one image: each scale, and its horizontal flip when `flip` is set.

    Args:
        image: PIL image (H, W).
        scales: resize factors (VOC CAMs: 1.0, 1.2; COCO: 0.8, 1.0, 1.2).
        flip: add the horizontally flipped copy of every scale.
        norm: "imagenet" or "clip" normalisation.
        multiple_of: round each side to a multiple of this (e.g. the ViT patch size).

    Returns:
        [(tensor (3, h_s, w_s), scale, flipped), ...] in `view_plan` order. Bring per-view maps back with
        `merge_views` / `to_full_resolution`.
    """
    out: list[tuple[torch.Tensor, float, bool]] = []
    for s, view in zip(scales, uint8_views(image, scales, multiple_of)):
        tensor = to_model_input(view, norm)
        out.append((tensor, float(s), False))
        if flip:
            out.append((tensor.flip(-1), float(s), True))
    return out


def resize_batch(images: torch.Tensor, scale: float) -> torch.Tensor:
    """A batch of normalised images resized by `scale` (bilinear); the batch itself at its own size.

    Shape: (B, 3, H, W) -> (B, 3, h_s, w_s).
    """
    h, w = images.shape[-2:]
    size = scaled_size(h, w, float(scale))
    return images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def to_full_resolution(maps: list[torch.Tensor] | torch.Tensor, flipped: Sequence[bool], size: tuple[int, int],
                       mode: str = "bilinear", align_corners: bool = False) -> torch.Tensor:
    """Undoes the flip of each view's map and resizes it to the full image size.

    Shape: maps: V tensors (K, h_v, w_v) (any resolution, e.g. the patch grid) or one (V, K, h, w);
    returns (V, K, H, W) with (H, W) = `size`.
    """
    out = []
    for m, f in zip(maps, flipped, strict=True):
        m = m.flip(-1) if f else m
        m = m[None].float()
        if tuple(m.shape[-2:]) != tuple(size):
            kwargs = {"align_corners": align_corners} if mode in ("bilinear", "bicubic") else {}
            m = F.interpolate(m, size=tuple(size), mode=mode, **kwargs)
        out.append(m[0])
    return torch.stack(out)


def merge_views(maps: list[torch.Tensor] | torch.Tensor, flipped: Sequence[bool], size: tuple[int, int],
                reduce: str = "sum", mode: str = "bilinear", align_corners: bool = False) -> torch.Tensor:
    """`to_full_resolution` followed by a sum / mean / max over the views.

    Shape: maps as in `to_full_resolution`; returns (K, H, W).
    """
    full = to_full_resolution(maps, flipped, size, mode, align_corners)
    if reduce == "sum":
        return full.sum(0)
    if reduce == "mean":
        return full.mean(0)
    if reduce == "max":
        return full.max(0).values
    raise ValueError(f"reduce must be sum, mean or max, got {reduce!r}")


__all__ = ["View", "image_views", "merge_views", "resize_batch", "resize_image", "scaled_size", "to_full_resolution",
           "to_model_input", "uint8_views", "view_plan"]
