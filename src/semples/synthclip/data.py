"""Image–caption pairs from the synthetic world, as the toy CLIP sees them.

`PairStream` is a dataset of virtual size (steps × batch): item i is a pure function of (world seed, stream seed,
i), so a resumed run sees exactly the pairs an uninterrupted run would have seen. `clip_input` turns any world
image into what the image tower takes (crop, flip, optional greying of background pixels, normalisation, resize).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from semples.data.synthetic import MASK_FILL_RGB, SyntheticWorld
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


def removal_field(rng: np.random.Generator, object_mask: np.ndarray) -> np.ndarray:
    """(h, w) float32 keep-mask that greys the objects out as a soft, too-large mask would: the object mask dilated
    by 0-4 px and blurred (0 on the objects, 1 far from them)."""
    m = torch.from_numpy(object_mask.astype(np.float32))[None, None]
    grow = int(rng.integers(0, 5))
    if grow:
        m = F.max_pool2d(m, 2 * grow + 1, stride=1, padding=grow)
    blur = int(rng.integers(0, 3))
    for _ in range(blur):
        m = F.avg_pool2d(m, 5, stride=1, padding=2, count_include_pad=False)
    return (1.0 - m[0, 0].clamp(0, 1)).numpy()


def clip_input(image: np.ndarray, rng: np.random.Generator, cfg: PairStreamConfig, size: int,
               object_mask: np.ndarray | None = None, remove_objects: bool = False) -> torch.Tensor:
    """One world image as the image tower sees it during training (`clip_view` without the label map).

    Shape: image (H, W, 3) uint8; object_mask (H, W) bool or None (no object) -> (3, size, size) float32.
    """
    labels = object_mask.astype(np.uint8) if object_mask is not None else None
    return clip_view(image, rng, cfg, size, labels, remove_objects)[0]


def clip_view(image: np.ndarray, rng: np.random.Generator, cfg: PairStreamConfig, size: int,
              label_map: np.ndarray | None = None, remove_objects: bool = False, grey_background: bool = False
              ) -> tuple[torch.Tensor, np.ndarray | None]:
    """One world image as the image tower sees it during training, and its label map cropped and flipped alike.

    Greying multiplies background pixels (``label_map`` 0) of the *normalised* image by a soft field, as
    SemPLeS's masks do, so greyed pixels take the normalisation's mean colour — the world's mask-fill grey.
    With `remove_objects` the objects are greyed out instead (`removal_field`), as (1 − M) ⊙ X does; with
    `grey_background` every background pixel is greyed (the objects cut out onto the mask-fill grey).

    Shape: image (H, W, 3) uint8; label_map (H, W) uint8 (0 = no object, c + 1 = class c) or None ->
    ((3, size, size) float32, the label map's (h, w) crop or None).
    """
    h, w = image.shape[:2]
    lo, hi = cfg.crop_scale
    ch, cw = max(int(round(h * rng.uniform(lo, hi))), 8), max(int(round(w * rng.uniform(lo, hi))), 8)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    image = image[y0:y0 + ch, x0:x0 + cw]
    labels = label_map[y0:y0 + ch, x0:x0 + cw] if label_map is not None else None
    if rng.random() < cfg.flip_prob:
        image = image[:, ::-1]
        labels = labels[:, ::-1] if labels is not None else None
    keep_obj = labels > 0 if labels is not None else None
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    x = normalize(x, "imagenet" if rng.random() < cfg.imagenet_norm_prob else "clip")
    if remove_objects and keep_obj is not None:
        x = x * torch.from_numpy(np.ascontiguousarray(removal_field(rng, keep_obj)))[None]
    elif grey_background and keep_obj is not None:
        x = x * torch.from_numpy(np.ascontiguousarray(keep_obj.astype(np.float32)))[None]
    elif rng.random() < cfg.grey_prob:
        keep = np.zeros((ch, cw), np.float32) if rng.random() < cfg.grey_all_prob else grey_field(rng, ch, cw)
        if keep_obj is not None:
            keep = np.maximum(keep, keep_obj.astype(np.float32))
        x = x * torch.from_numpy(np.ascontiguousarray(keep))[None]
    antialias = bool(rng.random() < cfg.antialias_prob)
    x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)[0]
    return x, (np.ascontiguousarray(labels) if labels is not None else None)


def patch_labels(label_map: np.ndarray | None, size: int, patch: int, min_share: float = 0.5) -> torch.Tensor:
    """(size / patch)² int64 class of each patch of the tower's input: c + 1 where at least `min_share` of the
    patch is class c, else 0 (background, grey, mixed). All 0 without a label map."""
    g = size // patch
    if label_map is None:
        return torch.zeros(g * g, dtype=torch.long)
    lab = torch.from_numpy(label_map.astype(np.int64))[None, None].float()
    lab = F.interpolate(lab, size=(size, size), mode="nearest")[0, 0].long()
    k = int(lab.max())
    if k == 0:
        return torch.zeros(g * g, dtype=torch.long)
    onehot = F.one_hot(lab, k + 1).permute(2, 0, 1).float()[None]  # (1, k + 1, size, size)
    share = F.avg_pool2d(onehot, patch)[0]  # (k + 1, g, g)
    best, cls = share[1:].max(0)
    return torch.where(best >= min_share, cls + 1, torch.zeros_like(cls)).flatten()


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
                 seed: int = 0, patch_size: int | None = None) -> None:
        self.world = world
        self.cfg = cfg
        self.size = size
        self.image_size = image_size
        self.seed = seed
        self.patch_size = patch_size  # also return each patch's object class ("patch_labels") when set

    def __len__(self) -> int:
        return self.size

    def kind(self, index: int, epoch: int = 0) -> str:
        """What pair `index` shows: "background", "blank", "objects_removed" or "item" (a world item)."""
        rng = self._pair_rng(index, epoch)
        u, c = rng.random(), self.cfg
        if u < c.background_only_prob:
            return "background"
        if u < c.background_only_prob + c.blank_prob:
            return "blank"
        if u < c.background_only_prob + c.blank_prob + c.object_removed_prob:
            return "objects_removed"
        if u < c.background_only_prob + c.blank_prob + c.object_removed_prob + c.objects_on_grey_prob:
            return "objects_on_grey"
        return "item"

    def _pair_rng(self, index: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch, index, 7]))

    def pair(self, index: int, epoch: int = 0) -> tuple[np.ndarray, str, np.ndarray | None]:
        """(image uint8, caption, label map or None) of pair `index` before augmentation; the label map is
        (H, W) uint8, 0 = no object, c + 1 = class c."""
        kind = self.kind(index, epoch)
        rng = self._pair_rng(index, epoch)
        rng.random()  # the draw that chose the kind
        key = index + epoch * self.size
        if kind == "background":
            b = int(rng.integers(0, len(self.world.background_names)))
            return self.world.render_background(b, key), self.world.background_caption(b, key), None
        if kind == "blank":
            lo, hi = self.world.cfg.image_size
            h, w = (int(v) for v in rng.integers(lo, hi + 1, 2))
            image = np.empty((h, w, 3), dtype=np.float32)
            image[:] = MASK_FILL_RGB
            if rng.random() < 0.5:  # mask-fill noise: per-pixel or smooth, of random strength
                std = rng.uniform(2.0, 32.0)
                if rng.random() < 0.5:
                    image += rng.normal(0.0, std, image.shape).astype(np.float32)
                else:
                    image += (grey_field(rng, h, w)[..., None] - 0.5) * np.float32(2 * std)
            caption = self.cfg.null_captions[int(rng.integers(0, len(self.cfg.null_captions)))]
            return np.clip(image + 0.5, 0, 255).astype(np.uint8), caption, None
        item = self.world.generate(self.cfg.split, index)
        if kind == "objects_removed":
            return item.image, self.world.backgrounds_caption(self.cfg.split, index, epoch, item=item), item.mask
        if kind == "objects_on_grey":
            caption = self.world.objects_caption(self.cfg.split, index, epoch, item=item)
            return item.image, caption[:-1] + self.cfg.grey_caption_suffix + ".", item.mask
        caption = self.world.caption(self.cfg.split, index, variant=epoch, item=item)
        return item.image, caption, item.mask

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image, caption, label_map = self.pair(index, epoch)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch, index, 11]))
        kind = self.kind(index, epoch) if label_map is not None else "other"
        removed = kind == "objects_removed"
        x, labels = clip_view(image, rng, self.cfg, self.image_size, label_map, remove_objects=removed,
                              grey_background=kind == "objects_on_grey")
        out = {"image": x, "caption": caption, "index": index, "background_only": label_map is None}
        if self.patch_size:
            out["patch_labels"] = patch_labels(None if removed else labels, self.image_size, self.patch_size,
                                               self.cfg.region_min_share)
        return out
