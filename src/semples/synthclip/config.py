"""Every knob of the toy CLIP: its architecture, the image–caption stream it learns from, and its training.

YAML in (`load_synth_clip_config`), resolved YAML out (`dump_synth_clip_config`, written next to the weights as
``training.yaml``), dotted overrides (``--set train.steps=300``); unknown keys are errors that list the valid
names. The defaults below ARE the committed config of the shipped weights (``semples/assets/clip/synth-clip``):
change them only together with retrained weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from semples.data.synthetic import SyntheticConfig
from semples.data.transforms import CLIP_MEAN, CLIP_STD
from semples.utils.dataclass_config import ConfigError, build_config, read_yaml_mapping, to_dict

VOCAB_SIZE = 49408  # open_clip's BPE vocabulary (SimpleTokenizer): fixed by the tokenizer, not a knob


@dataclass(frozen=True)
class SynthClipModelConfig:
    """Architecture numbers of a small open_clip `CLIP` (becomes ``open_clip_config.json``)."""

    embed_dim: int = 128  # joint embedding width
    image_size: int = 96  # the image tower's input side = the demo's crop (property e: trained at the size it is
    # fed, no interpolated position embeddings); FrozenCLIP resizes anything else to it
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 4
    vision_head_width: int = 32
    context_length: int = 24  # text positions: the longest caption of the default world is 22 tokens with SOT/EOT
    text_width: int = 64  # token embeddings are 49,408 × text_width: the bulk of the file (fp16: 6.3 MB at 64)
    text_heads: int = 4
    text_layers: int = 4
    pool_type: Literal["tok", "avg"] = "avg"  # image feature: the class token ("tok") or the mean of the patch
    # tokens ("avg": every patch lives in the joint space, as FMA-WSSS reads CLIP's patch features)

    def validate(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(f"model.image_size {self.image_size} must be a multiple of model.patch_size "
                              f"{self.patch_size}")
        if self.vision_width % self.vision_head_width:
            raise ConfigError(f"model.vision_width {self.vision_width} must be a multiple of model.vision_head_width "
                              f"{self.vision_head_width}")
        if self.text_width % self.text_heads:
            raise ConfigError(f"model.text_width {self.text_width} must be a multiple of model.text_heads "
                              f"{self.text_heads}")
        if self.context_length < 8:
            raise ConfigError(f"model.context_length must be >= 8, got {self.context_length}")

    def __post_init__(self) -> None:
        self.validate()

    def open_clip_cfg(self) -> dict[str, Any]:
        """The ``model_cfg`` mapping open_clip's `CLIP(**model_cfg)` takes."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {"image_size": self.image_size, "patch_size": self.patch_size, "width": self.vision_width,
                           "layers": self.vision_layers, "head_width": self.vision_head_width,
                           **({"pool_type": self.pool_type} if self.pool_type != "tok" else {})},
            "text_cfg": {"context_length": self.context_length, "vocab_size": VOCAB_SIZE, "width": self.text_width,
                         "heads": self.text_heads, "layers": self.text_layers},
        }


