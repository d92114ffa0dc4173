"""Training stages: one module per stage, each naming its trainable parts, frozen parts and losses.

`STAGES` maps each stage name to its class, in the order of `semples.stage_table.STAGE_TABLE` (the one list of
stages, with the CLI verb that trains each: readable without torch). Each class carries what the rest of the
package needs to know: `from_config` (how it is built from the config and the run folders of earlier stages,
handed in explicitly), `depends_on` (the config keys its result depends on), `needs_clip`.

    classify  S from ImageNet / random weights (or --generator to continue from a checkpoint)
    match     S from a classify run (--generator)
    prompt    S (frozen) from a match run (--generator)
    refine    S from the classify run (reference) or the match run (--generator); prompts from a prompt run
    joint     S from a classify run; fresh prompts
    fma-classify  CLIP Grad-CAM generator with fresh classification prompts (FMA-WSSS; --generator continues one)
    fma-segment   CLIP Grad-CAM generator with fresh segmentation prompts, trained on coarse seeds (--seeds DIR)
    segment   the final segmentation model on pseudo masks (`semples train-seg`)

Every stage works with every mask generator of `generator.name` (weaktr_vit, resnet_cam, clip_gradcam): the
generator is built through `load_generator` with a `GeneratorContext` (class names, background names and, for
CLIP Grad-CAM, the frozen CLIP shared with the stage). The FMA stages always train a CLIP Grad-CAM generator;
the config they run with (and that their checkpoint records) says so.

A new stage is one module with a `Stage` subclass (its `from_config` and `depends_on`) and one line in
`semples.stage_table`.
"""

from __future__ import annotations

import logging

from semples.config import Config
from semples.data.base import ClassTable
from semples.errors import ConfigError
from semples.models.clip import FrozenCLIP, load_clip
from semples.models.mask_generators import check_finished, generator_spec, load_generator
from semples.stage_table import STAGE_TABLE, import_stage, stages_of_verb
from semples.stages.base import TRAINING_KEYS, BuiltStage, Stage, select_keys
from semples.stages.classify import ClassifyStage
from semples.stages.common import load_prompts, new_prompts
from semples.stages.fma_classify import FmaClassifyStage
from semples.stages.fma_segment import FmaSegmentStage, SeedMaskDataset
from semples.stages.joint import JointStage
from semples.stages.match import MatchStage
from semples.stages.prompt import PromptStage
from semples.stages.refine import RefineStage
from semples.stages.train_segmenter import SegmentStage
from semples.utils.checkpoint_io import read_checkpoint

log = logging.getLogger(__name__)

STAGES: dict[str, type[Stage]] = {name: import_stage(name) for name in STAGE_TABLE}


def stage_class(name: str) -> type[Stage]:
    """The class of stage `name`; the error lists the valid names."""
    try:
        return STAGES[name]
    except KeyError:
        raise ConfigError(f"unknown stage {name!r}; valid: {', '.join(STAGES)}") from None


def needs_clip(name: str, cfg: Config) -> bool:
    """Whether training stage `name` under `cfg` loads the frozen CLIP (the stage's or its generator's need)."""
    cls = stage_class(name)
    return cls.needs_clip or generator_spec(cls.configure(cfg).generator.name).needs_clip


def build_stage(name: str, cfg: Config, classes: ClassTable, *, generator: str | None = None,
                prompts: str | None = None, clip: FrozenCLIP | None = None, device: str = "cpu",
                seeds: str | None = None, dataset=None, allow_unfinished: bool = False) -> BuiltStage:
    """Assembles stage `name` (`STAGES[name].from_config`), loading the frozen CLIP first when it needs one.

    Args:
        name: a key of `STAGES`.
        cfg: the experiment config.
        classes: the dataset's class table (prompt names feed CLIP).
        generator: run folder or checkpoint of S to start from (required for prompt; see module docstring).
        prompts: run folder or checkpoint of learned prompts (required for refine).
        clip: an already loaded frozen CLIP (shared across stages of one scheme run).
        device: where to load CLIP when it is not given.
        seeds: fma-segment: folder of coarse seeds (default ``fma.seeds_dir``).
        dataset: fma-segment: the training split the seeds belong to (wrapped with the seeds).
        allow_unfinished: accept `generator` / `prompts` checkpoints of unfinished runs (refused otherwise).

    Raises:
        ConfigError: unknown stage, or an input it needs is missing (the message says what to pass).
        CheckpointError: an input checkpoint is unreadable, or of an unfinished run (unless `allow_unfinished`).
    """
    cls = stage_class(name)
    cfg = cls.configure(cfg)
    cls.validate_inputs(cfg, generator=generator, prompts=prompts, seeds=seeds)
    for what, source in (("mask generator", generator), ("prompts", prompts)):
        if source is not None:  # a look at the records only (mapped, not read); the stage reads the weights
            check_finished(read_checkpoint(source, mmap=True), what, allow_unfinished)
    if clip is None and needs_clip(name, cfg):
        clip = load_clip(cfg.clip, device)
    return cls.from_config(cfg, classes, generator=generator, prompts=prompts, clip=clip, seeds=seeds,
                           dataset=dataset)


__all__ = ["STAGES", "TRAINING_KEYS", "BuiltStage", "ClassifyStage", "FmaClassifyStage", "FmaSegmentStage",
           "JointStage", "MatchStage", "PromptStage", "RefineStage", "SeedMaskDataset", "SegmentStage", "Stage",
           "build_stage", "load_generator", "load_prompts", "needs_clip", "new_prompts", "select_keys", "stage_class",
           "stages_of_verb"]
