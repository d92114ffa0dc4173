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

CAA of *any* CAM folder (SemPLeS seeds of `semples cams`: the "SemPLeS + FMA" path) with the attention of a frozen
CLIP: `clip_attention` + `caa_refine_full` for one image, `CaaTask` for the one inference runner
(`semples.infer.runner`); the config-driven step is `semples.steps.caa`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from semples.data.transforms import normalize, to_tensor
from semples.infer.cam_io import cam_path, load_cam, save_cam
from semples.infer.runner import ImageItem, ImageReader, ImageTask
from semples.infer.views import resize_image, scaled_size
from semples.models.clip_visual import embed, patch_size, run_blocks


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


# ------------------------------------------------------------------------------------------------ CAA of CAM files
@torch.no_grad()
def clip_attention(clip, image, *, scale: float = 1.0, layers: int = 8, device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int], int]:
    """Mean attention of the last `layers` blocks (all heads) of CLIP's image tower on one image.

    The image is resized by `scale`, CLIP-normalised and padded (bottom/right) to a multiple of the patch size.

    Returns:
        (attention (1 + h·w, 1 + h·w) float32, grid (h, w), resized image size (h_s, w_s), patch size).
    """
    visual = clip.model.visual
    p = patch_size(visual)
    h, w = scaled_size(image.height, image.width, scale)
    x = normalize(to_tensor(resize_image(image, scale)), "clip")[None].to(device)
    x = F.pad(x, (0, (-w) % p, 0, (-h) % p))
    depth = len(visual.transformer.resblocks)
    layers = min(layers, depth)
    tokens, grid = embed(visual, x)
    _, attns = run_blocks(visual, tokens, depth, attention_from=depth - layers)
    attn = torch.stack([a.float().mean(1) for a in attns]).mean(0)[0]
    return attn, grid, (h, w), p


def caa_refine_full(cams: torch.Tensor, attention: torch.Tensor, grid: tuple[int, int], resized: tuple[int, int],
                    patch: int, caa, box_threshold: float, eps: float = 1e-5) -> torch.Tensor:
    """CAA of full-resolution CAMs with the attention of a resized, padded copy of their image.

    The CAMs are resized to the resized image, zero-padded like it, average-pooled to the patch grid, refined,
    upsampled back (padding cropped), resized to full resolution and min-max normalised per class.

    Shape: cams (P, H, W); attention (1 + h·w, 1 + h·w). Returns (P, H, W) float32 in [0, 1).
    """
    from semples.infer.cams import minmax_per_class

    p, height, width = cams.shape
    if p == 0:
        return cams.float()
    gh, gw = grid
    hs, ws = resized
    x = F.interpolate(cams.float()[None], size=(hs, ws), mode="bilinear", align_corners=False)
    x = F.pad(x, (0, gw * patch - ws, 0, gh * patch - hs))
    pooled = F.avg_pool2d(x, patch)[0]  # (P, gh, gw)
    aff = attention_affinity(attention[1:, 1:].to(pooled.device), caa.sinkhorn_iterations, caa.power)
    refined = caa_refine(pooled, aff, box_threshold, caa.restrict_targets)
    up = F.interpolate(refined[None], size=(gh * patch, gw * patch), mode="bilinear", align_corners=False)
    up = up[..., :hs, :ws]
    full = F.interpolate(up, size=(height, width), mode="bilinear", align_corners=False)[0]
    return minmax_per_class(full, eps)


@dataclass
class CamAndImage:
    """One image read for CAA: its CAM file's maps and classes, and the RGB image."""

    cams: np.ndarray  # (P, H, W) float32
    classes: np.ndarray  # (P,) 0-based
    image: object  # PIL RGB


@dataclass
class CamFileReader(ImageReader):
    """Reads an image's CAM file from `cams_dir` and decodes the image (in DataLoader workers)."""

    cams_dir: str

    def __call__(self, dataset, index: int) -> CamAndImage:
        cams, classes = load_cam(cam_path(self.cams_dir, dataset.ids[index]))
        return CamAndImage(cams, classes, dataset.load_image(index).convert("RGB"))


class CaaTask(ImageTask):
    """CAA refinement of every image's CAM file with a frozen CLIP's attention, into a new CAM folder.

    Args:
        clip: the frozen CLIP whose attention builds the affinity (FMA-WSSS: ViT-B/16).
        cams_in: the CAM folder to refine (every image must have a file; the step checks).
        caa: a `CaaConfig`.
        box_threshold: CAA box threshold (SemPLeS + FMA: the fine value, 0.5).
        scale: resize factor of the image CLIP sees.
        eps: of the per-class min-max.
    """

    name = "caa"
    suffix = ".npz"

    def __init__(self, clip, cams_in: str | Path, *, caa, box_threshold: float = 0.5, scale: float = 1.0,
                 eps: float = 1e-5) -> None:
        self.clip, self.cams_in = clip, Path(cams_in)
        self.caa, self.box_threshold, self.scale, self.eps = caa, box_threshold, scale, eps
        self.device: torch.device | None = None

    def settings(self) -> dict:
        """What a folder of refined CAMs records as its settings (the input folder and CLIP are its inputs)."""
        from semples.utils.dataclass_config import to_dict

        return {"caa": to_dict(self.caa), "box_threshold": self.box_threshold, "scale": self.scale, "eps": self.eps}

    def reader(self) -> CamFileReader:
        return CamFileReader(str(self.cams_in))

    def setup(self, device) -> None:
        self.device = torch.device(device)
        self.clip = self.clip.to(self.device)

    def compute(self, batch: list[ImageItem]) -> list[np.ndarray]:
        out = []
        for it in batch:
            attn, grid, resized, patch = clip_attention(self.clip, it.data.image, scale=self.scale,
                                                        layers=self.caa.layers, device=self.device)
            refined = caa_refine_full(torch.from_numpy(it.data.cams).to(self.device), attn, grid, resized, patch,
                                      self.caa, self.box_threshold, self.eps)
            out.append(refined.cpu().numpy())
        return out

    def write(self, path: Path, item: ImageItem, output: np.ndarray) -> None:
        save_cam(path, output, item.data.classes)


__all__ = ["CaaTask", "CamAndImage", "CamFileReader", "attention_affinity", "box_mask", "caa_refine",
           "caa_refine_full", "clip_attention", "component_boxes", "refine_with_attention", "sinkhorn"]