@dataclass(frozen=True)
class PairStreamConfig:
    """The image–caption pairs: which images, which captions, which augmentations.

    Item i of the stream is a pure function of (world seed, `seed`, i): either world item i of `split` with its
    web-style caption (objects named, background named only with the world's `caption_background_prob`) or, with
    probability `background_only_prob`, a background alone with a background caption.
    """

    split: str = "clip-train"  # world split the pairs come from (disjoint from train/val/test and the probes)
    background_only_prob: float = 0.06  # share of pairs that show one background alone ("a photo of grass.")
    blank_prob: float = 0.05  # share of pairs that show neither object nor background: the mask-fill grey, plain or
    # with pixel noise, captioned with one of `null_captions` (what an empty mask hands CLIP)
    null_captions: tuple[str, ...] = ("a blank image.", "a grey image.")
    object_removed_prob: float = 0.06  # share of pairs showing a world image whose objects are greyed out (soft,
    # dilated masks, as (1 - M) * X), captioned with its background(s) only ("a photo of grass.")
    objects_on_grey_prob: float = 0.12  # share of pairs showing a world image whose background is greyed out
    # entirely (its objects cut out onto the mask-fill grey), captioned as cut-outs are: "... on a grey background."
    grey_caption_suffix: str = " on a grey background"  # inserted before the final "." of those captions
    crop_scale: tuple[float, float] = (0.8, 1.0)  # random crop: side fraction range, per axis
    flip_prob: float = 0.5
    grey_prob: float = 0.3  # share of images whose background is partly greyed (masked inputs stay in distribution)
    grey_all_prob: float = 0.0  # ... of those, the whole background is greyed (an object on the mask-fill grey)
    imagenet_norm_prob: float = 0.5  # share normalised with ImageNet mean/std instead of CLIP's (the reference
    # masks the ImageNet-normalised crop and hands it to CLIP as is)
    antialias_prob: float = 0.5  # share resized to the tower's size with antialiasing (the rest: plain bilinear,
    # as FrozenCLIP.encode_image does)
    region_min_share: float = 0.5  # region term: a patch belongs to an object when this share of it is the object

    def validate(self) -> None:
        for name in ("background_only_prob", "blank_prob", "object_removed_prob", "objects_on_grey_prob",
                     "flip_prob", "grey_prob", "grey_all_prob", "imagenet_norm_prob", "antialias_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"pairs.{name} must be in [0, 1], got {v}")
        if self.background_only_prob + self.blank_prob + self.object_removed_prob + self.objects_on_grey_prob > 1.0:
            raise ConfigError("pairs.background_only_prob + blank_prob + object_removed_prob + objects_on_grey_prob "
                              "must be <= 1")
        if self.blank_prob > 0 and not self.null_captions:
            raise ConfigError("pairs.null_captions must name at least one caption when pairs.blank_prob > 0")
        lo, hi = self.crop_scale
        if not 0.3 <= lo <= hi <= 1.0:
            raise ConfigError(f"pairs.crop_scale must satisfy 0.3 <= min <= max <= 1, got {self.crop_scale}")

    def __post_init__(self) -> None:
        self.validate()


@dataclass(frozen=True)
class SynthClipTrainConfig:
    """Optimisation: AdamW, linear warm-up then cosine, contrastive loss over the unique captions of a batch."""

    steps: int = 500  # chosen before any downstream run: 1000 steps shrank the bias (+0.18 at 400 -> +0.09)
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_steps: int = 50
    weight_decay: float = 0.1
    region_weight: float = 1.0  # weight of the region term (RegionCLIP-style): the mean projected patch token over
    # each visible object's patches is classified among the class texts "a photo of a {class}." and pulled towards
    # its own (cross-entropy + 1 − cosine); 0 = off
    region_template: str = "a photo of a {}."
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "no"  # fp32: the shipped weights reproduce bit for bit
    # on any CPU (auto would pick bf16 only where the CPU has it)
    device: str = "auto"
    num_workers: int = 1  # DataLoader worker processes generating pairs while the model trains
    threads: int = 0  # torch threads of the training process; 0 = CPU cores − num_workers (at least 1)
    checkpoint_every: int = 100  # steps between resumable checkpoints
    log_every: int = 25

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ConfigError(f"train.steps must be >= 1 and train.batch_size >= 2, got {self.steps}, "
                              f"{self.batch_size}")
        if self.warmup_steps < 0 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ConfigError("train.warmup_steps must be >= 0, train.checkpoint_every and train.log_every >= 1")

    def __post_init__(self) -> None:
        self.validate()


@dataclass(frozen=True)
class ExportConfig:
    """How the weights are written."""

    dtype: Literal["float16", "float32"] = "float16"  # stored precision (loaded into fp32 parameters)
    zero_unused_tokens: bool = True  # zero token-embedding rows no caption of the world uses (git compresses them)
    mean: tuple[float, float, float] = CLIP_MEAN  # preprocess_cfg recorded for plain open_clip users
    std: tuple[float, float, float] = CLIP_STD


# The toy CLIP's "web": captions that rarely name the background (0.05) and, for multi-class images, often name only
# some of the objects (0.5), with co-occurrence a little stronger than the demo's dataset (0.9 vs 0.8). Chosen
# pilot by pilot by `semples synth probe-clip` alone (benchmarks/RESULTS.md, "Toy CLIP").
CLIP_WORLD = SyntheticConfig(p_cooc=0.9, caption_background_prob=0.05, caption_partial_prob=0.5)


@dataclass(frozen=True)
class SynthClipConfig:
    """The toy CLIP: model, world, pair stream, training, export."""

    seed: int = 0  # initialisation, pair stream, augmentations
    model: SynthClipModelConfig = field(default_factory=SynthClipModelConfig)
    world: SyntheticConfig = field(default_factory=lambda: CLIP_WORLD)  # the world its pairs come from (same
    # fields as data.synthetic; same shapes and textures as the demo's, a more biased "web")
    pairs: PairStreamConfig = field(default_factory=PairStreamConfig)
    train: SynthClipTrainConfig = field(default_factory=SynthClipTrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def load_synth_clip_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
                           ) -> SynthClipConfig:
    """Reads a YAML file of `SynthClipConfig` fields (None = the committed defaults) and applies dotted overrides.

    A ``training.yaml`` written next to trained weights is a valid input (it reproduces them).

    Raises:
        ConfigError: unknown keys (the message lists the valid ones), wrong types, bad values.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            p = p / "training.yaml"
        if not p.is_file():
            raise ConfigError(f"{p}: toy-CLIP config not found")
        data = {k: v for k, v in read_yaml_mapping(p).items() if k != "produced"}  # run facts beside the config
    return build_config(SynthClipConfig, data, overrides)


def synth_clip_config_dict(cfg: SynthClipConfig) -> dict[str, Any]:
    """The resolved config as plain data."""
    return to_dict(cfg)


def dump_synth_clip_config(cfg: SynthClipConfig) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
