"""Training stages: one module per stage, each naming its trainable parts, frozen parts and losses.

`build_stage` assembles a stage from the config and the run folders of earlier stages, handed in explicitly:

    classify  S from ImageNet / random weights (or --generator to continue from a checkpoint)
    match     S from a classify run (--generator)
    prompt    S (frozen) from a match run (--generator)
    refine    S from the classify run (reference) or the match run (--generator); prompts from a prompt run
    joint     S from a classify run; fresh prompts
    fma-classify  CLIP Grad-CAM generator with fresh classification prompts (FMA-WSSS; --generator continues one)
    fma-segment   CLIP Grad-CAM generator with fresh segmentation prompts, trained on coarse seeds (--seeds DIR)

Every stage works with every mask generator of `generator.name` (weaktr_vit, resnet_cam, clip_gradcam): the
generator is built through `load_generator` with a `GeneratorContext` (class names, background names and, for
CLIP Grad-CAM, the frozen CLIP shared with the stage). The FMA stages always train a CLIP Grad-CAM generator;
the config they run with (and that their checkpoint records) says so.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from semples.config import Config
from semples.data.base import ClassTable
from semples.errors import CheckpointError, ConfigError
from semples.models.clip import FrozenCLIP, PromptTextEncoder, load_clip
from semples.models.mask_generators import checkpoint_record, generator_context, load_generator
from semples.stages.base import Stage
from semples.stages.classify import ClassifyStage
from semples.stages.fma_classify import FmaClassifyStage
from semples.stages.fma_segment import FmaSegmentStage, SeedMaskDataset
from semples.stages.joint import JointStage
from semples.stages.match import MatchStage
from semples.stages.prompt import PromptStage
from semples.stages.refine import RefineStage, control_features
from semples.utils.checkpoint_io import read_checkpoint

log = logging.getLogger(__name__)

STAGE_CLASSES: dict[str, type[Stage]] = {
    "classify": ClassifyStage,
    "match": MatchStage,
    "prompt": PromptStage,
    "refine": RefineStage,
    "joint": JointStage,
    "fma-classify": FmaClassifyStage,
    "fma-segment": FmaSegmentStage,
}

# the prompt set each FMA stage trains (generator.clip_cam.prompts)
FMA_PROMPTS = {"fma-classify": "classification", "fma-segment": "segmentation"}

@dataclass
class BuiltStage:
    """A stage ready for the engine, plus a record of what it was built from (for the manifest)."""

    stage: Stage
    inputs: dict = field(default_factory=dict)
    config: Config | None = None  # the config the stage runs with, when the stage adjusted it (FMA stages)
    dataset: object = None  # a dataset replacing the training split (fma-segment: images + coarse seeds)
    with_mask: bool = False  # batches carry the dataset's masks (the seeds)


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


def fma_config(cfg: Config, name: str) -> Config:
    """`cfg` with the generator an FMA stage trains: CLIP Grad-CAM with the stage's prompt set."""
    gen = cfg.generator
    clip_cam = dataclasses.replace(gen.clip_cam, prompts=FMA_PROMPTS[name])
    if gen.name != "clip_gradcam" or gen.clip_cam.prompts != clip_cam.prompts:
        log.info("stage %s trains generator clip_gradcam with %s prompts (was %s / %s)", name, clip_cam.prompts,
                 gen.name, gen.clip_cam.prompts)
    return dataclasses.replace(cfg, generator=dataclasses.replace(gen, name="clip_gradcam", clip_cam=clip_cam))


