"""Image-level multi-label losses of stage classify (WeakTr / MCTformer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def multilabel_losses(logits: dict[str, torch.Tensor], labels: torch.Tensor,
                      weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """Multi-label soft-margin loss on each named logit set, and their weighted sum.

    Shape: logits name -> (B, K); labels (B, K) in {0, 1}.
    Returns: ``classify_loss`` (weighted sum) and ``<name>_loss`` per logit set. Names without a weight in
    `weights` count with weight 1.
    """
    out: dict[str, torch.Tensor] = {}
    total = labels.new_zeros((), dtype=torch.float32)
    for name, value in logits.items():
        loss = F.multilabel_soft_margin_loss(value.float(), labels.float())
        out[f"{name}_loss"] = loss
        total = total + weights.get(name, 1.0) * loss
    out["classify_loss"] = total
    return out
