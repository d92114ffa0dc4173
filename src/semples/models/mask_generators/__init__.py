"""Mask generators S: anything that maps images to per-class maps the SemPLeS losses can train.

`GENERATORS` is a plain dict (name -> builder(cfg: GeneratorConfig, num_classes)); its keys are the valid values
of `generator.name`.
"""

from __future__ import annotations

from collections.abc import Callable

from semples.models.mask_generators.base import GeneratorOutput, MaskGenerator
from semples.models.mask_generators.weaktr import WeakTrViT, build_weaktr
from semples.utils.dataclass_config import ConfigError

GENERATORS: dict[str, Callable[..., MaskGenerator]] = {
    "weaktr_vit": build_weaktr,
}


def build_generator(cfg, num_classes: int, quiet: bool = False) -> MaskGenerator:
    """The mask generator named by `cfg.name` (a `GeneratorConfig`) for `num_classes` classes.

    `quiet` silences the random-weights warning (when weights are loaded from a checkpoint right after).
    """
    try:
        builder = GENERATORS[cfg.name]
    except KeyError:
        raise ConfigError(f"unknown generator.name {cfg.name!r}; valid: {', '.join(GENERATORS)}") from None
    return builder(cfg, num_classes, quiet=quiet)


__all__ = ["GENERATORS", "GeneratorOutput", "MaskGenerator", "WeakTrViT", "build_generator"]
