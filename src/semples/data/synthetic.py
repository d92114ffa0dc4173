"""A synthetic co-occurrence world: objects on procedural backgrounds that usually come with them.

Each object class has an *associated* background (boat/water, plane/sky, cow/grass, train/rails, bird/sand,
car/snow) that appears in an image containing the class with probability `p_cooc`. A CLIP trained on captions
that name the objects but usually not the background learns the same bias real CLIP has — the problem SemPLeS
addresses (learned prompts that capture and suppress co-occurring backgrounds, METHOD.md §1).

Co-occurrence: for each distinct class in an image an independent coin with probability `p_cooc` decides whether its
associated background is present; the backgrounds that fired share the image as wavy horizontal bands (sky on
top, water at the bottom) and each object's centre is drawn inside its own background's band. When no coin fires,
the image gets one background associated with none of its classes. So P(associated background | class) is exactly
`p_cooc`, while a background without its class is rare — the asymmetry a caption-trained CLIP absorbs.

Everything is a pure function of (world seed, split name, index): no state, no generation order, no workers
involved. Masks are exact (they are painted together with the pixels), labels are the classes with visible
pixels, and every item exposes the background type of each pixel, so the *leak rate* (share of a class's
associated-background pixels predicted as that class) can be measured.

Entry points: `SyntheticConfig` (every world parameter), `SyntheticWorld` (generation, captions, probes),
`SyntheticDataset` / `build_synthetic` (the dataset contract), `preview_grid` (a PNG to look at).
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from semples.data.base import ClassTable, DataError, RawItem, SegmentationDataset
from semples.utils.dataclass_config import ConfigError

if TYPE_CHECKING:
    from semples.data.config import DataConfig

logger = logging.getLogger(__name__)

# ImageNet mean as 8-bit RGB: the colour masked pixels take when a mask multiplies an ImageNet-normalised image.
# Backgrounds are kept well away from it so that "masked out" never looks like a background type.
MASK_FILL_RGB = (124, 116, 104)

DEFAULT_ASSOCIATIONS = {
    "boat": "water",
    "plane": "sky",
    "cow": "grass",
    "train": "rails",
    "bird": "sand",
    "car": "snow",
}

DEFAULT_SPLITS = {"train": 2000, "val": 300, "test": 300}

# How captions name each background alone ("a photo of {noun}.") and next to objects ("a cow {prep}.").
BACKGROUND_WORDS: dict[str, tuple[str, str]] = {
    "water": ("water", "on the water"),
    "sky": ("the sky", "in the sky"),
    "grass": ("grass", "on the grass"),
    "rails": ("railway tracks", "on railway tracks"),
    "sand": ("sand", "on the sand"),
    "snow": ("snow", "in the snow"),
    "brick": ("a brick wall", "by a brick wall"),
    "tiles": ("tiles", "on tiles"),
}
# Vertical order of backgrounds when an image holds several (lower rank = higher in the image).
_ALTITUDE = {"sky": 0, "snow": 1, "brick": 2, "tiles": 3, "grass": 4, "rails": 5, "sand": 6, "water": 7}

_PLURALS: dict[str, str] = {"bus": "buses", "sheep": "sheep", "person": "people"}  # irregular plurals
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
_OBJECT_TEMPLATES = ("a photo of {o}.", "a picture of {o}.", "{o}.")
_OBJECT_BG_TEMPLATES = ("a photo of {o} {prep}.", "a picture of {o} {prep}.", "{o} {prep}.")
_OBJECT_MULTI_BG_TEMPLATES = ("a photo of {o} with {bgs}.", "{o} with {bgs}.")
_BACKGROUND_TEMPLATES = ("a photo of {noun}.", "a picture of {noun}.", "{noun}.")


@dataclass(frozen=True)
class SyntheticConfig:
    """Every parameter of the synthetic world (YAML: ``data.synthetic.<field>``)."""

    seed: int = 0  # world seed: item i of split s is a pure function of (seed, s, i)
    splits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SPLITS))  # name -> size, over the defaults
    image_size: tuple[int, int] = (96, 128)  # (min, max) side in pixels; height and width drawn independently
    classes: tuple[str, ...] = tuple(DEFAULT_ASSOCIATIONS)  # object classes, in label order (see OBJECT_SHAPES)
    backgrounds: tuple[str, ...] = ("water", "sky", "grass", "rails", "sand", "snow", "brick", "tiles")
    associations: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ASSOCIATIONS))  # class -> background
    p_cooc: float = 0.8  # probability that a class present in an image comes with its associated background
    objects_per_image: tuple[int, int] = (1, 3)  # (min, max) objects, drawn uniformly; classes drawn uniformly
    object_size: tuple[float, float] = (0.3, 0.55)  # sqrt(box area) as a fraction of the shorter image side
    max_box_overlap: float = 0.25  # placements whose box IoU with an earlier object exceeds this are redrawn
    placement_tries: int = 6  # redraws before an overlapping placement is accepted anyway
    colour_jitter: float = 0.12  # per-object brightness factor range (1 ± this)
    pixel_noise: float = 5.0  # std of the per-pixel luminance noise (8-bit units); 0 = off
    texture_variants: int = 24  # pre-generated texture tiles per background type (images crop them at random)
    caption_background_prob: float = 0.2  # share of object captions that also name the background(s)
    cache: bool = False  # keep generated items in memory (per dataset object, per worker: ~50 kB per item)

    def validate(self) -> None:
        lo, hi = self.image_size
        if not 32 <= lo <= hi:
            raise ConfigError(f"data.synthetic.image_size must satisfy 32 <= min <= max, got {self.image_size}")
        unknown = [c for c in self.classes if c not in OBJECT_SHAPES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"data.synthetic.classes must be distinct names among {', '.join(OBJECT_SHAPES)}; "
                              f"got {self.classes}")
        unknown = [b for b in self.backgrounds if b not in BACKGROUND_TEXTURES]
        if unknown or len(set(self.backgrounds)) != len(self.backgrounds):
            raise ConfigError(f"data.synthetic.backgrounds must be distinct names among "
                              f"{', '.join(BACKGROUND_TEXTURES)}; got {self.backgrounds}")
        for c in self.classes:
            if self.associations.get(c) not in self.backgrounds:
                raise ConfigError(f"data.synthetic.associations: class {c!r} needs an associated background among "
                                  f"data.synthetic.backgrounds ({', '.join(self.backgrounds)}), got "
                                  f"{self.associations.get(c)!r}")
        if not 0.0 <= self.p_cooc <= 1.0:
            raise ConfigError(f"data.synthetic.p_cooc must be in [0, 1], got {self.p_cooc}")
        omin, omax = self.objects_per_image
        if not 1 <= omin <= omax <= 5:
            raise ConfigError(f"data.synthetic.objects_per_image must satisfy 1 <= min <= max <= 5, "
                              f"got {self.objects_per_image}")
        if len(self.backgrounds) < omax + 1:
            raise ConfigError(f"data.synthetic.backgrounds needs at least objects_per_image max + 1 = {omax + 1} "
                              f"types (so a non-associated background always exists), got {len(self.backgrounds)}")
        if not 0.05 <= self.object_size[0] <= self.object_size[1] <= 0.9:
            raise ConfigError(f"data.synthetic.object_size must satisfy 0.05 <= min <= max <= 0.9, "
                              f"got {self.object_size}")
        if self.texture_variants < 1:
            raise ConfigError(f"data.synthetic.texture_variants must be >= 1, got {self.texture_variants}")
        if any(n < 0 for n in self.splits.values()):
            raise ConfigError(f"data.synthetic.splits sizes must be >= 0, got {self.splits}")
        if not 0.0 <= self.caption_background_prob <= 1.0:
            raise ConfigError(f"data.synthetic.caption_background_prob must be in [0, 1], "
                              f"got {self.caption_background_prob}")

    def __post_init__(self) -> None:
        self.validate()

    def split_sizes(self) -> dict[str, int]:
        """Split name -> size: `splits` over `DEFAULT_SPLITS` (so ``splits.train=50`` keeps val and test)."""
        return {**DEFAULT_SPLITS, **self.splits}


# ---------------------------------------------------------------------------------------------------------------
# Objects: side views built from a few primitives in box coordinates (u to the right, v down, both in [0, 1]).
# A shape function returns [(region, rgb), ...] painted in order. It is evaluated once per class on a fine grid
# (a template of region ids); an object samples its template with nearest-neighbour indexing, so pixels and mask
# come from the same region-id array and always agree. Per-object randomness (cow blotches, brightness) comes
# from the layout, which keeps masks computable without rendering colours.
# ---------------------------------------------------------------------------------------------------------------

Region = np.ndarray  # (h, w) bool
ShapeFn = Callable[[np.ndarray, np.ndarray], list[tuple[Region, tuple[float, float, float]]]]


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> Region:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _rect(u: np.ndarray, v: np.ndarray, u0: float, v0: float, u1: float, v1: float) -> Region:
    return ((u >= u0) & (u <= u1)) & ((v >= v0) & (v <= v1))


def _poly(u: np.ndarray, v: np.ndarray, pts: list[tuple[float, float]]) -> Region:
    """Convex polygon (vertices in either orientation) by half-plane tests."""
    n = len(pts)
    area = sum(pts[i][0] * pts[(i + 1) % n][1] - pts[(i + 1) % n][0] * pts[i][1] for i in range(n))
    sign = 1.0 if area > 0 else -1.0
    inside = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for i in range(n):
        (a0, b0), (a1, b1) = pts[i], pts[(i + 1) % n]
        inside &= sign * ((a1 - a0) * (v - b0) - (b1 - b0) * (u - a0)) >= 0
    return inside


def _boat(u: np.ndarray, v: np.ndarray) -> list:
    hull = (230.0, 115.0, 20.0)
    return [
        (_poly(u, v, [(0.0, 0.66), (1.0, 0.66), (0.84, 0.96), (0.16, 0.96)]), hull),
        (_rect(u, v, 0.06, 0.70, 0.94, 0.76), (120.0, 45.0, 10.0)),
        (_rect(u, v, 0.47, 0.06, 0.53, 0.66), (70.0, 45.0, 25.0)),
        (_poly(u, v, [(0.55, 0.08), (0.55, 0.62), (0.95, 0.62)]), (248.0, 248.0, 244.0)),
        (_poly(u, v, [(0.45, 0.18), (0.45, 0.62), (0.12, 0.62)]), (235.0, 225.0, 200.0)),
    ]


def _plane(u: np.ndarray, v: np.ndarray) -> list:
    white = (238.0, 238.0, 244.0)
    windows = _rect(u, v, 0.28, 0.47, 0.80, 0.53) & (np.mod(u * 28.0, 1.0) < 0.5)
    return [
        (_poly(u, v, [(0.03, 0.18), (0.12, 0.18), (0.26, 0.5), (0.10, 0.5)]), (215.0, 30.0, 40.0)),
        (_ellipse(u, v, 0.5, 0.52, 0.47, 0.13), white),
        (_poly(u, v, [(0.40, 0.58), (0.62, 0.58), (0.46, 0.94), (0.36, 0.94)]), (185.0, 195.0, 225.0)),
        (windows, (40.0, 60.0, 130.0)),
        (_poly(u, v, [(0.86, 0.44), (0.93, 0.44), (0.96, 0.5), (0.88, 0.5)]), (40.0, 60.0, 130.0)),
    ]


def _cow(u: np.ndarray, v: np.ndarray) -> list:
    white, black, pink = (245.0, 245.0, 240.0), (30.0, 30.0, 30.0), (240.0, 160.0, 165.0)
    regions = [(_ellipse(u, v, 0.46, 0.42, 0.34, 0.22), white)]  # body: region 1, gets the blotches
    for u0 in (0.18, 0.30, 0.58, 0.70):
        regions.append((_rect(u, v, u0, 0.50, u0 + 0.07, 0.88), white))
        regions.append((_rect(u, v, u0, 0.88, u0 + 0.07, 0.97), black))
    regions += [
        (_rect(u, v, 0.08, 0.30, 0.12, 0.62), black),
        (_ellipse(u, v, 0.86, 0.30, 0.11, 0.15), black),
        (_ellipse(u, v, 0.90, 0.40, 0.07, 0.06), pink),
        (_poly(u, v, [(0.80, 0.18), (0.84, 0.18), (0.80, 0.06)]), (235.0, 225.0, 190.0)),
        (_poly(u, v, [(0.90, 0.18), (0.94, 0.18), (0.96, 0.06)]), (235.0, 225.0, 190.0)),
        (_ellipse(u, v, 0.48, 0.62, 0.07, 0.05), pink),
    ]
    return regions


def _train(u: np.ndarray, v: np.ndarray) -> list:
    blue = (35.0, 75.0, 190.0)
    windows = _rect(u, v, 0.06, 0.24, 0.80, 0.46) & (np.mod(u * 11.0, 1.0) < 0.6)
    regions = [
        (_poly(u, v, [(0.01, 0.10), (0.86, 0.10), (0.99, 0.45), (0.99, 0.82), (0.01, 0.82)]), blue),
        (_rect(u, v, 0.0, 0.04, 0.86, 0.12), (25.0, 35.0, 80.0)),
        (windows, (250.0, 215.0, 60.0)),
        (_poly(u, v, [(0.86, 0.16), (0.90, 0.16), (0.96, 0.44), (0.86, 0.44)]), (250.0, 215.0, 60.0)),
        (_rect(u, v, 0.01, 0.60, 0.99, 0.67), (245.0, 245.0, 245.0)),
    ]
    for cu in (0.10, 0.24, 0.76, 0.90):
        regions.append((_ellipse(u, v, cu, 0.84, 0.055, 0.15), (25.0, 25.0, 25.0)))
    return regions


def _bird(u: np.ndarray, v: np.ndarray) -> list:
    red, dark, orange = (210.0, 25.0, 45.0), (120.0, 10.0, 25.0), (250.0, 160.0, 20.0)
    return [
        (_poly(u, v, [(0.22, 0.42), (0.0, 0.30), (0.0, 0.62), (0.22, 0.56)]), dark),
        (_rect(u, v, 0.40, 0.66, 0.44, 0.96), orange),
        (_rect(u, v, 0.52, 0.66, 0.56, 0.96), orange),
        (_ellipse(u, v, 0.45, 0.50, 0.28, 0.22), red),
        (_ellipse(u, v, 0.74, 0.28, 0.14, 0.17), red),
        (_ellipse(u, v, 0.40, 0.47, 0.19, 0.11), dark),
        (_poly(u, v, [(0.85, 0.22), (0.85, 0.36), (1.0, 0.30)]), orange),
        (_ellipse(u, v, 0.78, 0.24, 0.03, 0.04), (10.0, 10.0, 10.0)),
    ]


def _car(u: np.ndarray, v: np.ndarray) -> list:
    purple, glass, black = (145.0, 35.0, 175.0), (170.0, 215.0, 245.0), (25.0, 25.0, 25.0)
    return [
        (_poly(u, v, [(0.0, 0.46), (0.05, 0.40), (0.94, 0.40), (1.0, 0.50), (1.0, 0.80), (0.0, 0.80)]), purple),
        (_poly(u, v, [(0.22, 0.42), (0.32, 0.08), (0.68, 0.08), (0.80, 0.42)]), purple),
        (_poly(u, v, [(0.28, 0.39), (0.35, 0.14), (0.48, 0.14), (0.48, 0.39)]), glass),
        (_poly(u, v, [(0.52, 0.39), (0.52, 0.14), (0.65, 0.14), (0.74, 0.39)]), glass),
        (_ellipse(u, v, 0.95, 0.52, 0.03, 0.05), (250.0, 230.0, 90.0)),
        (_ellipse(u, v, 0.22, 0.80, 0.11, 0.19), black),
        (_ellipse(u, v, 0.78, 0.80, 0.11, 0.19), black),
        (_ellipse(u, v, 0.22, 0.80, 0.045, 0.08), (180.0, 180.0, 190.0)),
        (_ellipse(u, v, 0.78, 0.80, 0.045, 0.08), (180.0, 180.0, 190.0)),
    ]


@dataclass(frozen=True)
class ObjectShape:
    """A drawable object class.

    Attributes:
        draw: shape function (u, v) -> [(region, rgb), ...], painted in order.
        aspect: box width / height.
        spots: random blotches per object (ellipses clipped to region 1, the body), coloured `spot_rgb`.
    """

    draw: ShapeFn
    aspect: float
    spots: int = 0
    spot_rgb: tuple[float, float, float] = (30.0, 30.0, 30.0)


OBJECT_SHAPES: dict[str, ObjectShape] = {
    "boat": ObjectShape(_boat, 1.0),
    "plane": ObjectShape(_plane, 1.8),
    "cow": ObjectShape(_cow, 1.4, spots=3),
    "train": ObjectShape(_train, 2.6),
    "bird": ObjectShape(_bird, 1.2),
    "car": ObjectShape(_car, 1.9),
}

_TEMPLATE_SIDE = 256  # template resolution in u and v (objects are at most ~120 px on a side)


@functools.cache
def _object_template(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(region ids (T, T) uint8, 0 = outside; colours (R + 2, 3) float32, the last one for spots) of a class."""
    t = (np.arange(_TEMPLATE_SIDE, dtype=np.float32) + 0.5) / _TEMPLATE_SIDE
    shape = OBJECT_SHAPES[name]
    regions = shape.draw(t[None, :], t[:, None])
    ids = np.zeros((_TEMPLATE_SIDE, _TEMPLATE_SIDE), dtype=np.uint8)
    for j, (region, _) in enumerate(regions):
        ids[np.broadcast_to(region, ids.shape)] = j + 1
    colours = np.asarray([(0.0, 0.0, 0.0)] + [rgb for _, rgb in regions] + [shape.spot_rgb], dtype=np.float32)
    ids.flags.writeable = False
    colours.flags.writeable = False
    return ids, colours


