"""The FMA-WSSS prompt-learning losses (METHOD.md §2): multi-label contrastive loss (classification prompts) and
CAM activation loss (segmentation prompts). Pure functions; each returns a dict of named scalar tensors.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = 255


def multilabel_contrastive_loss(logits: torch.Tensor, positives: torch.Tensor,
                                negatives: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean over the positive pairs (n, p) of −log(e^{S_np} / (e^{S_np} + Σ_{j ∈ neg(n)} e^{S_nj})).

    Each positive class competes only with its image's negatives (not with the other positives), so several
    classes of one image can all score high. A pair whose image has no negative contributes 0.

    Shape: logits (B, C) (FMA-WSSS: 100 · cosine); positives, negatives (B, C) bool (disjoint).
    Returns: ``contrastive_loss`` (0, still connected to `logits`, when there is no positive pair).
    """
    s = logits.float()
    positives, negatives = positives.bool(), negatives.bool()
    neg_lse = torch.logsumexp(s.masked_fill(~negatives, float("-inf")), dim=1, keepdim=True)  # (B, 1), -inf: none
    per_pair = torch.logaddexp(s, neg_lse) - s  # = −log(e^s / (e^s + Σ_neg e^{s_j})) for every entry
    if not positives.any():
        return {"contrastive_loss": s.sum() * 0.0}
    return {"contrastive_loss": per_pair[positives].mean()}


def cam_activation_loss(cams: torch.Tensor, seeds: torch.Tensor, image_index: torch.Tensor,
                        class_index: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> dict[str, torch.Tensor]:
    """CAM activation loss against coarse seeds, over the positive pairs (n, c) of a batch.

    For pair (n, c): F = {seed_n = c}, B = {seed_n ∉ {c, ignore}};

        L = [Σ_pairs Σ_F |sg(max_F CAM) − CAM| + Σ_pairs Σ_B max(CAM, 0)] / Σ_pairs (|F| + |B|)

    The foreground term pulls every seed pixel of the class up to the class's own peak inside its seed (the peak
    is detached: sg = stop-gradient); the background term pushes positive activations elsewhere down.

    Shape: cams (P, H, W) raw CAMs (before any ReLU) of the pairs, at the seeds' resolution; seeds (B, H, W) int
    labels (0 background, c + 1 = class c, `ignore_index`); image_index, class_index (P,) the pairs (class 0-based).
    Returns: ``cam_activation_loss`` and its two parts ``cam_fg_loss``, ``cam_bg_loss`` (same denominator, so
    they add up to the total).
    """
    cam = cams.float()
    lab = seeds[image_index].long()  # (P, H, W)
    fg = lab == (class_index.long() + 1).view(-1, 1, 1)
    bg = (lab != ignore_index) & ~fg
    peak = cam.detach().masked_fill(~fg, float("-inf")).amax(dim=(1, 2), keepdim=True)
    peak = torch.where(fg.any(dim=(1, 2), keepdim=True), peak, torch.zeros_like(peak))  # no F: no fg term
    fg_sum = torch.where(fg, (peak - cam).abs(), torch.zeros_like(cam)).sum()
    bg_sum = torch.where(bg, cam.clamp_min(0.0), torch.zeros_like(cam)).sum()
    count = (fg.sum() + bg.sum()).clamp_min(1).to(cam.dtype)
    fg_loss, bg_loss = fg_sum / count, bg_sum / count
    return {"cam_activation_loss": fg_loss + bg_loss, "cam_fg_loss": fg_loss, "cam_bg_loss": bg_loss}


__all__ = ["cam_activation_loss", "multilabel_contrastive_loss"]
