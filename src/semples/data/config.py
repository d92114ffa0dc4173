"""Config dataclasses of the data layer: which dataset, where, which split, and the transform pipelines."""

from __future__ import annotations

from dataclasses import dataclass, field

from semples.data.synthetic import SyntheticConfig
from semples.utils.dataclass_config import ConfigError


@dataclass(frozen=True)
class TrainTransformConfig:
    """Joint image/mask augmentation for a training stage (applied on the fly, seeded per epoch and item)."""

    crop_size: int = 224  # side of the square training crop (pixels)
    scale: tuple[float, float] = (0.08, 1.0)  # random-resized-crop area range (fraction of the image)
    ratio: tuple[float, float] = (0.75, 1.3333333333333333)  # random-resized-crop aspect-ratio range
    hflip: float = 0.5  # probability of a horizontal flip
    randaugment: str | None = "rand-m9-mstd0.5-inc1"  # timm RandAugment spec (image only); null = off
    random_erasing: float = 0.25  # probability of random erasing (image only, after normalisation); 0 = off
    normalize: str = "imagenet"  # "imagenet" or "clip" mean/std

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ConfigError(f"transform.scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if self.normalize not in ("imagenet", "clip"):
            raise ConfigError(f"transform.normalize must be 'imagenet' or 'clip', got {self.normalize!r}")


@dataclass(frozen=True)
class SegTrainTransformConfig:
    """Joint image/mask augmentation for training the segmentation model on pseudo masks."""

    crop_size: int = 512  # side of the square training crop (pixels); smaller images are padded
    scale_range: tuple[float, float] = (0.5, 2.0)  # random rescaling factor of the whole image (uniform)
    hflip: float = 0.5  # probability of a horizontal flip
    normalize: str = "imagenet"  # "imagenet" or "clip" mean/std (evaluation uses the same)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.crop_size < 1:
            raise ConfigError(f"segment.transform.crop_size must be >= 1, got {self.crop_size}")
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"segment.transform.scale_range must satisfy 0 < min <= max, got {self.scale_range}")
        if not 0.0 <= self.hflip <= 1.0:
            raise ConfigError(f"segment.transform.hflip is a probability, got {self.hflip}")
        if self.normalize not in ("imagenet", "clip"):
            raise ConfigError(f"segment.transform.normalize must be 'imagenet' or 'clip', got {self.normalize!r}")


@dataclass(frozen=True)
class DataConfig:
    """Which images and labels to read. `dataset` picks the reader; `root` is the dataset's folder."""

    dataset: str = "synthetic"  # voc | coco | folder | synthetic
    root: str | None = None  # dataset root (VOC: folder holding VOC2012/ or VOC2012 itself; COCO: folder with images/)
    train_split: str = "train"  # split the training stages read (VOC: train | train_aug; COCO: train2014 ...)
    eval_split: str = "val"  # split CAMs and evaluation read by default
    prompt_names: str = "plain"  # class names as CLIP reads them: "plain" or a dataset-specific variant ("clims")
    num_workers: int = 2  # DataLoader workers per process
    skip_bad: bool = False  # skip unreadable items (reported at the end) instead of stopping at the first
    options: dict[str, str | int | float | bool | list[str] | None] = field(default_factory=dict)  # reader extras
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # the synthetic world (dataset: synthetic)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0 (0: read in the main process), got {self.num_workers}")