# ---------------------------------------------------------------------------------------------------------------
# Backgrounds: procedural textures, (H, W, 3) float32 in 8-bit units, all vectorised. Each keeps its mean colour
# far from MASK_FILL_RGB (tested).
# ---------------------------------------------------------------------------------------------------------------


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Bilinearly interpolated value noise in [0, 1] with one random value every `cell` pixels."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    g = rng.random((gh, gw), dtype=np.float32)
    y = np.arange(h, dtype=np.float32) / cell
    x = np.arange(w, dtype=np.float32) / cell
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = g[y0][:, x0] * (1 - fx) + g[y0][:, x0 + 1] * fx
    bottom = g[y0 + 1][:, x0] * (1 - fx) + g[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _mix(a: tuple[float, ...], b: tuple[float, ...], t: np.ndarray) -> np.ndarray:
    """(H, W, 3): colour a where t = 0, b where t = 1."""
    a_, b_ = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return a_ + (b_ - a_) * t[..., None]


def _tex_water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = _grid(h, w)
    lam, lam2 = rng.uniform(6, 10), rng.uniform(18, 36)
    phase = rng.uniform(0, 2 * np.pi, 2)
    t = np.sin(2 * np.pi * y / lam + rng.uniform(0.8, 1.6) * np.sin(2 * np.pi * x / lam2 + phase[0]) + phase[1])
    img = _mix((25.0, 80.0, 150.0), (70.0, 150.0, 210.0), (t + 1) * 0.5)
    crest = (t > 0.9) & (_smooth_noise(rng, h, w, 6.0) > 0.55)
    img[crest] = (215.0, 238.0, 250.0)
    return img


def _tex_sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, _ = _grid(h, w)
    img = _mix((80.0, 145.0, 230.0), (165.0, 205.0, 245.0), np.broadcast_to(y / h, (h, w)))
    n = _smooth_noise(rng, h, w, rng.uniform(12, 20)) * 0.7 + _smooth_noise(rng, h, w, 5.0) * 0.3
    cloud = np.clip((n - rng.uniform(0.5, 0.62)) * 5.0, 0.0, 1.0)
    return img + (np.asarray((250.0, 250.0, 252.0), dtype=np.float32) - img) * cloud[..., None]


def _tex_grass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    blade = int(rng.integers(5, 9))
    offset = rng.integers(0, blade, w)
    y, x = _grid(h, w)
    yy = y.astype(np.int64) + offset[None, :]
    cell, frac = yy // blade, (yy % blade).astype(np.float32) / blade
    shade = rng.random((h // blade + 2, w), dtype=np.float32)[cell, np.arange(w)[None, :]]
    t = np.clip(0.25 + 0.6 * shade * (1.0 - frac) + 0.15 * _smooth_noise(rng, h, w, 16.0), 0.0, 1.0)
    return _mix((30.0, 95.0, 25.0), (130.0, 200.0, 60.0), t)


def _tex_rails(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = _grid(h, w)
    gravel = rng.random(((h + 1) // 2, (w + 1) // 2), dtype=np.float32).repeat(2, 0).repeat(2, 1)[:h, :w]
    img = _mix((105.0, 45.0, 20.0), (180.0, 100.0, 50.0), gravel)  # rust-brown ballast, far from grey
    period, sleeper = rng.uniform(26, 36), rng.uniform(8, 12)
    py = np.mod(y + rng.uniform(0, period), period) / period  # position within one track (0..1)
    px = np.mod(x + rng.uniform(0, sleeper), sleeper) / sleeper
    sleepers = (py > 0.18) & (py < 0.82) & (px < 0.4)
    img[np.broadcast_to(sleepers, (h, w))] = (70.0, 42.0, 25.0)
    for centre in (0.3, 0.7):
        rail = np.broadcast_to(np.abs(py - centre) * period < 1.3, (h, w))
        img[rail] = (200.0, 205.0, 215.0)
        img[np.broadcast_to((py - centre) * period >= 1.3, (h, w)) & np.broadcast_to(
            (py - centre) * period < 2.2, (h, w))] = (40.0, 40.0, 45.0)
    return img


def _tex_sand(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = _grid(h, w)
    theta, lam = rng.uniform(-0.5, 0.5), rng.uniform(9, 15)
    ripple = np.sin(2 * np.pi * (x * np.sin(theta) + y * np.cos(theta)) / lam
                    + 1.5 * np.sin(2 * np.pi * x / rng.uniform(30, 60)))
    t = 0.5 + 0.22 * ripple + 0.28 * (rng.random((h, w), dtype=np.float32) - 0.5)
    return _mix((205.0, 165.0, 100.0), (245.0, 220.0, 160.0), t)


def _tex_snow(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    n = _smooth_noise(rng, h, w, rng.uniform(14, 24))
    img = _mix((185.0, 205.0, 235.0), (248.0, 250.0, 255.0), np.clip(n * 1.6 - 0.1, 0.0, 1.0))
    sparkle = rng.random((h, w), dtype=np.float32) > 0.985
    img[sparkle] = (255.0, 255.0, 255.0)
    return img


def _tex_brick(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    bh, bw = int(rng.integers(7, 10)), int(rng.integers(15, 21))
    yi = np.arange(h)[:, None] + int(rng.integers(0, bh))
    row = yi // bh
    xi = np.arange(w)[None, :] + (row % 2) * (bw // 2) + int(rng.integers(0, bw))
    col = xi // bw
    jitter = rng.uniform(0.8, 1.15, (h // bh + 3, w // bw + 4)).astype(np.float32)[row, col]
    img = np.asarray((175.0, 60.0, 40.0), dtype=np.float32) * jitter[..., None]
    mortar = (yi % bh == 0) | (xi % bw == 0)
    img[mortar] = (220.0, 210.0, 190.0)
    return img


def _tex_tiles(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    s = int(rng.integers(10, 15))
    yi = np.arange(h)[:, None] + int(rng.integers(0, s))
    xi = np.arange(w)[None, :] + int(rng.integers(0, s))
    checker = ((yi // s + xi // s) % 2).astype(np.float32)
    img = _mix((35.0, 150.0, 150.0), (230.0, 240.0, 225.0), np.broadcast_to(checker, (h, w)))
    img[(yi % s == 0) | (xi % s == 0)] = (20.0, 70.0, 80.0)
    return img


BACKGROUND_TEXTURES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "water": _tex_water,
    "sky": _tex_sky,
    "grass": _tex_grass,
    "rails": _tex_rails,
    "sand": _tex_sand,
    "snow": _tex_snow,
    "brick": _tex_brick,
    "tiles": _tex_tiles,
}


@functools.lru_cache(maxsize=64)
def _texture_bank(name: str, seed: int, variants: int, tile: int) -> np.ndarray:
    """(variants, tile, tile, 3) uint8 texture tiles of one background type; images crop them at random offsets.

    Generating a texture costs ~0.5 ms per image; cropping a pre-generated tile costs ~10 µs. The bank is a pure
    function of its arguments (and so of the world seed), built lazily once per process.
    """
    bank = np.empty((variants, tile, tile, 3), dtype=np.uint8)
    for v in range(variants):
        rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, _split_key(f"texture/{name}"), v]))
        bank[v] = np.clip(BACKGROUND_TEXTURES[name](rng, tile, tile) + 0.5, 0, 255)
    bank.flags.writeable = False
    return bank


@functools.lru_cache(maxsize=8)
def _noise_tile(seed: int, tile: int) -> np.ndarray:
    """(tile, tile, 1) float32 standard-normal pixel noise; images crop it at random offsets."""
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, _split_key("pixel-noise")]))
    noise = rng.standard_normal((tile, tile, 1), dtype=np.float32)
    noise.flags.writeable = False
    return noise


# ---------------------------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------------------------


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


def _split_key(split: str) -> int:
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
        ss = np.random.SeedSequence(entropy=[self.cfg.seed & 0xFFFFFFFF, _split_key(split), index],
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

    def _tile(self) -> int:
        return self.cfg.image_size[1] + 64

    def _texture(self, rng: np.random.Generator, background: int, h: int, w: int) -> np.ndarray:
        """(h, w, 3) uint8 view: a random crop (variant, offset, mirror) of the background's texture bank."""
        tile = self._tile()
        bank = _texture_bank(self.background_names[background], self.cfg.seed, self.cfg.texture_variants, tile)
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
            noise = _noise_tile(self.cfg.seed, tile)
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
        template, colours = _object_template(name)
        u = (np.arange(c0, c1, dtype=np.float32) + 0.5 - x0) / (x1 - x0)
        v = (np.arange(r0, r1, dtype=np.float32) + 0.5 - y0) / (y1 - y0)
        if flip:
            u = 1.0 - u
        ui = np.clip((u * _TEMPLATE_SIDE).astype(np.int64), 0, _TEMPLATE_SIDE - 1)
        vi = np.clip((v * _TEMPLATE_SIDE).astype(np.int64), 0, _TEMPLATE_SIDE - 1)
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
                      size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One object on a flat `fill` colour (default: the masked-pixel grey). Returns (image uint8, mask uint8)."""
        c = self._class_index(name)
        rng = self._rng(f"object-only/{self.class_names[c]}", seed, 0)
        h, w = self._size(rng, size)
        aspect = OBJECT_SHAPES[self.class_names[c]].aspect
        s = rng.uniform(*self.cfg.object_size) * min(h, w)
        bw, bh = min(s * np.sqrt(aspect), w * 0.95), min(s / np.sqrt(aspect), h * 0.95)
        cx, cy = rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2)
        image = np.empty((h, w, 3), dtype=np.float32)
        image[:] = fill
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
        counts: dict[int, int] = {}
        for o in item.objects:
            if o.visible > 0:
                counts[o.class_index] = counts.get(o.class_index, 0) + 1
        order = list(counts)
        rng.shuffle(order)
        objects = " and ".join(_count_phrase(self.class_names[c], counts[c]) for c in order)
        if rng.random() >= self.cfg.caption_background_prob:
            return _OBJECT_TEMPLATES[int(rng.integers(0, len(_OBJECT_TEMPLATES)))].format(o=objects)
        names = [self.background_names[b] for b in item.backgrounds]
        if len(names) == 1:
            template = _OBJECT_BG_TEMPLATES[int(rng.integers(0, len(_OBJECT_BG_TEMPLATES)))]
            return template.format(o=objects, prep=BACKGROUND_WORDS[names[0]][1])
        template = _OBJECT_MULTI_BG_TEMPLATES[int(rng.integers(0, len(_OBJECT_MULTI_BG_TEMPLATES)))]
        return template.format(o=objects, bgs=" and ".join(BACKGROUND_WORDS[n][0] for n in names))

    def background_captions(self, background: str | int) -> list[str]:
        """Every caption of one background alone, e.g. ["a photo of water.", "a picture of water.", "water."]."""
        noun = BACKGROUND_WORDS[self.background_names[self._background_index(background)]][0]
        return [t.format(noun=noun) for t in _BACKGROUND_TEMPLATES]

    def background_caption(self, background: str | int, seed: int) -> str:
        """One caption of a background alone, chosen by `seed` (pairs with `render_background(background, seed)`)."""
        captions = self.background_captions(background)
        return captions[int(self._rng("background-caption", seed, 2).integers(0, len(captions)))]

    def class_captions(self, name: str | int) -> list[str]:
        """Every single-object caption of a class, without background words."""
        phrase = _count_phrase(self.class_names[self._class_index(name)], 1)
        return [t.format(o=phrase) for t in _OBJECT_TEMPLATES]

    def vocabulary(self) -> list[str]:
        """Every word any caption of this world can contain (sorted; punctuation split off)."""
        words: set[str] = {"and", "with", "."}
        for t in _OBJECT_TEMPLATES + _OBJECT_BG_TEMPLATES + _OBJECT_MULTI_BG_TEMPLATES + _BACKGROUND_TEMPLATES:
            words.update(t.replace("{o}", "").replace("{prep}", "").replace("{bgs}", "").replace("{noun}", "")
                         .replace(".", "").split())
        omax = self.cfg.objects_per_image[1]
        for c in self.class_names:
            for n in range(1, omax + 1):
                words.update(_count_phrase(c, n).split())
        for b in self.background_names:
            words.update(BACKGROUND_WORDS[b][0].split())
            words.update(BACKGROUND_WORDS[b][1].split())
        return sorted(words)


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _count_phrase(name: str, n: int) -> str:
    if n == 1:
        return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    return f"{_NUMBER_WORDS.get(n, str(n))} {_PLURALS.get(name, name + 's')}"


# ---------------------------------------------------------------------------------------------------------------
# The dataset contract
# ---------------------------------------------------------------------------------------------------------------


class SyntheticDataset(SegmentationDataset):
    """Split `split` of the synthetic world as a `SegmentationDataset` (masks always available).

    Beyond the contract: `item(i)` (everything generated), `background_map(i)`, `caption(i, variant)`, the
    background names `backgrounds` and `class_background` (class index -> associated background id).
    """

    name = "synthetic"
    has_masks = True

    def __init__(self, cfg: SyntheticConfig, split: str) -> None:
        sizes = cfg.split_sizes()
        if split not in sizes:
            raise DataError(f"synthetic world has no split {split!r}; configured splits (data.synthetic.splits) are: "
                            f"{', '.join(f'{k} ({v})' for k, v in sizes.items())}")
        self.world = SyntheticWorld(cfg)
        self.split = split
        self.classes = ClassTable(self.world.class_names, self.world.class_names)
        self.ids = [f"{split}_{i:06d}" for i in range(sizes[split])]
        self.backgrounds = self.world.background_names
        self.class_background = self.world.class_background
        self._cache: dict[int, SyntheticItem] = {}  # rendered items (only with cfg.cache)
        self._layouts: dict[int, SyntheticItem] = {}  # layouts without pixels (only with cfg.cache)
        self._last: tuple[int, SyntheticItem] | None = None  # the latest rendered item, so labels/mask reuse it

    def _check(self, index: int) -> int:
        if not -len(self.ids) <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for synthetic split {self.split!r} of size {len(self.ids)}")
        return index % len(self.ids)

    def item(self, index: int) -> SyntheticItem:
        """The fully rendered item (cached when `cache` is set)."""
        index = self._check(index)
        if index in self._cache:
            return self._cache[index]
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        item = self.world.generate(self.split, index)
        self._last = (index, item)
        if self.world.cfg.cache:
            self._cache[index] = item
            self._layouts.pop(index, None)
        return item

    def _layout(self, index: int) -> SyntheticItem:
        index = self._check(index)
        if index in self._cache:
            return self._cache[index]
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        if index in self._layouts:
            return self._layouts[index]
        layout = self.world.generate(self.split, index, render=False)
        if self.world.cfg.cache:
            self._layouts[index] = layout
        return layout

    def __getitem__(self, index: int) -> RawItem:
        item = self.item(index)  # one generation serves image, labels and mask
        return RawItem(self.ids[self._check(index)], Image.fromarray(item.image), item.labels.copy(), item.mask.copy())

    def labels(self, index: int) -> np.ndarray:
        return self._layout(index).labels.copy()

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.item(index).image)

    def load_mask(self, index: int) -> np.ndarray:
        return self._layout(index).mask.copy()

    def background_map(self, index: int) -> np.ndarray:
        """(H, W) uint8 background-type id of every pixel (index into `backgrounds`), also under objects."""
        return self._layout(index).background_map.copy()

    def caption(self, index: int, variant: int = 0) -> str:
        """A web-style caption of item `index` (see `SyntheticWorld.caption`)."""
        index = self._check(index)
        return self.world.caption(self.split, index, variant, item=self._layout(index))


def build_synthetic(cfg: DataConfig, split: str) -> SyntheticDataset:
    """The `DATASETS["synthetic"]` builder: split `split` of the world `cfg.synthetic`."""
    if cfg.prompt_names != "plain":
        raise DataError(f"synthetic world has only 'plain' class names, got data.prompt_names={cfg.prompt_names!r}")
    return SyntheticDataset(cfg.synthetic, split)


# ---------------------------------------------------------------------------------------------------------------
# Preview
# ---------------------------------------------------------------------------------------------------------------

# mask view: black background, then bright, mutually distinct class colours (not the objects' own colours)
_PALETTE = np.array([(0, 0, 0), (255, 127, 14), (31, 119, 180), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                     (227, 119, 194), (188, 189, 34), (23, 190, 207), (140, 86, 75)], dtype=np.uint8)
# background-map view: one flat colour per background type
_BG_COLOURS = {"water": (25, 80, 150), "sky": (140, 190, 240), "grass": (60, 150, 40), "rails": (130, 80, 55),
               "sand": (225, 195, 130), "snow": (235, 240, 250), "brick": (175, 60, 40), "tiles": (35, 150, 150)}


def preview_grid(cfg: SyntheticConfig | DataConfig | None = None, n: int = 12, path: str | Path = "synthetic.png",
                 split: str = "train", scale: int = 2) -> Path:
    """Writes a PNG with one row per item: image | mask (class colours) | background map, plus a caption line.

    Returns the path written.
    """
    from PIL import ImageDraw

    syn = getattr(cfg, "synthetic", cfg) or SyntheticConfig()
    world = SyntheticWorld(syn)
    bg_palette = np.array([_BG_COLOURS[b] for b in world.background_names], dtype=np.uint8)
    hi = syn.image_size[1]
    cell, text_h = hi * scale, 12
    sheet = Image.new("RGB", (3 * (cell + 4) + 4, n * (cell + text_h + 4) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        item = world.generate(split, i)
        views = [item.image, _PALETTE[item.mask % len(_PALETTE)], bg_palette[item.background_map]]
        top = 4 + i * (cell + text_h + 4)
        for j, view in enumerate(views):
            img = Image.fromarray(view).resize((view.shape[1] * scale, view.shape[0] * scale), Image.NEAREST)
            sheet.paste(img, (4 + j * (cell + 4), top))
        labels = ", ".join(world.class_names[k] for k in np.nonzero(item.labels)[0])
        bgs = ", ".join(world.background_names[b] for b in item.backgrounds)
        draw.text((4, top + cell), f"{i}: [{labels}] on [{bgs}]  \"{world.caption(split, i, item=item)}\"",
                  fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    sheet.save(tmp)
    tmp.replace(path)
    logger.info("wrote synthetic preview of %d items to %s", n, path)
    return path
