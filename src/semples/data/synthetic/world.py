"""The synthetic world: layouts, rendering and probe images, all pure functions of (world seed, split, index).

Co-occurrence: for each distinct class in an image an independent coin with probability `p_cooc` decides whether
its associated background is present; the backgrounds that fired share the image as wavy horizontal bands (sky on
top, water at the bottom) and each object's centre is drawn inside its own background's band. When no coin
fires, the image gets one background associated with none of its classes. So P(associated background | class)
is exactly `p_cooc`, while a background without its class is rare — the asymmetry a caption-trained CLIP absorbs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from semples.data.synthetic import captions
from semples.data.synthetic.config import MASK_FILL_RGB, SyntheticConfig
from semples.data.synthetic.shapes import OBJECT_SHAPES, TEMPLATE_SIDE, object_template
from semples.data.synthetic.textures import noise_tile, texture_bank

# Vertical order of backgrounds when an image holds several (lower rank = higher in the image).
_ALTITUDE = {"sky": 0, "snow": 1, "brick": 2, "tiles": 3, "grass": 4, "rails": 5, "sand": 6, "water": 7}


@dataclass(frozen=True)
class SyntheticObject:
    """One placed object. `box` = (x0, y0, x1, y1) in pixels (float); `visible` = pixels left after occlusion."""

    class_index: int
    box: tuple[float, float, float, float]
    flip: bool
    on_associated: bool  # its associated background is in the image and the object's centre was drawn in its band
    visible: int


@dataclass
class SyntheticItem:
    """One generated image with its exact annotations.

    Attributes:
        image: (H, W, 3) uint8, or None when only the layout was generated.
        mask: (H, W) uint8, 0 = background, k + 1 = class k (later-painted objects win).
        background_map: (H, W) uint8 background-type id of every pixel (also under objects).
        labels: (K,) float32 multi-hot: classes with at least one visible pixel.
        objects: in painting order.
        backgrounds: background-type ids present, top to bottom.
    """

    image: np.ndarray | None
    mask: np.ndarray
    background_map: np.ndarray
    labels: np.ndarray
    objects: tuple[SyntheticObject, ...]
    backgrounds: tuple[int, ...]


def split_key(split: str) -> int:
    """The 32-bit key of a split name in the world's seed sequences."""
    return zlib.crc32(split.encode("utf-8"))


