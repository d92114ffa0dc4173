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

from semples.data.config import DataConfig, SegTrainTransformConfig, TrainTransformConfig
from semples.infer.config import PseudoMaskConfig
from semples.utils.dataclass_config import (
    ConfigError,
    build_config,
    deep_merge,
    parse_override,
    read_yaml_mapping,
    to_dict,
)

PRESET_DIR = Path(__file__).parent / "configs"


def stage_section(name: str) -> str:
    """The config section of stage `name` (stage names use "-", YAML sections "_"; `semples.stages.STAGES` lists
    the stages)."""
    return name.replace("-", "_")


@dataclass(frozen=True)
class ClipConfig:
    """The frozen CLIP (open_clip). Never trained; stored in checkpoints by name, path and sha256 only."""

    arch: str = "ViT-B-32"  # open_clip model name, "local-dir:DIR", or a path to an open_clip model-config JSON
    pretrained: str = "openai"  # open_clip tag, a local checkpoint file, or "none" (random weights: tests only)
    block_type: Literal["custom", "default"] = "custom"  # "custom" = SDPA attention (same weights, faster)
    cache_dir: str | None = None  # where open_clip looks for downloaded weights
    class_template: str = "a photo of {}."  # text t_k for u^f (the class name fills {})
    compile: Literal["default", "reduce-overhead", "max-autotune"] | None = None  # torch.compile the towers


@dataclass(frozen=True)
class PromptConfig:
    """Learnable background prompts p_k (METHOD.md §1.2)."""

    length: int = 30  # L: vectors per class
    template: str = "a photo of {}."  # the prompt vectors fill {}; "{}" = bare prompts
    init: Literal["uniform", "normal"] = "uniform"  # uniform: U[low, high); normal: N(0, std)
    init_low: float = 0.0
    init_high: float = 1.0
    init_std: float = 0.02
    refine_with: Literal["learned", "gaussian", "class_text"] = "learned"  # u^b of stage refine: the learned
    # prompts (--prompts; SemPLeS), or an ablation control that needs no prompts: random N(0, I) directions in
    # CLIP's joint space (seeded by `seed`), or the class's own text feature u^f


@dataclass(frozen=True)
class ClipCamConfig:
    """The CLIP Grad-CAM generator (generator.name = clip_gradcam; FMA-WSSS / CLIP-ES, METHOD.md §2). It runs on the
    experiment's frozen CLIP (the `clip` section; FMA-WSSS: ViT-B-16) and trains only its prompt contexts."""

    prompts: Literal["segmentation", "classification", "handcrafted"] = "segmentation"  # learnable context per
    # class, name first (FMA segmentation prompts) | one shared learnable context, name last (FMA classification
    # prompts) | fixed templates (training-free CLIP-ES baseline). Stages fma-classify / fma-segment set their own.
    context_length: int = 16  # M: learnable context vectors per prompt (CoOp / FMA-WSSS: 16)
    init_std: float = 0.02  # learnable contexts start from N(0, init_std) (CoOp)
    init_text: str | None = None  # optional phrase whose token embeddings initialise the first context vectors
    templates: tuple[str, ...] = ("a clean origami {}.",)  # handcrafted prompts (CLIP-ES's template)
    background_names: tuple[str, ...] = ()  # background classes; () = the dataset's list (semples.models.prompts)
    logit_scale: float = 100.0  # logits = logit_scale · cosine(image feature, text feature)
    input_norm: Literal["imagenet", "clip"] = "imagenet"  # normalisation of the images handed in (made CLIP's inside)


