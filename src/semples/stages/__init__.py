"""Training stages: one module per stage, each naming its trainable parts, frozen parts and losses.

`build_stage` assembles a stage from the config and the run folders of earlier stages, handed in explicitly:

    classify  S from ImageNet / random weights (or --generator to continue from a checkpoint)
    match     S from a classify run (--generator)
    prompt    S (frozen) from a match run (--generator)
    refine    S from the classify run (reference) or the match run (--generator); prompts from a prompt run
    joint     S from a classify run; fresh prompts
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from semples.config import Config
from semples.data.base import ClassTable
from semples.errors import CheckpointError
from semples.models.clip import FrozenCLIP, PromptTextEncoder, load_clip
from semples.models.mask_generators import checkpoint_record, load_generator
from semples.stages.base import Stage
from semples.stages.classify import ClassifyStage
from semples.stages.joint import JointStage
from semples.stages.match import MatchStage
from semples.stages.prompt import PromptStage
from semples.stages.refine import RefineStage
from semples.utils.checkpoint_io import read_checkpoint

log = logging.getLogger(__name__)

STAGE_CLASSES: dict[str, type[Stage]] = {
    "classify": ClassifyStage,
    "match": MatchStage,
    "prompt": PromptStage,
    "refine": RefineStage,
    "joint": JointStage,
}

@dataclass
class BuiltStage:
    """A stage ready for the engine, plus a record of what it was built from (for the manifest)."""

    stage: Stage
    inputs: dict = field(default_factory=dict)


def load_prompts(source: str, clip: FrozenCLIP, num_classes: int) -> tuple[PromptTextEncoder, dict]:
    """Learned prompts from a prompt (or joint) run folder/checkpoint, with the template they were trained in."""
    ckpt = read_checkpoint(source)
    state = ckpt.get("modules", {}).get("prompts")
    if state is None:
        raise CheckpointError(f"{ckpt['path']}: a {ckpt.get('stage')} checkpoint holds no learned prompts "
                              "(hand in the run folder of stage prompt)")
    vectors = state["prompts"]
    if vectors.shape[0] != num_classes or vectors.shape[2] != clip.token_width:
        raise CheckpointError(f"{ckpt['path']}: prompts of shape {tuple(vectors.shape)} do not fit {num_classes} "
                              f"classes × width {clip.token_width}")
    pcfg = ckpt["config"].get("prompts", {})
    prompts = PromptTextEncoder(clip, num_classes, length=int(vectors.shape[1]),
                                template=pcfg.get("template", "a photo of {}."))
    prompts.load_state_dict(state)
    record = checkpoint_record(ckpt)
    prompts.source = record  # named in the manifest of the stage that holds these prompts frozen
    return prompts, record


def new_prompts(cfg: Config, clip: FrozenCLIP, num_classes: int) -> PromptTextEncoder:
    p = cfg.prompts
    return PromptTextEncoder(clip, num_classes, length=p.length, template=p.template, init=p.init,
                             init_low=p.init_low, init_high=p.init_high, init_std=p.init_std)


def build_stage(name: str, cfg: Config, classes: ClassTable, *, generator: str | None = None,
                prompts: str | None = None, clip: FrozenCLIP | None = None, device: str = "cpu") -> BuiltStage:
    """Assembles stage `name`.

    Args:
        name: classify | match | prompt | refine | joint.
        cfg: the experiment config.
        classes: the dataset's class table (prompt names feed CLIP).
        generator: run folder or checkpoint of S to start from (required for prompt; see module docstring).
        prompts: run folder or checkpoint of learned prompts (required for refine).
        clip: an already loaded frozen CLIP (shared across stages of one scheme run).
        device: where to load CLIP when it is not given.
    """
    if name not in STAGE_CLASSES:
        raise CheckpointError(f"unknown stage {name!r}; valid: {', '.join(STAGE_CLASSES)}")
    k = len(classes)
    if name == "prompt" and generator is None:
        raise CheckpointError("stage prompt needs the mask generator trained by stage match: pass --generator "
                              "<match run folder>")
    if name == "refine" and prompts is None:
        raise CheckpointError("stage refine needs learned prompts: pass --prompts <prompt run folder>")
    if generator is None and name in ("match", "refine", "joint"):
        log.warning("stage %s starts S without a classify checkpoint (ImageNet/random trunk, untrained head)", name)
    gen, gen_record = load_generator(generator, cfg.generator, k)
    inputs = {"generator": gen_record}
    if name == "classify":
        lc = cfg.loss
        return BuiltStage(ClassifyStage(gen, token_weight=lc.classify_token, coarse_weight=lc.classify_coarse,
                                        fine_weight=lc.classify_fine), inputs)
    if clip is None:
        clip = load_clip(cfg.clip, device)
    common = dict(loss=cfg.loss, masking=cfg.masking, class_template=cfg.clip.class_template,
                  data_norm=cfg.stage(name).transform.normalize)
    names = list(classes.prompt_names)
    if name == "match":
        stage = MatchStage(gen, clip, names, train_trunk=cfg.generator.train_trunk, **common)
    elif name == "prompt":
        stage = PromptStage(gen, new_prompts(cfg, clip, k), clip, names, **common)
    elif name == "refine":
        learned, inputs["prompts"] = load_prompts(prompts, clip, k)
        # which S stage refine starts from: the classify result (reference) or the match result
        inputs["start_point"] = gen_record.get("stage", "fresh")
        stage = RefineStage(gen, learned, clip, names, train_trunk=cfg.generator.train_trunk, **common)
    else:
        stage = JointStage(gen, new_prompts(cfg, clip, k), clip, names, train_trunk=cfg.generator.train_trunk,
                           **common)
    return BuiltStage(stage, inputs)


__all__ = ["STAGE_CLASSES", "BuiltStage", "Stage", "build_stage", "load_generator", "load_prompts"]
