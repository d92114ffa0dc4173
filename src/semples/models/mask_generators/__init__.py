"""Mask generators S: anything that maps images to per-class maps the SemPLeS losses can train.

`GENERATORS` is a plain dict of `GeneratorSpec` (name -> builder plus what the rest of the package needs to know
about the family); its keys are the valid values of `generator.name`:

    weaktr_vit     WeakTr / MCTformer-style ViT with K class tokens (METHOD.md §1.6)
    resnet_cam     CLIMS-style ResNet CAM network (1×1 classifier on the last feature map)
    clip_gradcam   Grad-CAM of the frozen CLIP against learnable / hand-written prompts (FMA-WSSS, CLIP-ES)

A new generator is one module with a builder ``build_x(cfg: GeneratorConfig, num_classes, *, quiet, context)`` and
one entry here (see docs/architecture.md). The CLIP generator needs a `GeneratorContext` (the frozen CLIP, class
and background names): `generator_context` makes one from an experiment config, a class table and a loaded CLIP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from semples.models.mask_generators.base import GeneratorContext, GeneratorOutput, MaskGenerator, run_generator
from semples.models.mask_generators.clip_gradcam import ClipGradCAM, build_clip_gradcam, clip_gradcam_for_checkpoint
from semples.models.mask_generators.resnet_cam import ResNetCAM, build_resnet_cam
from semples.models.mask_generators.weaktr import WeakTrViT, build_weaktr
from semples.utils.checkpoint_io import CheckpointError, read_checkpoint, sha256_file
from semples.utils.dataclass_config import ConfigError, from_dict


@dataclass(frozen=True)
class GeneratorSpec:
    """A mask-generator family: how to build it and what other modules need to know about it.

    Attributes:
        build: builder(cfg: GeneratorConfig, num_classes, quiet=..., context=...) -> MaskGenerator.
        arch_fields: `GeneratorConfig` fields that define the architecture: taken from a checkpoint's config when S
            is loaded from one (the rest — mask_source, train_trunk, drop_path — come from the current config).
        needs_clip: the generator runs the frozen CLIP, so every stage training it loads CLIP (even classify).
        from_checkpoint: hook for families whose checkpoint *state* (not only the config) defines how to rebuild
            them: (gen_cfg, state, num_classes, context, ckpt) -> (gen_cfg, context); None otherwise.
    """

    build: Callable[..., MaskGenerator]
    arch_fields: tuple[str, ...]
    needs_clip: bool = False
    from_checkpoint: Callable | None = None


GENERATORS: dict[str, GeneratorSpec] = {
    "weaktr_vit": GeneratorSpec(build_weaktr, ("name", "backbone", "backbone_kwargs", "attention_reduction",
                                               "attention_pool")),
    "resnet_cam": GeneratorSpec(build_resnet_cam, ("name", "backbone", "backbone_kwargs")),
    "clip_gradcam": GeneratorSpec(build_clip_gradcam, ("name", "clip_cam"), needs_clip=True,
                                  from_checkpoint=clip_gradcam_for_checkpoint),
}


def generator_spec(name: str) -> GeneratorSpec:
    """The `GeneratorSpec` of ``generator.name`` `name`; the error lists the valid names."""
    try:
        return GENERATORS[name]
    except KeyError:
        raise ConfigError(f"unknown generator.name {name!r}; valid: {', '.join(GENERATORS)}") from None


def build_generator(cfg, num_classes: int, quiet: bool = False, context: GeneratorContext | None = None
                    ) -> MaskGenerator:
    """The mask generator named by `cfg.name` (a `GeneratorConfig`) for `num_classes` classes.

    `quiet` silences the random-weights warning (when weights are loaded from a checkpoint right after);
    `context` carries what some generators need beyond the config (CLIP Grad-CAM: the CLIP and the names).
    """
    return generator_spec(cfg.name).build(cfg, num_classes, quiet=quiet, context=context)


def generator_context(cfg, classes=None, clip=None) -> GeneratorContext:
    """The `GeneratorContext` of experiment config `cfg` (a `Config`) for a dataset's `ClassTable` and a loaded
    frozen CLIP: prompt names of the classes, background names (``generator.clip_cam.background_names``, else the
    dataset's list), the CLIP."""
    from semples.models.prompts import background_names_for

    names = tuple(classes.prompt_names) if classes is not None else None
    background = background_names_for(cfg.data, cfg.generator.clip_cam.background_names)
    return GeneratorContext(class_names=names, background_names=background, clip=clip)


def checkpoint_record(ckpt: dict) -> dict:
    """What a run's manifest says about a checkpoint it read: path, sha256, stage, finished."""
    return {"path": ckpt["path"], "sha256": sha256_file(ckpt["path"]), "stage": ckpt.get("stage"),
            "finished": ckpt.get("finished")}


def load_generator(source, gen_cfg, num_classes: int, context: GeneratorContext | None = None
                   ) -> tuple[MaskGenerator, dict]:
    """The mask generator S: fresh from `gen_cfg` when `source` is None, else from a run folder or checkpoint.

    A loaded S keeps the architecture it was trained with (its family's `GeneratorSpec.arch_fields` from the
    checkpoint's config; for CLIP Grad-CAM also the prompt set and token ids saved in its state); behaviour switches
    (mask_source, train_trunk, drop_path) come from `gen_cfg` (a `GeneratorConfig`). `context` is handed to the
    builder (see `generator_context`); a CLIP Grad-CAM checkpoint loaded without one brings up the CLIP its config
    names.

    Returns:
        (generator, record) — record describes the source for manifests.

    Raises:
        CheckpointError: missing/unreadable checkpoint, no generator in it, or a class-count mismatch.
    """
    if source is None:
        return build_generator(gen_cfg, num_classes, context=context), {"fresh": dataclasses.asdict(gen_cfg)}
    ckpt = read_checkpoint(source)
    state = ckpt.get("modules", {}).get("mask_generator")
    if state is None:
        raise CheckpointError(f"{ckpt['path']}: a {ckpt.get('stage')} checkpoint holds no mask generator")
    saved = ckpt.get("config", {}).get("generator", {})
    merged = dataclasses.asdict(gen_cfg)
    spec = generator_spec(saved.get("name", gen_cfg.name))
    merged.update({k: saved[k] for k in spec.arch_fields if k in saved})
    merged.update(pretrained=False, backbone_checkpoint=None)
    arch_cfg = from_dict(type(gen_cfg), merged)
    saved_k = int(state["head.weight"].shape[0]) if "head.weight" in state else num_classes
    if saved_k != num_classes:
        raise CheckpointError(f"{ckpt['path']}: mask generator was trained for {saved_k} classes, the dataset has "
                              f"{num_classes}")
    build_context = context
    if spec.from_checkpoint is not None:
        arch_cfg, build_context = spec.from_checkpoint(arch_cfg, state, num_classes, context, ckpt)
    generator = build_generator(arch_cfg, num_classes, quiet=True, context=build_context)
    try:
        missing, unexpected = generator.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{ckpt['path']}: mask generator weights do not fit the architecture "
                              f"({str(e).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise CheckpointError(f"{ckpt['path']}: mask generator weights do not fit the architecture "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    check_names = getattr(generator, "check_class_names", None)
    if check_names is not None and context is not None and context.class_names is not None:
        check_names(context.class_names, context.background_names, ckpt["path"])
    return generator, checkpoint_record(ckpt)


__all__ = ["GENERATORS", "ClipGradCAM", "GeneratorContext", "GeneratorOutput", "GeneratorSpec", "MaskGenerator",
           "ResNetCAM", "WeakTrViT", "build_generator", "checkpoint_record", "generator_context", "generator_spec",
           "load_generator", "run_generator"]