@dataclass(frozen=True)
class GeneratorConfig:
    """The mask generator S (METHOD.md §1.6). name: weaktr_vit | resnet_cam (backbone e.g. resnet50) | clip_gradcam."""

    name: str = "weaktr_vit"  # registry name of the generator family
    backbone: str = "deit_small_patch16_224"  # timm architecture name
    backbone_kwargs: dict[str, int | float | str | bool | list[int]] = field(default_factory=dict)  # tiny variants
    pretrained: bool = True  # ImageNet weights for the backbone by timm name (needs the HF hub or its cache)
    backbone_checkpoint: str | None = None  # explicit backbone weights file (takes precedence over `pretrained`)
    drop_path: float = 0.1  # stochastic depth while the trunk trains (stage classify)
    train_trunk: bool = False  # SemPLeS stages: train the ViT trunk too (reference: no; trunk runs under no_grad)
    attention_reduction: int = 8  # reduction of the per-head attention-weighting MLP (WeakTr: 8)
    attention_pool: Literal["max", "avg"] = "max"  # pooling of each head's attention map before that MLP
    mask_source: Literal["fine", "fused", "coarse"] = "fine"  # which map becomes the soft mask M
    clip_cam: ClipCamConfig = field(default_factory=ClipCamConfig)  # generator.name = clip_gradcam only


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
    """Optimisation of one stage: AdamW + cosine (or poly), epochs, batch, augmentation."""

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
    order_seed: int | None = None  # seed of the data order alone (None: the experiment's `seed`); augmentation
    # and model randomness keep `seed` — the noise-floor knob of benchmarks/synthetic_ablation.py
    checkpoint_every_steps: int | None = None  # extra mid-epoch checkpoints (long epochs); one per epoch always
    transform: TrainTransformConfig = field(default_factory=TrainTransformConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "lr_base_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.min_lr > self.lr:
            raise ConfigError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.poly_power <= 0:
            raise ConfigError(f"poly_power must be > 0, got {self.poly_power}")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ConfigError(f"clip_grad_norm must be > 0 (or null: no clipping), got {self.clip_grad_norm}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ConfigError(f"max_steps must be >= 0 (or null: no limit), got {self.max_steps}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise ConfigError(f"checkpoint_every_steps must be >= 1 (or null), got {self.checkpoint_every_steps}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")


@dataclass(frozen=True)
class CamConfig:
    """Seed (CAM) inference: `semples cams` (METHOD.md §1.7). Defaults = VOC; COCO uses scales 0.8, 1.0, 1.2."""

    scales: tuple[float, ...] = (1.0, 1.2)  # image resize factors; each view's maps are upsampled to full size
    flip: bool = True  # add the horizontal flip of every scale (un-flipped before summing)
    split: str | None = None  # split to infer (default: data.eval_split)
    batch_size: int = 4  # images per forward (equal sizes only); WeakTr keeps all L·H attention maps: ~1 GB per
    # view of a 640x480 image at scale 1.2 in fp32 — lower it on small GPUs
    group_size: int = 32  # images read together and grouped by size into batches; also the unit of resumption
    num_workers: int | None = None  # image-reading DataLoader workers (default: data.num_workers)
    normalize: str = "imagenet"  # input normalisation the generator was trained with ("imagenet" or "clip")
    align_corners: bool = False  # bilinear upsampling of the generator's grid maps to the image
    eps: float = 1e-5  # per-class min-max: (m - min) / (max - min + eps)
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "no"  # autocast of the generator forward
    out_dir: str | None = None  # default: <output_dir>/<experiment>/cams/<split>

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"cams.scales must be a non-empty list of positive factors, got {self.scales}")
        if self.batch_size < 1 or self.group_size < 1:
            raise ConfigError("cams.batch_size and cams.group_size must be >= 1")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"cams.num_workers must be >= 0 (or null: data.num_workers), got {self.num_workers}")
        if self.eps <= 0:
            raise ConfigError(f"cams.eps must be > 0, got {self.eps}")


@dataclass(frozen=True)
class SeedEvalConfig:
    """Seed evaluation: `semples eval-seeds` — background-threshold sweep (METHOD.md §1.7)."""

    thresholds: tuple[float, float, float] = (0.0, 0.95, 0.01)  # background score grid: start, stop (included), step
    num_workers: int = 2  # threads reading CAM files and masks
    out_dir: str | None = None  # default: <output_dir>/<experiment>/eval_seeds/<split>

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        start, stop, step = self.thresholds
        if step <= 0 or stop < start:
            raise ConfigError(f"seeds.thresholds must be (start, stop, step) with step > 0 and stop >= start, "
                              f"got {self.thresholds}")
        if self.num_workers < 1:
            raise ConfigError(f"seeds.num_workers must be >= 1, got {self.num_workers}")


