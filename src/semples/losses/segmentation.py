"""Per-pixel cross-entropy for training the final segmentation model on (pseudo) masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def segmentation_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                               ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over the pixels whose target is not `ignore_index`.

    Logits on another grid than the target are upsampled bilinearly to the target's size first. A batch in which
    every pixel is ignored gives 0 (still connected to the logits, so every parameter sees a zero gradient)
    instead of the NaN of a mean over nothing.

    Shape: logits (B, C, h, w) any float dtype (computed in float32); target (B, H, W) integer labels in
    0..C-1 or `ignore_index`. Returns a scalar.
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    target = target.long()
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    count = (target != ignore_index).sum().clamp_min(1)
    return total / count
