"""Backgrounds of the synthetic world: procedural textures, (H, W, 3) float32 in 8-bit units, all vectorised.

Each keeps its mean colour far from the mask-fill grey (tested). Images crop pre-generated tiles (`texture_bank`).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable

import numpy as np


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
def texture_bank(name: str, seed: int, variants: int, tile: int) -> np.ndarray:
    """(variants, tile, tile, 3) uint8 texture tiles of one background type; images crop them at random offsets.

    Generating a texture costs ~0.5 ms per image; cropping a pre-generated tile costs ~10 µs. The bank is a pure
    function of its arguments (and so of the world seed), built lazily once per process.
    """
    bank = np.empty((variants, tile, tile, 3), dtype=np.uint8)
    for v in range(variants):
        key = zlib.crc32(f"texture/{name}".encode())  # = world.split_key(f"texture/{name}")
        rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, key, v]))
        bank[v] = np.clip(BACKGROUND_TEXTURES[name](rng, tile, tile) + 0.5, 0, 255)
    bank.flags.writeable = False
    return bank


@functools.lru_cache(maxsize=8)
def noise_tile(seed: int, tile: int) -> np.ndarray:
    """(tile, tile, 1) float32 standard-normal pixel noise; images crop it at random offsets."""
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, zlib.crc32(b"pixel-noise")]))
    noise = rng.standard_normal((tile, tile, 1), dtype=np.float32)
    noise.flags.writeable = False
    return noise