@dataclass(frozen=True)
class SegmenterConfig:
    """The final segmentation model trained on pseudo masks (`semples train-seg`, METHOD.md §1.7;
    semples.models.segmenters, docs/segmentation.md)."""

    arch: str = "deeplabv3plus"  # any segmentation_models_pytorch architecture (deeplabv3plus, deeplabv3, unet,
    # unetplusplus, manet, linknet, fpn, pspnet, pan, upernet, segformer, dpt) | mask2former (HF transformers) |
    # segmenter_linear | segmenter_mask (WeakTr's Segmenter)
    encoder: str | None = None  # SMP: "tu-<timm name>" or an SMP encoder; Segmenter: a timm ViT; None = the family's
    # default (tu-resnet101 / deit_small_patch16_224); mask2former: unused (hf_config names the backbone)
    encoder_kwargs: dict[str, int | float | str | bool | list[int]] = field(default_factory=dict)  # to the timm
    # model (tiny variants: layers, channels, stem_width / embed_dim, depth, num_heads)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # other keywords of the SMP architecture
    pretrained: bool = True  # ImageNet weights of the encoder by name (timm / SMP hub), hf_weights for mask2former
    backbone_checkpoint: str | None = None  # explicit backbone weights file (takes precedence over `pretrained`)
    output_stride: int = 16  # DeepLabV3/V3+: stride of the dilated encoder's deepest features (16 or 8)
    aspp_rates: tuple[int, ...] = (6, 12, 18)  # DeepLabV3/V3+: ASPP dilations at output stride 16 (doubled at 8)
    aspp_separable: bool = True  # DeepLabV3/V3+: atrous depthwise-separable ASPP convolutions (the V3+ paper's)
    decoder_channels: int = 256  # DeepLabV3/V3+: ASPP / decoder width
    decoder_layers: int = 2  # Segmenter mask transformer: layers
    decoder_dim: int | None = None  # Segmenter mask transformer: width (None = the ViT's width)
    decoder_heads: int | None = None  # Segmenter mask transformer: heads (None = width / 64)
    dropout: float = 0.1  # dropout in the decoder (DeepLab: after the ASPP projection)
    drop_path: float = 0.1  # stochastic depth of a ViT backbone (Segmenter)
    hf_config: dict[str, Any] = field(default_factory=dict)  # mask2former: keywords of transformers'
    # Mask2FormerConfig (backbone_config: a Swin config); {} = HF's defaults (Swin-B-sized)
    hf_weights: str | None = None  # mask2former: HF hub id or local folder of a Mask2Former or Swin checkpoint
    sync_bn: bool = True  # BatchNorm statistics over all GPUs when training on several (CUDA only)
    channels_last: bool | None = None  # train in channels_last memory format (unset = off); evaluation of
    # convolutional models always runs channels_last

    @property
    def name(self) -> str:
        """The architecture (`arch`); the name older code reads."""
        return self.arch


@dataclass(frozen=True)
class SegEvalConfig:
    """Evaluation of the final model on a split with ground truth (`semples train-seg` / `eval-seg`)."""

    split: str | None = None  # default: data.eval_split
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # multi-scale inference (DeepLabV3+ paper)
    flip: bool = True  # multi-scale also averages the horizontal flip of every scale
    mode: Literal["whole", "slide"] = "whole"  # whole image per forward, or sliding windows (ViTs at 512)
    crop_size: int = 512  # slide: window side
    stride: int = 341  # slide: window step
    crf: bool = False  # dense-CRF post-processing of the multi-scale probabilities (semples.infer.crf)
    crf_params: dict[str, int | float] = field(default_factory=dict)  # for dense_crf_probs (its defaults if empty)
    crf_workers: int = 2  # processes running the CRF (CPU-bound) while the model runs in this one; <= 1: in process
    save_predictions: bool = False  # write label PNGs (the pseudo-mask format) of every evaluated setting

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"segment.eval.scales must be a non-empty list of positive factors, got {self.scales}")
        if not 0 < self.stride <= self.crop_size:
            raise ConfigError(f"segment.eval.stride must be in 1..crop_size ({self.crop_size}), got {self.stride}")
        if self.crf_workers < 0:
            raise ConfigError(f"segment.eval.crf_workers must be >= 0, got {self.crf_workers}")


