"""Objects of the synthetic world: side views built from a few primitives in box coordinates (u to the right, v
down, both in [0, 1]).

A shape function returns [(region, rgb), ...] painted in order. It is evaluated once per class on a fine grid (a
template of region ids, `object_template`); an object samples its template with nearest-neighbour indexing, so
pixels and mask come from the same region-id array and always agree. Per-object randomness (cow blotches,
brightness) comes from the layout, which keeps masks computable without rendering colours.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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

TEMPLATE_SIDE = 256  # template resolution in u and v (objects are at most ~120 px on a side)


@functools.cache
def object_template(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(region ids (T, T) uint8, 0 = outside; colours (R + 2, 3) float32, the last one for spots) of a class."""
    t = (np.arange(TEMPLATE_SIDE, dtype=np.float32) + 0.5) / TEMPLATE_SIDE
    shape = OBJECT_SHAPES[name]
    regions = shape.draw(t[None, :], t[:, None])
    ids = np.zeros((TEMPLATE_SIDE, TEMPLATE_SIDE), dtype=np.uint8)
    for j, (region, _) in enumerate(regions):
        ids[np.broadcast_to(region, ids.shape)] = j + 1
    colours = np.asarray([(0.0, 0.0, 0.0)] + [rgb for _, rgb in regions] + [shape.spot_rgb], dtype=np.float32)
    ids.flags.writeable = False
    colours.flags.writeable = False
    return ids, colours
