"""Moved: FMA-WSSS's steps are `semples.steps.clip_cams` (CLIP Grad-CAM + CAA seeds), `semples.steps.caa` (CAA of
any CAM folder), `semples.methods.fma.sams_seeds` (SAMS seeds / pseudo masks) and the maths in
`semples.infer.clip_cams` / `semples.infer.caa`.

These names stay importable for the synthetic benchmarks (`benchmarks/synthetic_*.py`) until they are ported to the
step functions; nothing in the package imports this module. They resolve lazily, because the steps sit above
`semples.infer`.
"""

from __future__ import annotations

_MOVED = {
    "fma_cams": ("semples.steps.clip_cams", "run"),
    "fma_generator": ("semples.steps.clip_cams", "fma_generator"),
    "semples_fma_cams": ("semples.steps.caa", "run"),
    "fma_seeds": ("semples.methods.fma", "sams_seeds"),
    "clip_seed_maps": ("semples.infer.clip_cams", "clip_seed_maps"),
    "clip_attention": ("semples.infer.caa", "clip_attention"),
    "caa_refine_full": ("semples.infer.caa", "caa_refine_full"),
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module 'semples.infer.fma' has no attribute {name!r}")
    import importlib

    module, attr = _MOVED[name]
    return getattr(importlib.import_module(module), attr)


__all__ = sorted(_MOVED)
