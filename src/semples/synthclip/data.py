"""Image–caption pairs from the synthetic world, as the toy CLIP sees them.

`PairStream` is a dataset of virtual size (steps × batch): item i is a pure function of (world seed, stream seed,
i), so a resumed run sees exactly the pairs an uninterrupted run would have seen. `clip_input` turns any world
image into what the image tower takes (crop, flip, optional greying of background pixels, normalisation, resize).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from semples.data.synthetic import SyntheticWorld
from semples.data.transforms import normalize
from semples.synthclip.config import PairStreamConfig


def grey_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) float32 soft keep-mask in [0, 1]: smooth random blobs, sharp to soft edges (0 = greyed)."""
    g = int(rng.integers(2, 7))
    coarse = torch.from_numpy(rng.random((1, 1, g, g), dtype=np.float32))
    field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    sharpness = float(rng.uniform(4.0, 30.0))
    threshold = float(rng.uniform(0.35, 0.65))
    return torch.sigmoid((field - threshold) * sharpness).numpy()


def clip_input(image: np.ndarray, rng: np.random.Generator, cfg: PairStreamConfig, size: int,
               object_mask: np.ndarray | None = None) -> torch.Tensor:
    """One world image as the image tower sees it during training.

    Greying multiplies background pixels (``object_mask`` False) of the *normalised* image by a soft field, as
    SemPLeS's masks do, so greyed pixels take the normalisation's mean colour — the world's mask-fill grey.

    Shape: image (H, W, 3) uint8; object_mask (H, W) bool or None (no object) -> (3, size, size) float32.
    """
    h, w = image.shape[:2]
    lo, hi = cfg.crop_scale
    ch, cw = max(int(round(h * rng.uniform(lo, hi))), 8), max(int(round(w * rng.uniform(lo, hi))), 8)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    image = image[y0:y0 + ch, x0:x0 + cw]
    keep_obj = object_mask[y0:y0 + ch, x0:x0 + cw] if object_mask is not None else None
    if rng.random() < cfg.flip_prob:
        image = image[:, ::-1]
        keep_obj = keep_obj[:, ::-1] if keep_obj is not None else None
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    x = normalize(x, "imagenet" if rng.random() < cfg.imagenet_norm_prob else "clip")
    if rng.random() < cfg.grey_prob:
        keep = np.zeros((ch, cw), np.float32) if rng.random() < cfg.grey_all_prob else grey_field(rng, ch, cw)
        if keep_obj is not None:
            keep = np.maximum(keep, keep_obj.astype(np.float32))
        x = x * torch.from_numpy(np.ascontiguousarray(keep))[None]
    antialias = bool(rng.random() < cfg.antialias_prob)
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)[0]


def eval_input(image: np.ndarray, size: int, norm: str = "clip") -> torch.Tensor:
    """A world image as the probes feed it: normalised, whole, resized like `FrozenCLIP.encode_image` does.

    Shape: (H, W, 3) uint8 -> (3, size, size) float32.
    """
    x = normalize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0), norm)
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]


class PairStream(torch.utils.data.Dataset):
    """Image–caption pairs of the world; keys are ``index`` or ``(index, epoch)`` (the engine's sampler).

    Returns dicts ``{"image": (3, S, S) float32, "caption": str, "index": int, "background_only": bool}``.

    Args:
        world: the synthetic world.
        cfg: the pair stream's settings.
        size: number of pairs (steps × batch for one pass).
        image_size: side of the image tower's input.
        seed: stream seed (mixing, augmentations); world content comes from the world's own seed.
    """

    def __init__(self, world: SyntheticWorld, cfg: PairStreamConfig, size: int, image_size: int,
                 seed: int = 0) -> None:
        self.world = world
        self.cfg = cfg
        self.size = size
        self.image_size = image_size
        self.seed = seed

    def __len__(self) -> int:
        return self.size

    def pair(self, index: int, epoch: int = 0) -> tuple[np.ndarray, str, np.ndarray | None]:
        """(image uint8, caption, object mask or None) of pair `index` before augmentation."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch, index, 7]))
        if rng.random() < self.cfg.background_only_prob:
            b = int(rng.integers(0, len(self.world.background_names)))
            key = index + epoch * self.size
            return self.world.render_background(b, key), self.world.background_caption(b, key), None
        item = self.world.generate(self.cfg.split, index)
        caption = self.world.caption(self.cfg.split, index, variant=epoch, item=item)
        return item.image, caption, item.mask > 0

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image, caption, object_mask = self.pair(index, epoch)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch, index, 11]))
        x = clip_input(image, rng, self.cfg, self.image_size, object_mask)
        return {"image": x, "caption": caption, "index": index, "background_only": object_mask is None}