@dataclass(frozen=True)
class SegmentStageConfig(StageConfig):
    """Stage segment: the final model on pseudo masks — optimisation, augmentation, model and evaluation.
    Defaults: VOC train_aug, batch 16, 512 crops, ~33k steps (DeepLab's 30k), AdamW 1e-4 with poly decay.
    DeepLab's own recipe: optimizer sgd, lr 0.01, backbone_lr_mult 0.1 (head ×10), momentum 0.9, weight_decay
    1e-4, warmup_epochs 0 (docs/segmentation.md)."""

    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-4
    scale_lr: bool = False
    schedule: Literal["cosine", "poly"] = "poly"
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    transform: SegTrainTransformConfig = field(default_factory=SegTrainTransformConfig)  # random scale/crop/flip
    train_split: str | None = None  # split whose images the pseudo masks cover (default: data.train_split)
    optimizer: Literal["adamw", "sgd"] = "adamw"  # AdamW (betas 0.9, 0.999) or SGD with momentum (Nesterov off)
    momentum: float = 0.9  # SGD momentum
    backbone_lr_mult: float = 1.0  # lr of the backbone (encoder) relative to `lr` (heads, decoders)
    model: SegmenterConfig = field(default_factory=SegmenterConfig)
    eval: SegEvalConfig = field(default_factory=SegEvalConfig)  # not part of the training checkpoint's config


@dataclass(frozen=True)
class CaaConfig:
    """Class-aware attention affinity (FMA-WSSS / CLIP-ES CAA, METHOD.md §2; `semples.infer.caa`)."""

    enabled: bool = True  # refine CLIP CAMs with CAA (off: plain Grad-CAM seeds)
    layers: int = 8  # mean attention of the last `layers` blocks of the image tower (all heads)
    sinkhorn_iterations: int = 1  # column-then-row normalisations
    power: int = 2  # matrix power of the symmetrised affinity (2 = square: a two-step random walk)
    restrict_targets: bool = False  # also zero the refined CAM outside the boxes (default: only sources in boxes)


@dataclass(frozen=True)
class FmaConfig:
    """FMA-WSSS (METHOD.md §2): prompt learning (stages fma-classify / fma-segment) and the seed steps around it."""

    background_negatives: bool = True  # fma-classify: background classes are negatives of every image
    seeds_dir: str | None = None  # fma-segment: coarse seeds, label PNGs or a CAM folder (usually `--seeds DIR`)
    seeds_threshold: float | None = None  # background score that turns CAM-folder seeds into labels
    caa: CaaConfig = field(default_factory=CaaConfig)
    coarse_box_threshold: float = 0.4  # CAA boxes from the CAM thresholded at this share of its max (coarse seeds)
    fine_box_threshold: float = 0.5  # ... for the fine seeds (segmentation prompts)
    coarse_bg_power: float = 0.6  # SAMS background score (1 - max)^p for the coarse seeds
    fine_bg_power: float = 0.7  # ... for the fine seeds (= pseudo masks)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("coarse_box_threshold", "fine_box_threshold"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"fma.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.caa.layers < 1 or self.caa.power < 1 or self.caa.sinkhorn_iterations < 0:
            raise ConfigError("fma.caa: layers and power must be >= 1, sinkhorn_iterations >= 0")

    def phase_settings(self, phase: str) -> tuple[float, float]:
        """(CAA box threshold, SAMS background power) of phase "coarse" or "fine"."""
        if phase not in FMA_PHASES:
            raise ConfigError(f"unknown FMA phase {phase!r}; valid: {', '.join(FMA_PHASES)}")
        if phase == "coarse":
            return self.coarse_box_threshold, self.coarse_bg_power
        return self.fine_box_threshold, self.fine_bg_power


FMA_PHASES = ("coarse", "fine")  # FMA-WSSS's two seed phases: coarse seeds (fma-segment's input), fine = pseudo masks


def _fma_stage_defaults() -> StageConfig:
    # METHOD.md gives no optimisation numbers for FMA-WSSS; ours: AdamW lr 2e-3 (CoOp's SGD lr), batch 32,
    # 10 epochs, no weight decay on prompt vectors, geometric augmentation only (seeds stay aligned with the crop)
    return StageConfig(epochs=10, batch_size=32, lr=2e-3, scale_lr=False, weight_decay=0.0,
                       transform=TrainTransformConfig(scale=(0.25, 1.0), randaugment=None, random_erasing=0.0))