def build_stage(name: str, cfg: Config, classes: ClassTable, *, generator: str | None = None,
                prompts: str | None = None, clip: FrozenCLIP | None = None, device: str = "cpu",
                seeds: str | None = None, dataset=None) -> BuiltStage:
    """Assembles stage `name`.

    Args:
        name: classify | match | prompt | refine | joint | fma-classify | fma-segment.
        cfg: the experiment config.
        classes: the dataset's class table (prompt names feed CLIP).
        generator: run folder or checkpoint of S to start from (required for prompt; see module docstring).
        prompts: run folder or checkpoint of learned prompts (required for refine).
        clip: an already loaded frozen CLIP (shared across stages of one scheme run).
        device: where to load CLIP when it is not given.
        seeds: fma-segment: folder of coarse seeds (default ``fma.seeds_dir``).
        dataset: fma-segment: the training split the seeds belong to (wrapped with the seeds).
    """
    if name not in STAGE_CLASSES:
        raise CheckpointError(f"unknown stage {name!r}; valid: {', '.join(STAGE_CLASSES)}")
    k = len(classes)
    if name in FMA_PROMPTS:
        return _build_fma_stage(name, fma_config(cfg, name), classes, generator=generator, clip=clip, device=device,
                                seeds=seeds, dataset=dataset)
    if name == "prompt" and generator is None:
        raise CheckpointError("stage prompt needs the mask generator trained by stage match: pass --generator "
                              "<match run folder>")
    control = cfg.prompts.refine_with if name == "refine" else "learned"
    if name == "refine" and control == "learned" and prompts is None:
        raise CheckpointError("stage refine needs learned prompts: pass --prompts <prompt run folder>")
    if name == "refine" and control != "learned" and prompts is not None:
        raise ConfigError(f"prompts.refine_with={control} replaces the learned prompts by a control: drop --prompts "
                          "(or set prompts.refine_with=learned)")
    if generator is None and name in ("match", "refine", "joint"):
        log.warning("stage %s starts S without a classify checkpoint (ImageNet/random trunk, untrained head)", name)
    if clip is None and (name != "classify" or cfg.generator.name == "clip_gradcam"):
        clip = load_clip(cfg.clip, device)
    gen, gen_record = load_generator(generator, cfg.generator, k, context=generator_context(cfg, classes, clip))
    inputs = {"generator": gen_record}
    if name == "classify":
        lc = cfg.loss
        return BuiltStage(ClassifyStage(gen, token_weight=lc.classify_token, coarse_weight=lc.classify_coarse,
                                        fine_weight=lc.classify_fine), inputs)
    common = dict(loss=cfg.loss, masking=cfg.masking, class_template=cfg.clip.class_template,
                  data_norm=cfg.stage(name).transform.normalize)
    names = list(classes.prompt_names)
    if name == "match":
        stage = MatchStage(gen, clip, names, train_trunk=cfg.generator.train_trunk, **common)
    elif name == "prompt":
        stage = PromptStage(gen, new_prompts(cfg, clip, k), clip, names, **common)
    elif name == "refine":
        # which S stage refine starts from: the classify result (reference) or the match result
        inputs["start_point"] = gen_record.get("stage", "fresh")
        if control == "learned":
            learned, inputs["prompts"] = load_prompts(prompts, clip, k)
            stage = RefineStage(gen, learned, clip, names, train_trunk=cfg.generator.train_trunk, **common)
        else:
            inputs["prompts"] = {"control": control, "seed": cfg.seed if control == "gaussian" else None}
            features = control_features(control, clip, names, cfg.clip.class_template, seed=cfg.seed)
            stage = RefineStage(gen, None, clip, names, train_trunk=cfg.generator.train_trunk,
                                background_features=features, **common)
    else:
        stage = JointStage(gen, new_prompts(cfg, clip, k), clip, names, train_trunk=cfg.generator.train_trunk,
                           **common)
    return BuiltStage(stage, inputs)


def _build_fma_stage(name: str, cfg: Config, classes: ClassTable, *, generator: str | None, clip: FrozenCLIP | None,
                     device: str, seeds: str | None, dataset) -> BuiltStage:
    seeds = seeds or cfg.fma.seeds_dir
    if name == "fma-segment" and seeds is None:
        raise CheckpointError("stage fma-segment learns from coarse seeds: pass --seeds DIR (label PNGs or a CAM "
                              "folder; see semples.infer.fma) or set fma.seeds_dir")
    if clip is None:
        clip = load_clip(cfg.clip, device)
    gen, gen_record = load_generator(generator, cfg.generator, len(classes),
                                     context=generator_context(cfg, classes, clip))
    inputs = {"generator": gen_record}
    if name == "fma-classify":
        return BuiltStage(FmaClassifyStage(gen, background_negatives=cfg.fma.background_negatives), inputs,
                          config=cfg)
    built = BuiltStage(FmaSegmentStage(gen), inputs, config=cfg, with_mask=True)
    inputs["seeds"] = {"dir": str(seeds), "threshold": cfg.fma.seeds_threshold}
    if dataset is not None:
        built.dataset = SeedMaskDataset(dataset, seeds, cfg.fma.seeds_threshold)
    return built


__all__ = ["FMA_PROMPTS", "STAGE_CLASSES", "BuiltStage", "Stage", "build_stage", "fma_config", "load_generator",
           "load_prompts"]
