"""What several stages build from: the mask generator S to start from, learned or fresh prompts, the keyword
arguments every CLIP stage takes. Used by the stages' `from_config`; nothing here trains."""

from __future__ import annotations

import logging

from semples.config import Config
from semples.data.base import ClassTable
from semples.errors import CheckpointError, ConfigError
from semples.models.clip import FrozenCLIP, PromptTextEncoder
from semples.models.mask_generators import MaskGenerator, checkpoint_record, generator_context, load_generator
from semples.utils.checkpoint_io import read_checkpoint

log = logging.getLogger(__name__)


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
    """Fresh prompt vectors from the ``prompts`` section."""
    p = cfg.prompts
    return PromptTextEncoder(clip, num_classes, length=p.length, template=p.template, init=p.init,
                             init_low=p.init_low, init_high=p.init_high, init_std=p.init_std)


def start_generator(cfg: Config, classes: ClassTable, source: str | None, clip: FrozenCLIP | None
                    ) -> tuple[MaskGenerator, dict]:
    """S to train or hold frozen: from a run folder / checkpoint (`source`), else fresh from ``generator``.

    Returns:
        (generator, its input record for the manifest: path + sha256, or the fresh config).
    """
    return load_generator(source, cfg.generator, len(classes), context=generator_context(cfg, classes, clip))


def clip_stage_kwargs(cfg: Config, name: str) -> dict:
    """The keyword arguments of every CLIP stage (losses, masking, class template, input normalisation)."""
    return dict(loss=cfg.loss, masking=cfg.masking, class_template=cfg.clip.class_template,
                data_norm=cfg.stage(name).transform.normalize)


def fma_config(cfg: Config, name: str, prompt_set: str) -> Config:
    """`cfg` with the generator an FMA stage trains: CLIP Grad-CAM with the stage's prompt set."""
    import dataclasses

    gen = cfg.generator
    clip_cam = dataclasses.replace(gen.clip_cam, prompts=prompt_set)
    if gen.name != "clip_gradcam" or gen.clip_cam.prompts != clip_cam.prompts:
        log.info("stage %s trains generator clip_gradcam with %s prompts (was %s / %s)", name, clip_cam.prompts,
                 gen.name, gen.clip_cam.prompts)
    return dataclasses.replace(cfg, generator=dataclasses.replace(gen, name="clip_gradcam", clip_cam=clip_cam))


def require(value, what: str) -> None:
    """Raises `ConfigError` with `what` (the sentence saying what to pass) when `value` is None."""
    if value is None:
        raise ConfigError(what)


def warn_fresh_start(name: str, generator: str | None) -> None:
    if generator is None:
        log.warning("stage %s starts S without a classify checkpoint (ImageNet/random trunk, untrained head)", name)


__all__ = ["clip_stage_kwargs", "fma_config", "load_prompts", "new_prompts", "require", "start_generator",
           "warn_fresh_start"]
