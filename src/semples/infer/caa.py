"""Class-aware attention affinity (CAA; CLIP-ES, Lin et al. CVPR 2023; FMA-WSSS, METHOD.md §2).

CLIP's self-attention between patches is turned into an affinity that propagates each class's CAM to the patches
that attend alike, only from inside the boxes where the CAM is confident:

    W   = mean over the last 8 blocks and all heads of the patch→patch attention      (n, n), n = h·w
    T   = Sinkhorn(W): divide by column sums, then by row sums (1 iteration)         rows of T sum to exactly 1
    S   = (T + Tᵀ) / 2                                                                symmetric
    A   = S^power (matrix power; 2 = square: a two-step random walk)
    box_c = union of the bounding boxes of the connected regions of {CAM_c ≥ threshold · max CAM_c}
            (threshold 0.4 for the coarse seeds, 0.5 for the fine ones)
    CAM'_c = A · (box_c ⊙ CAM_c)         only patches inside the boxes send activation (``restrict_targets``:
                                          patches outside the boxes also receive none)

Row sums, exactly (what `tests/infer/test_caa.py` checks): T is row-stochastic (T·1 = 1). S·1 = (1 + Tᵀ·1) / 2: row i
of S sums to (1 + column sum i of T) / 2, and the sum of all entries of S is n (its mean row sum is 1); S is
doubly stochastic only when T is. A = S^p has row sums S^(p-1)·(S·1) (for p = 2: S·r with r = S·1). So CAA does
not preserve a CAM's scale per pixel; refined CAMs are min-max normalised per class afterwards, as every seed is.

Pure torch on the patch grid; the boxes come from a small flood fill on the grid (no OpenCV / SciPy needed).
"""

from __future__ import annotations

import numpy as np
import torch


def sinkhorn(matrix: torch.Tensor, iterations: int = 1) -> torch.Tensor:
    """Alternating column and row normalisation (columns first); after ≥ 1 iteration rows sum to 1.

    Shape: (..., n, n) non-negative -> same shape.
    """
    t = matrix.float()
    for _ in range(iterations):
        t = t / t.sum(dim=-2, keepdim=True).clamp_min(1e-12)
        t = t / t.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return t


def attention_affinity(attention: torch.Tensor, iterations: int = 1, power: int = 2) -> torch.Tensor:
    """CAA affinity from patch→patch attention: Sinkhorn, symmetrise, matrix power.

    Shape: attention (n, n) or (B, n, n), already averaged over layers and heads, class token removed.
    Returns the affinity A of the same shape (see the module docstring for its row sums).
    """
    if power < 1:
        raise ValueError(f"power must be >= 1, got {power}")
    t = sinkhorn(attention, iterations)
    s = (t + t.transpose(-2, -1)) / 2
    return torch.linalg.matrix_power(s, power)


def component_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (y0, y1, x0, x1), end-exclusive, of the 8-connected regions of a boolean (h, w) mask."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    seen = np.zeros_like(mask)
    boxes = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack = [(int(y), int(x))]
        seen[y, x] = True
        y0, y1, x0, x1 = y, y + 1, x, x + 1
        while stack:
            cy, cx = stack.pop()
            y0, y1, x0, x1 = min(y0, cy), max(y1, cy + 1), min(x0, cx), max(x1, cx + 1)
            for ny in range(max(cy - 1, 0), min(cy + 2, h)):
                for nx in range(max(cx - 1, 0), min(cx + 2, w)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        boxes.append((int(y0), int(y1), int(x0), int(x1)))
    return boxes


def box_mask(cam: torch.Tensor, threshold: float) -> torch.Tensor:
    """Union of the bounding boxes of the regions where ``cam ≥ threshold · max(cam)`` (after min-max).

    Shape: cam (h, w) -> (h, w) bool (all False for a constant map).
    """
    c = cam.detach().float()
    lo, hi = c.min(), c.max()
    out = torch.zeros(c.shape, dtype=torch.bool, device=c.device)
    if not bool(hi > lo):
        return out
    norm = (c - lo) / (hi - lo)
    for y0, y1, x0, x1 in component_boxes((norm >= threshold).cpu().numpy()):
        out[y0:y1, x0:x1] = True
    return out


def caa_refine(cams: torch.Tensor, affinity: torch.Tensor, box_threshold: float = 0.4,
               restrict_targets: bool = False) -> torch.Tensor:
    """Refines grid CAMs with a CAA affinity, each class from inside its own boxes.

    Shape: cams (P, h, w) ≥ 0 on the patch grid; affinity (h·w, h·w). Returns (P, h, w) (not normalised).
    """
    p, h, w = cams.shape
    if affinity.shape != (h * w, h * w):
        raise ValueError(f"affinity {tuple(affinity.shape)} does not fit a {h}×{w} grid")
    if p == 0:
        return cams.float()
    boxes = torch.stack([box_mask(c, box_threshold) for c in cams]).reshape(p, -1)  # (P, n)
    sources = cams.float().reshape(p, -1) * boxes
    refined = sources @ affinity.float().t()  # row p: A · (box ⊙ cam)
    if restrict_targets:
        refined = refined * boxes
    return refined.reshape(p, h, w)


def refine_with_attention(cams: torch.Tensor, attention: torch.Tensor, *, box_threshold: float = 0.4,
                          iterations: int = 1, power: int = 2, restrict_targets: bool = False) -> torch.Tensor:
    """`caa_refine` with the affinity of CLIP attention that still holds the class token.

    Shape: cams (P, h, w); attention (1 + h·w, 1 + h·w) averaged over layers and heads. Returns (P, h, w).
    """
    aff = attention_affinity(attention[1:, 1:], iterations, power)
    return caa_refine(cams, aff, box_threshold, restrict_targets)


__all__ = ["attention_affinity", "box_mask", "caa_refine", "component_boxes", "refine_with_attention", "sinkhorn"]