class SyntheticWorld:
    """Generates items, background-only and object-only images, and captions, all as pure functions of seeds.

    Args:
        cfg: the world's parameters.
    """

    def __init__(self, cfg: SyntheticConfig | None = None) -> None:
        self.cfg = cfg or SyntheticConfig()
        self.class_names: tuple[str, ...] = tuple(self.cfg.classes)
        self.background_names: tuple[str, ...] = tuple(self.cfg.backgrounds)
        # class index -> background-type id of its associated background
        self.class_background: tuple[int, ...] = tuple(
            self.background_names.index(self.cfg.associations[c]) for c in self.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def associations(self) -> dict[str, str]:
        """Class name -> associated background name."""
        return {c: self.background_names[b] for c, b in zip(self.class_names, self.class_background, strict=True)}

    # -- randomness ------------------------------------------------------------------------------------------------
    def _rng(self, split: str, index: int, stream: int, variant: int = 0) -> np.random.Generator:
        """Independent generator per (seed, split, index, stream, variant); streams: 0 layout, 1 pixels, 2 captions."""
        if index < 0:
            raise IndexError(f"synthetic item index must be >= 0, got {index}")
        ss = np.random.SeedSequence(entropy=[self.cfg.seed & 0xFFFFFFFF, split_key(split), index],
                                    spawn_key=(stream, variant))
        return np.random.default_rng(ss)

    # -- generation ------------------------------------------------------------------------------------------------
    def generate(self, split: str, index: int, render: bool = True) -> SyntheticItem:
        """Item `index` of `split`; with `render=False` only mask, background map and labels (no textures)."""
        cfg = self.cfg
        rng = self._rng(split, index, 0)
        lo, hi = cfg.image_size
        h, w = (int(s) for s in rng.integers(lo, hi + 1, 2))
        n_obj = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
        classes = rng.integers(0, self.num_classes, n_obj)
        present = list(dict.fromkeys(int(c) for c in classes))  # distinct classes, first-seen order
        coins = rng.random(len(present)) < cfg.p_cooc
        bgs = list(dict.fromkeys(self.class_background[c] for c, coin in zip(present, coins, strict=True) if coin))
        if not bgs:  # no association fired: a background associated with none of the present classes
            taken = {self.class_background[c] for c in present}
            others = [b for b in range(len(self.background_names)) if b not in taken]
            bgs = [others[int(rng.integers(0, len(others)))]]
        bgs.sort(key=lambda b: _ALTITUDE.get(self.background_names[b], 99))

        # bands: wavy horizontal boundaries; band j spans rows [cuts[j], cuts[j + 1])
        nb = len(bgs)
        cuts = [0.0] + [h * (j + rng.uniform(-0.2, 0.2)) / nb for j in range(1, nb)] + [float(h)]
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        band = np.zeros((h, w), dtype=np.uint8)
        for j in range(1, nb):
            amp, period, phase = rng.uniform(1.0, 4.0), rng.uniform(25.0, 60.0), rng.uniform(0, 2 * np.pi)
            band += (yy >= cuts[j] + amp * np.sin(2 * np.pi * xx / period + phase)).astype(np.uint8)
        background_map = np.asarray(bgs, dtype=np.uint8)[band]

        # objects: box size from object_size, centre inside the associated band when that background is present
        side = min(h, w)
        objects: list[tuple[int, tuple[float, float, float, float], bool, bool, np.ndarray]] = []
        for c in classes:
            c = int(c)
            aspect = OBJECT_SHAPES[self.class_names[c]].aspect
            band_j = bgs.index(self.class_background[c]) if self.class_background[c] in bgs else -1
            for attempt in range(cfg.placement_tries):
                s = rng.uniform(*cfg.object_size) * side
                bw, bh = min(s * np.sqrt(aspect), w * 0.95), min(s / np.sqrt(aspect), h * 0.95)
                cx = rng.uniform(bw / 2, w - bw / 2)
                if band_j >= 0:
                    cy = rng.uniform(cuts[band_j], cuts[band_j + 1])
                else:
                    cy = rng.uniform(0, h)
                cy = float(np.clip(cy, bh / 2, h - bh / 2))
                box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
                if all(_box_iou(box, o[1]) <= cfg.max_box_overlap for o in objects) \
                        or attempt == cfg.placement_tries - 1:
                    break
            flip = bool(rng.random() < 0.5)
            params = rng.random(12)  # spot geometry (used by classes with spots)
            objects.append((c, box, flip, band_j >= 0, params))
        objects.sort(key=lambda o: o[1][3])  # lower boxes are nearer: painted later

        image, jitter, pixel_rng = None, np.ones(len(objects)), None
        if render:
            pixel_rng = self._rng(split, index, 1)
            image = self._render_background(pixel_rng, bgs, band)
            jitter = pixel_rng.uniform(1 - cfg.colour_jitter, 1 + cfg.colour_jitter, len(objects))
        mask = np.zeros((h, w), dtype=np.uint8)
        owner = np.zeros((h, w), dtype=np.uint8)  # which object (1-based, painting order) owns each pixel
        for j, ((c, box, flip, _, params), f) in enumerate(zip(objects, jitter, strict=True)):
            painted = self._paint_object(image, (h, w), c, box, flip, params, float(f))
            if painted is not None:
                rows, cols, silhouette = painted
                mask[rows, cols][silhouette] = c + 1
                owner[rows, cols][silhouette] = j + 1
        if image is not None and pixel_rng is not None:
            image = self._add_noise(pixel_rng, image)
        labels = (np.bincount(mask.ravel(), minlength=self.num_classes + 1)[1:] > 0).astype(np.float32)
        visible = np.bincount(owner.ravel(), minlength=len(objects) + 1)
        placed = tuple(SyntheticObject(c, tuple(float(b) for b in box), flip, on_assoc, int(visible[j + 1]))
                       for j, (c, box, flip, on_assoc, _) in enumerate(objects))
        return SyntheticItem(image, mask, background_map, labels, placed, tuple(bgs))

    def cooccurrence(self, split: str = "train", n: int = 500) -> dict[str, dict[str, float]]:
        """How strongly each class co-occurs with its associated background in the first `n` items of `split`
        (layouts only) — what `p_cooc` controls.

        Per class: ``p_bg_given_class`` = P(its background in the image | class present), ``p_bg_given_absent`` =
        P(its background | class absent), ``lift`` = their ratio, and ``bg_pixel_share`` = the share of the
        ground-truth background pixels of images holding the class that are its associated background.
        """
        k = self.num_classes
        with_k, bg_with_k = np.zeros(k), np.zeros(k)
        without_k, bg_without_k = np.zeros(k), np.zeros(k)
        assoc_px, bg_px = np.zeros(k), np.zeros(k)
        for i in range(n):
            item = self.generate(split, i, render=False)
            present = item.labels > 0.5
            background = item.mask == 0
            for c in range(k):
                has_bg = self.class_background[c] in item.backgrounds
                if present[c]:
                    with_k[c] += 1
                    bg_with_k[c] += has_bg
                    bg_px[c] += background.sum()
                    assoc_px[c] += (background & (item.background_map == self.class_background[c])).sum()
                else:
                    without_k[c] += 1
                    bg_without_k[c] += has_bg
        out = {}
        for c, name in enumerate(self.class_names):
            p_with = bg_with_k[c] / max(with_k[c], 1)
            p_without = bg_without_k[c] / max(without_k[c], 1)
            out[name] = {"p_bg_given_class": float(p_with), "p_bg_given_absent": float(p_without),
                         "lift": float(p_with / p_without) if p_without > 0 else float("inf"),
                         "bg_pixel_share": float(assoc_px[c] / max(bg_px[c], 1))}
        return out

    def _tile(self) -> int:
        return self.cfg.image_size[1] + 64

    def _texture(self, rng: np.random.Generator, background: int, h: int, w: int) -> np.ndarray:
        """(h, w, 3) uint8 view: a random crop (variant, offset, mirror) of the background's texture bank."""
        tile = self._tile()
        bank = texture_bank(self.background_names[background], self.cfg.seed, self.cfg.texture_variants, tile)
        v = int(rng.integers(0, bank.shape[0]))
        y0, x0 = int(rng.integers(0, tile - h + 1)), int(rng.integers(0, tile - w + 1))
        crop = bank[v, y0:y0 + h, x0:x0 + w]
        return crop[:, ::-1] if rng.random() < 0.5 else crop

    def _render_background(self, rng: np.random.Generator, bgs: list[int], band: np.ndarray) -> np.ndarray:
        """(H, W, 3) float32 background: band j shows a texture of background `bgs[j]`."""
        h, w = band.shape
        image = self._texture(rng, bgs[0], h, w).astype(np.float32)
        for j in range(1, len(bgs)):
            np.copyto(image, self._texture(rng, bgs[j], h, w), where=(band == j)[..., None], casting="unsafe")
        return image

    def _add_noise(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """Per-pixel luminance noise (float image in, uint8 out)."""
        h, w = image.shape[:2]
        if self.cfg.pixel_noise > 0:
            tile = self._tile()
            noise = noise_tile(self.cfg.seed, tile)
            y0, x0 = int(rng.integers(0, tile - h + 1)), int(rng.integers(0, tile - w + 1))
            image += noise[y0:y0 + h, x0:x0 + w] * np.float32(self.cfg.pixel_noise)
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)

    def _paint_object(self, image: np.ndarray | None, shape: tuple[int, int], c: int,
                      box: tuple[float, float, float, float], flip: bool, params: np.ndarray,
                      brightness: float) -> tuple[slice, slice, np.ndarray] | None:
        """Paints object `c` into `image` (when given); returns (rows, cols, silhouette) of its pixels."""
        h, w = shape
        x0, y0, x1, y1 = box
        c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), w)
        r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), h)
        if c1 <= c0 or r1 <= r0:
            return None
        name = self.class_names[c]
        template, colours = object_template(name)
        u = (np.arange(c0, c1, dtype=np.float32) + 0.5 - x0) / (x1 - x0)
        v = (np.arange(r0, r1, dtype=np.float32) + 0.5 - y0) / (y1 - y0)
        if flip:
            u = 1.0 - u
        ui = np.clip((u * TEMPLATE_SIDE).astype(np.int64), 0, TEMPLATE_SIDE - 1)
        vi = np.clip((v * TEMPLATE_SIDE).astype(np.int64), 0, TEMPLATE_SIDE - 1)
        ids = template[vi[:, None], ui[None, :]]
        spots = OBJECT_SHAPES[name].spots
        if spots:
            # blotches: ellipses in box coordinates, clipped to the body (region 1), so the silhouette is unchanged
            body = ids == 1
            uu, vv = u[None, :], v[:, None]
            spot_id = np.uint8(len(colours) - 1)
            for j in range(spots):
                cu, cv, ru = 0.2 + 0.5 * params[3 * j], 0.3 + 0.18 * params[3 * j + 1], 0.08 + 0.05 * params[3 * j + 2]
                ids[body & (((uu - cu) / ru) ** 2 + ((vv - cv) / 0.08) ** 2 <= 1.0)] = spot_id
        silhouette = ids > 0
        if image is not None:
            np.copyto(image[r0:r1, c0:c1], colours[ids] * np.float32(brightness), where=silhouette[..., None])
        return slice(r0, r1), slice(c0, c1), silhouette

    # -- probes ----------------------------------------------------------------------------------------------------
    def _size(self, rng: np.random.Generator, size: tuple[int, int] | None) -> tuple[int, int]:
        if size is not None:
            return size
        lo, hi = self.cfg.image_size
        h, w = (int(s) for s in rng.integers(lo, hi + 1, 2))
        return h, w

    def _background_index(self, background: str | int) -> int:
        if isinstance(background, str):
            if background not in self.background_names:
                raise KeyError(f"unknown background {background!r}; valid: {', '.join(self.background_names)}")
            return self.background_names.index(background)
        return int(background)

    def _class_index(self, name: str | int) -> int:
        if isinstance(name, str):
            if name not in self.class_names:
                raise KeyError(f"unknown class {name!r}; valid: {', '.join(self.class_names)}")
            return self.class_names.index(name)
        return int(name)

    def render_background(self, background: str | int, seed: int,
                          size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 image of one background type alone; `size` = (H, W), default drawn from the config."""
        b = self._background_index(background)
        rng = self._rng(f"background-only/{self.background_names[b]}", seed, 0)
        h, w = self._size(rng, size)
        if max(h, w) > self._tile():
            raise ValueError(f"size {size} exceeds the texture tile ({self._tile()} px); raise image_size instead")
        return self._add_noise(rng, self._texture(rng, b, h, w).astype(np.float32))

    def render_object(self, name: str | int, seed: int, fill: tuple[int, int, int] = MASK_FILL_RGB,
                      size: tuple[int, int] | None = None, background: str | int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """One object on a flat `fill` colour (default: the masked-pixel grey), or on one `background` type.

        The object (size, place, flip, colours, pixel noise) depends only on (class, seed): the same seed with
        and without `background` gives the same object in and out of context. Returns (image uint8, mask uint8).
        """
        c = self._class_index(name)
        rng = self._rng(f"object-only/{self.class_names[c]}", seed, 0)
        h, w = self._size(rng, size)
        aspect = OBJECT_SHAPES[self.class_names[c]].aspect
        s = rng.uniform(*self.cfg.object_size) * min(h, w)
        bw, bh = min(s * np.sqrt(aspect), w * 0.95), min(s / np.sqrt(aspect), h * 0.95)
        cx, cy = rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2)
        if background is None:
            image = np.empty((h, w, 3), dtype=np.float32)
            image[:] = fill
        else:  # its own random stream: the object's stays the same
            b = self._background_index(background)
            bg_rng = self._rng(f"object-on/{self.class_names[c]}/{self.background_names[b]}", seed, 1)
            image = self._texture(bg_rng, b, h, w).astype(np.float32)
        mask = np.zeros((h, w), dtype=np.uint8)
        box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
        painted = self._paint_object(image, (h, w), c, box, bool(rng.random() < 0.5), rng.random(12),
                                     float(rng.uniform(1 - self.cfg.colour_jitter, 1 + self.cfg.colour_jitter)))
        if painted is not None:
            mask[painted[0], painted[1]][painted[2]] = c + 1
        return self._add_noise(rng, image), mask

    # -- captions --------------------------------------------------------------------------------------------------
    def caption(self, split: str, index: int, variant: int = 0, item: SyntheticItem | None = None) -> str:
        """A web-style caption of item `index`: names the visible objects, names the background(s) only with
        probability `caption_background_prob`. `variant` picks another caption of the same item (e.g. the epoch).
        """
        item = item if item is not None else self.generate(split, index, render=False)
        rng = self._rng(split, index, 2, variant)
        counts: dict[str, int] = {}
        for o in item.objects:
            if o.visible > 0:
                name = self.class_names[o.class_index]
                counts[name] = counts.get(name, 0) + 1
        return captions.web_caption(rng, counts, [self.background_names[b] for b in item.backgrounds],
                                    self.cfg.caption_background_prob, self.cfg.caption_partial_prob)

    def objects_caption(self, split: str, index: int, variant: int = 0, item: SyntheticItem | None = None) -> str:
        """A caption of item `index` naming its visible objects and never its background(s)."""
        item = item if item is not None else self.generate(split, index, render=False)
        rng = self._rng(split, index, 4, variant)
        counts: dict[str, int] = {}
        for o in item.objects:
            if o.visible > 0:
                name = self.class_names[o.class_index]
                counts[name] = counts.get(name, 0) + 1
        return captions.web_caption(rng, counts, [], 0.0, self.cfg.caption_partial_prob)

    def backgrounds_caption(self, split: str, index: int, variant: int = 0,
                            item: SyntheticItem | None = None) -> str:
        """A caption naming only the background(s) of item `index` (its objects taken out), e.g. "grass." """
        item = item if item is not None else self.generate(split, index, render=False)
        rng = self._rng(split, index, 3, variant)
        return captions.backgrounds_caption(rng, [self.background_names[b] for b in item.backgrounds])

    def background_captions(self, background: str | int) -> list[str]:
        """Every caption of one background alone, e.g. ["a photo of water.", "a picture of water.", "water."]."""
        return captions.background_captions(self.background_names[self._background_index(background)])

    def background_caption(self, background: str | int, seed: int) -> str:
        """One caption of a background alone, chosen by `seed` (pairs with `render_background(background, seed)`)."""
        options = self.background_captions(background)
        return options[int(self._rng("background-caption", seed, 2).integers(0, len(options)))]

    def class_captions(self, name: str | int) -> list[str]:
        """Every single-object caption of a class, without background words."""
        return captions.class_captions(self.class_names[self._class_index(name)])

    def vocabulary(self) -> list[str]:
        """Every word any caption of this world can contain (sorted; punctuation split off)."""
        return captions.vocabulary(self.class_names, self.background_names, self.cfg.objects_per_image[1])


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
