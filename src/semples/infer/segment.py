"""Inference of the final segmentation model: single- and multi-scale (+flip) class probabilities, whole-image or
sliding-window, and optional dense-CRF post-processing.

Multi-scale: for each scale s the image is resized (bilinear, `semples.infer.views.resize_batch`) by s, its logits
are computed (and those of its horizontal flip, flipped back), turned into softmax probabilities, resized to the
full image and averaged over all views. With scales (1.0,) and no flip this is exactly the single-scale prediction.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from semples.infer.views import resize_batch


def sliding_window_logits(model: nn.Module, images: torch.Tensor, crop_size: int, stride: int) -> torch.Tensor:
    """Logits from overlapping crop_size windows, averaged where windows overlap.

    Images smaller than a window are padded (bottom/right, zeros = mean colour) and the result cropped back.
    Shape: images (B, 3, H, W) -> (B, C, H, W).
    """
    b, _, h, w = images.shape
    ph, pw = max(crop_size - h, 0), max(crop_size - w, 0)
    x = F.pad(images, (0, pw, 0, ph)) if ph or pw else images
    hp, wp = x.shape[-2:]
    rows = list(range(0, max(hp - crop_size, 0) + 1, stride))
    cols = list(range(0, max(wp - crop_size, 0) + 1, stride))
    if rows[-1] + crop_size < hp:
        rows.append(hp - crop_size)
    if cols[-1] + crop_size < wp:
        cols.append(wp - crop_size)
    total = None
    count = torch.zeros((1, 1, hp, wp), device=images.device)
    for top in rows:
        for left in cols:
            out = model(x[..., top:top + crop_size, left:left + crop_size]).float()
            if total is None:
                total = torch.zeros((b, out.shape[1], hp, wp), device=images.device)
            total[..., top:top + crop_size, left:left + crop_size] += out
            count[..., top:top + crop_size, left:left + crop_size] += 1
    return (total / count)[..., :h, :w]


def model_logits(model: nn.Module, images: torch.Tensor, mode: str = "whole", crop_size: int = 512,
                 stride: int = 341) -> torch.Tensor:
    """Logits at the images' size, whole-image or by sliding windows. Shape: (B, 3, H, W) -> (B, C, H, W)."""
    if mode == "whole":
        return model(images).float()
    if mode == "slide":
        return sliding_window_logits(model, images, crop_size, stride)
    raise ValueError(f"inference mode must be 'whole' or 'slide', got {mode!r}")


@torch.no_grad()
def segment_probs(model: nn.Module, images: torch.Tensor, *, scales: tuple[float, ...] | list[float] = (1.0,),
                  flip: bool = False, mode: str = "whole", crop_size: int = 512, stride: int = 341) -> torch.Tensor:
    """Class probabilities averaged over scales (and horizontal flips).

    Args:
        model: a `SegmentationModel` in eval mode (normalised images -> logits at the input size).
        images: (B, 3, H, W) normalised images of one size.
        scales: resize factors; 1.0 alone = single scale.
        flip: also average the horizontal flip of every scale.
        mode / crop_size / stride: whole-image or sliding-window inference per view.

    Returns:
        (B, C, H, W) float32 probabilities (each pixel sums to 1).
    """
    b, _, h, w = images.shape
    total = None
    views = 0
    for s in scales:
        x = resize_batch(images, float(s))
        size = tuple(x.shape[-2:])
        if flip:
            x = torch.cat([x, x.flip(-1)])
        probs = model_logits(model, x, mode, crop_size, stride).softmax(1)
        if flip:
            probs = probs[:b] + probs[b:].flip(-1)
        if size != (h, w):
            probs = F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)
        total = probs if total is None else total + probs
        views += 2 if flip else 1
    return total / views


def crf_refine(image: np.ndarray, probs: np.ndarray, params: dict | None = None) -> np.ndarray:
    """Dense-CRF post-processing of class probabilities (`semples.infer.crf.dense_crf_probs`).

    Args:
        image: (H, W, 3) uint8 RGB.
        probs: (C, H, W) float32 probabilities.
        params: keyword arguments of `dense_crf_probs` (its defaults when empty).

    Returns:
        (C, H, W) float32 refined probabilities.

    Raises:
        ImportError: the CRF module (or pydensecrf2) is not available; the message says what is missing.
    """
    try:
        from semples.infer.crf import dense_crf_probs
    except ImportError as e:
        raise ImportError(f"dense-CRF post-processing needs semples.infer.crf.dense_crf_probs and pydensecrf2 "
                          f"(pip install 'semples[infer]'): {e}") from e
    image = np.ascontiguousarray(image, dtype=np.uint8)
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    return np.asarray(dense_crf_probs(image, probs, **(params or {})), dtype=np.float32)
