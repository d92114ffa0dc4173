"""Mask generators S: anything that maps images to per-class maps the SemPLeS losses can train.

`GENERATORS` is a plain dict (name -> builder(cfg: GeneratorConfig, num_classes)); its keys are the valid values
of `generator.name`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from semples.models.mask_generators.base import GeneratorOutput, MaskGenerator
from semples.models.mask_generators.weaktr import WeakTrViT, build_weaktr
from semples.utils.checkpoint_io import CheckpointError, read_checkpoint, sha256_file
from semples.utils.dataclass_config import ConfigError, from_dict

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


# generator fields that define the architecture (taken from the checkpoint when S is loaded from one)
ARCH_FIELDS = ("name", "backbone", "backbone_kwargs", "attention_reduction", "attention_pool")


def checkpoint_record(ckpt: dict) -> dict:
    """What a run's manifest says about a checkpoint it read: path, sha256, stage, finished."""
    return {"path": ckpt["path"], "sha256": sha256_file(ckpt["path"]), "stage": ckpt.get("stage"),
            "finished": ckpt.get("finished")}


def load_generator(source, gen_cfg, num_classes: int) -> tuple[MaskGenerator, dict]:
    """The mask generator S: fresh from `gen_cfg` when `source` is None, else from a run folder or checkpoint.

    A loaded S keeps the architecture it was trained with (ARCH_FIELDS from the checkpoint's config); behaviour
    switches (mask_source, train_trunk, drop_path) come from `gen_cfg` (a `GeneratorConfig`).

    Returns:
        (generator, record) — record describes the source for manifests.

    Raises:
        CheckpointError: missing/unreadable checkpoint, no generator in it, or a class-count mismatch.
    """
    if source is None:
        return build_generator(gen_cfg, num_classes), {"fresh": dataclasses.asdict(gen_cfg)}
    ckpt = read_checkpoint(source)
    state = ckpt.get("modules", {}).get("mask_generator")
    if state is None:
        raise CheckpointError(f"{ckpt['path']}: a {ckpt.get('stage')} checkpoint holds no mask generator")
    saved = ckpt.get("config", {}).get("generator", {})
    merged = dataclasses.asdict(gen_cfg)
    merged.update({k: saved[k] for k in ARCH_FIELDS if k in saved})
    merged.update(pretrained=False, backbone_checkpoint=None)
    arch_cfg = from_dict(type(gen_cfg), merged)
    saved_k = int(state["head.weight"].shape[0]) if "head.weight" in state else num_classes
    if saved_k != num_classes:
        raise CheckpointError(f"{ckpt['path']}: mask generator was trained for {saved_k} classes, the dataset has "
                              f"{num_classes}")
    generator = build_generator(arch_cfg, num_classes, quiet=True)
    missing, unexpected = generator.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{ckpt['path']}: mask generator weights do not fit the architecture "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return generator, checkpoint_record(ckpt)


__all__ = ["ARCH_FIELDS", "GENERATORS", "GeneratorOutput", "MaskGenerator", "WeakTrViT", "build_generator",
           "checkpoint_record", "load_generator"]
