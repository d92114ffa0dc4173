"""How masks meet CLIP (METHOD.md §1.5): per-(image, class) masks of the positive pairs, min-max normalised,
multiplied into the image for the foreground and (1 − M) for the background.

Two switches, defaults = reference: masks multiply the *normalised* crop and the product goes to CLIP without
CLIP's own normalisation ("normalized"); or they multiply pixels in [0, 1] and CLIP's mean/std follow ("pixel").
"""

from __future__ import annotations

import torch

from semples.data.transforms import denormalize, normalize
from semples.models.mask_generators import GeneratorOutput


def positive_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, k) index tensors of the positive pairs of multi-hot labels (B, K), in row-major order."""
    n, k = (labels > 0.5).nonzero(as_tuple=True)
    return n, k


def minmax_normalize(maps: torch.Tensor, eps: float) -> torch.Tensor:
    """(m − min) / (max − min + eps) per map.

    Shape: maps (P, H, W) -> (P, H, W) in [0, 1).
    """
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo + eps)


def pair_masks(out: GeneratorOutput, n: torch.Tensor, k: torch.Tensor, eps: float,
               align_corners: bool = True) -> torch.Tensor:
    """Soft masks M of the positive pairs at the input's pixel size.

    Shape: out.cam (B, K, h, w); n, k (P,) -> (P, H, W) in [0, 1).
    """
    grid = out.cam[n, k].unsqueeze(1).float()  # (P, 1, h, w): gather first, upsample only what is used
    maps = out.to_image_size(grid, align_corners=align_corners)[:, 0]
    return minmax_normalize(maps, eps)


def masked_images(images: torch.Tensor, masks: torch.Tensor, *, space: str = "normalized",
                  data_norm: str = "imagenet", foreground: bool = True,
                  background: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Foreground M ⊙ X and background (1 − M) ⊙ X, ready for CLIP's image tower.

    Shape: images (P, 3, H, W) normalised with `data_norm`; masks (P, H, W) in [0, 1].
    Returns (fg, bg), each (P, 3, H, W) or None when not asked for.
    """
    m = masks.unsqueeze(1).to(images.dtype)
    if space == "normalized":
        x = images
        fg = m * x if foreground else None
        bg = (1.0 - m) * x if background else None
        return fg, bg
    if space == "pixel":
        x = denormalize(images, data_norm)
        fg = normalize(m * x, "clip") if foreground else None
        bg = normalize((1.0 - m) * x, "clip") if background else None
        return fg, bg
    raise ValueError(f"masking.space must be 'normalized' or 'pixel', got {space!r}")