def _prompt_stage_defaults() -> StageConfig:
    return StageConfig(batch_size=128, lr=0.025, scale_lr=False,
                       transform=TrainTransformConfig(randaugment=None, random_erasing=0.0))


def _classify_defaults() -> StageConfig:
    # WeakTr stage-1 recipe on VOC: lr 6e-4 (scaled by batch/512), weight decay 0.03
    return StageConfig(lr=6e-4)


@dataclass(frozen=True)
class PipelineConfig:
    """`semples run`: which chain, which splits (see semples.pipeline)."""

    method: Literal["semples", "fma", "semples+fma"] = "semples"  # which seeds the chain makes (semples.pipeline)
    pseudo_split: str | None = None  # split pseudo masks are made for (default: data.train_split)
    seed_split: str | None = None  # split seeds and pseudo masks are scored on (default: data.eval_split)
    figures: int = 8  # images in the report's figure grid


@dataclass(frozen=True)
class LogConfig:
    """Training logs besides metrics.jsonl (which is always written, every `log_every` steps)."""

    tensorboard: bool = False  # also write TensorBoard events to <run>/tensorboard (pip install 'semples[tensorboard]')
    sample_images: int = 4  # TensorBoard: pictures per epoch (images, CAMs or pseudo masks and predictions)


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
    log: LogConfig = field(default_factory=LogConfig)  # TensorBoard
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
    segment: SegmentStageConfig = field(default_factory=SegmentStageConfig)  # final model (train-seg)
    cams: CamConfig = field(default_factory=CamConfig)
    seeds: SeedEvalConfig = field(default_factory=SeedEvalConfig)
    pseudo: PseudoMaskConfig = field(default_factory=PseudoMaskConfig)  # `semples pseudo-masks`
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)  # `semples run`
    fma: FmaConfig = field(default_factory=FmaConfig)  # FMA-WSSS: CAA, SAMS powers, seeds of fma-segment
    fma_classify: StageConfig = field(default_factory=_fma_stage_defaults)  # stage fma-classify
    fma_segment: StageConfig = field(default_factory=_fma_stage_defaults)  # stage fma-segment

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        import re

        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", self.device):
            raise ConfigError(f"device {self.device!r} is not one of auto, cpu, cuda, cuda:N, mps")
        if self.log_every < 1:
            raise ConfigError(f"log_every must be >= 1, got {self.log_every}")

    def stage(self, name: str) -> StageConfig:
        """The optimisation section of stage `name` (every `StageConfig` field of the config is one)."""
        section = getattr(self, stage_section(name), None)
        if not isinstance(section, StageConfig):
            valid = [f.replace("_", "-") for f, v in vars(self).items() if isinstance(v, StageConfig)]
            raise ConfigError(f"unknown stage {name!r}; valid stages are: {', '.join(valid)}")
        return section


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
    data = read_yaml_mapping(path)
    base = data.pop("_base_", None)
    if base is not None:
        data = deep_merge(_read_yaml(_resolve_path(base, path.parent), seen + (path,)), data)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Reads a YAML config (file path or preset name; None = defaults) and applies dotted overrides.

    Raises:
        ConfigError: unknown keys (the message lists the valid ones), wrong types, bad values.
    """
    data = _read_yaml(_resolve_path(path)) if path is not None else {}
    return config_from_dict(data, overrides)


def config_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Like `load_config` from an in-memory mapping."""
    return build_config(Config, data, overrides)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return to_dict(cfg)


def dump_config(cfg: Config) -> str:
    """The fully resolved config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


__all__ = [
    "CaaConfig",
    "CamConfig",
    "ClipCamConfig",
    "ClipConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "FmaConfig",
    "GeneratorConfig",
    "LogConfig",
    "LossConfig",
    "MaskingConfig",
    "PromptConfig",
    "PseudoMaskConfig",
    "SchemeConfig",
    "SegEvalConfig",
    "SegTrainTransformConfig",
    "SegmentStageConfig",
    "SegmenterConfig",
    "SeedEvalConfig",
    "StageConfig",
    "TrainTransformConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_override",
    "preset_names",
    "stage_section",
]
