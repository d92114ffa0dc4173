"""Every knob of a run, as typed frozen dataclasses.

YAML in (`load_config`), resolved YAML out (`save_config`), dotted overrides (``--set loss.lambda_bg=1.0``).
Unknown keys are errors that list the valid names. A YAML file holds only the values that differ from the
defaults below; ``_base_: other`` inherits from another preset (a name under ``semples/configs/`` or a path).

Defaults are the paper's PASCAL VOC 2012 numbers and the reference code's behaviour (METHOD.md §1.4–1.6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from semples.data.config import DataConfig, TrainTransformConfig
from semples.utils.dataclass_config import ConfigError, deep_merge, from_dict, set_dotted, to_dict

PRESET_DIR = Path(__file__).parent / "configs"

STAGES = ("classify", "match", "prompt", "refine", "joint")


@dataclass(frozen=True)
class ClipConfig:
    """The frozen CLIP (open_clip). Never trained; stored in checkpoints by name, path and sha256 only."""

    arch: str = "ViT-B-32"  # open_clip model name, "local-dir:DIR", or a path to an open_clip model-config JSON
    pretrained: str = "openai"  # open_clip tag, a local checkpoint file, or "none" (random weights: tests only)
    block_type: Literal["custom", "default"] = "custom"  # "custom" = SDPA attention (same weights, faster)
    cache_dir: str | None = None  # where open_clip looks for downloaded weights
    class_template: str = "a photo of {}."  # text t_k for u^f (the class name fills {})


@dataclass(frozen=True)
class PromptConfig:
    """Learnable background prompts p_k (METHOD.md §1.2)."""

    length: int = 30  # L: vectors per class
    template: str = "a photo of {}."  # the prompt vectors fill {}; "{}" = bare prompts
    init: Literal["uniform", "normal"] = "uniform"  # uniform: U[low, high); normal: N(0, std)
    init_low: float = 0.0
    init_high: float = 1.0
    init_std: float = 0.02


@dataclass(frozen=True)
class GeneratorConfig:
    """The mask generator S (METHOD.md §1.6)."""

    name: str = "weaktr_vit"  # registry name of the generator family
    backbone: str = "deit_small_patch16_224"  # timm architecture name
    backbone_kwargs: dict[str, int | float | str | bool] = field(default_factory=dict)  # e.g. tiny test variants
    pretrained: bool = True  # ImageNet weights for the backbone by timm name (needs the HF hub or its cache)
    backbone_checkpoint: str | None = None  # explicit backbone weights file (takes precedence over `pretrained`)
    drop_path: float = 0.1  # stochastic depth while the trunk trains (stage classify)
    train_trunk: bool = False  # SemPLeS stages: train the ViT trunk too (reference: no; trunk runs under no_grad)
    attention_reduction: int = 8  # reduction of the per-head attention-weighting MLP (WeakTr: 8)
    attention_pool: Literal["max", "avg"] = "max"  # pooling of each head's attention map before that MLP
    mask_source: Literal["fine", "fused", "coarse"] = "fine"  # which map becomes the soft mask M


@dataclass(frozen=True)
class MaskingConfig:
    """How masks meet CLIP (METHOD.md §1.5). Defaults = reference behaviour."""

    space: Literal["normalized", "pixel"] = "normalized"  # multiply the ImageNet-normalised crop (reference),
    # or multiply pixels in [0, 1] and then apply CLIP's mean/std
    eps_match: float = 0.1  # min-max normalisation epsilon in stages match/refine
    eps_prompt: float = 1e-4  # ... in stage prompt
    align_corners: bool = True  # bilinear upsampling of the patch-grid maps to the crop


@dataclass(frozen=True)
class LossConfig:
    """Named loss weights and the similarity clamp (METHOD.md §1.1–1.3)."""

    lambda_bg: float = 2.4  # λ_b: background repulsion in L_match
    lambda_text: float = 0.02  # λ_T: prompt-vs-class-text repulsion in L_prompt
    lambda_refine: float = 0.05  # λ: weight of L_refine
    use_prompt_image: bool = True  # L_prompt^I term (loss ablation, paper Table 4)
    use_prompt_text: bool = True  # L_prompt^T term (loss ablation)
    sim_min: float = 1e-4  # cosine similarities are clamped to [sim_min, sim_max]
    sim_max: float = 0.9999
    classify_token: float = 1.0  # stage classify: weight of the class-token multi-label loss
    classify_coarse: float = 1.0  # ... of the pooled coarse CAM loss
    classify_fine: float = 1.0  # ... of the pooled fine CAM loss


@dataclass(frozen=True)
class SchemeConfig:
    """How the SemPLeS stages are ordered (paper Table 6)."""

    scheme: Literal["sequential", "alternating", "joint"] = "sequential"
    rounds: int = 1  # alternating: number of (prompt -> refine) rounds after match
    refine_init: Literal["initial", "match"] = "initial"  # stage refine starts S from the stage-match input
    # checkpoint (reference) or from the match result
    run_classify: bool = True  # `--scheme` runs stage classify first (off when handing in a trained generator)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"scheme.rounds must be >= 1, got {self.rounds}")


@dataclass(frozen=True)
class StageConfig:
    """Optimisation of one stage: AdamW + cosine, epochs, batch, augmentation."""

    epochs: int = 60
    batch_size: int = 64  # per optimiser step, over all processes, before accumulation
    lr: float = 5e-4
    scale_lr: bool = True  # effective lr = lr × (global batch) / lr_base_batch
    lr_base_batch: int = 512
    schedule: Literal["cosine", "poly"] = "cosine"  # per-step decay after warm-up
    poly_power: float = 0.9  # exponent of the poly schedule
    min_lr: float = 0.0  # floor of the decay
    warmup_epochs: float = 0.0
    weight_decay: float = 0.03
    grad_accum: int = 1  # micro-batches per optimiser step (batch_size is split across them)
    clip_grad_norm: float | None = None
    max_steps: int | None = None  # stop after this many optimiser steps in total (smoke tests, benchmarks)
    checkpoint_every_steps: int | None = None  # extra mid-epoch checkpoints (long epochs); one per epoch always
    transform: TrainTransformConfig = field(default_factory=TrainTransformConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")


def _prompt_stage_defaults() -> StageConfig:
    return StageConfig(batch_size=128, lr=0.025, scale_lr=False,
                       transform=TrainTransformConfig(randaugment=None, random_erasing=0.0))


def _classify_defaults() -> StageConfig:
    # WeakTr stage-1 recipe on VOC: lr 6e-4 (scaled by batch/512), weight decay 0.03
    return StageConfig(lr=6e-4)


@dataclass(frozen=True)
class Config:
    """A whole experiment. Stage sections hold each stage's optimisation; the rest is shared."""

    experiment: str = "semples"  # run folders are <output_dir>/<experiment>/<stage>/
    output_dir: str = "runs"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (multi-GPU: launch with accelerate/torchrun)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 where supported, else fp32
    deterministic: bool = True  # seeded and deterministic where the device allows (always on CPU)
    log_every: int = 10  # optimiser steps between metrics.jsonl lines
    data: DataConfig = field(default_factory=DataConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    scheme: SchemeConfig = field(default_factory=SchemeConfig)
    classify: StageConfig = field(default_factory=_classify_defaults)
    match: StageConfig = field(default_factory=StageConfig)
    prompt: StageConfig = field(default_factory=_prompt_stage_defaults)
    refine: StageConfig = field(default_factory=StageConfig)
    joint: StageConfig = field(default_factory=StageConfig)

    def stage(self, name: str) -> StageConfig:
        """The optimisation section of stage `name`."""
        if name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; valid stages are: {', '.join(STAGES)}")
        return getattr(self, name)


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _resolve_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    p = Path(name_or_path)
    candidates = [p]
    if relative_to is not None and not p.is_absolute():
        candidates.append(relative_to / p)
    candidates.append(PRESET_DIR / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"))
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(f"config {str(name_or_path)!r} is neither a file nor a preset; presets are: "
                      f"{', '.join(preset_names())}")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("_base_", None)
    if base is not None:
        data = deep_merge(_read_yaml(_resolve_path(base, path.parent), seen + (path,)), data)
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Reads a YAML config (file path or preset name; None = defaults) and applies dotted overrides.

    Raises:
        ConfigError: unknown keys (the message lists the valid ones), wrong types, bad values.
    """
    data = _read_yaml(_resolve_path(path)) if path is not None else {}
    return config_from_dict(data, overrides)


def config_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Like `load_config` from an in-memory mapping."""
    data = deep_merge({}, data)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value, schema=Config)
    return from_dict(Config, data)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return to_dict(cfg)


def dump_config(cfg: Config) -> str:
    """The fully resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


__all__ = [
    "ClipConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "GeneratorConfig",
    "LossConfig",
    "MaskingConfig",
    "PromptConfig",
    "SchemeConfig",
    "StageConfig",
    "TrainTransformConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_override",
    "preset_names",
]
