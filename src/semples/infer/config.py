"""Config dataclasses of the pseudo-mask step (`semples pseudo-masks`): the ``pseudo`` section of `Config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from semples.models.regions import SamConfig, SuperpixelConfig
from semples.utils.dataclass_config import ConfigError

PSEUDO_MASK_METHODS = ("crf", "region-vote", "threshold")


@dataclass(frozen=True)
class CrfConfig:
    """Dense CRF on the thresholded seed labels (METHOD.md §1.7 reference values)."""

    gt_prob: float = 0.7  # unary from labels: probability that the seed label is right
    gaussian_sxy: float = 4.0  # position kernel width (pixels)
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 83.0  # appearance kernel: position width (pixels)
    bilateral_srgb: float = 5.0  # appearance kernel: colour width (0..255)
    bilateral_compat: float = 3.0
    iterations: int = 10  # mean-field iterations
    over: Literal["all", "present"] = "all"  # labels the CRF runs over: all 1 + |image labels| (reference), or
    # only those present in the seed map (semples before this default; differs on a few boundary pixels)


@dataclass(frozen=True)
class RegionVoteConfig:
    """SAMS region voting (METHOD.md §2; `semples.infer.region_vote`)."""

    source: Literal["auto", "sam", "superpixels"] = "auto"  # auto: SAM when sam.checkpoint is set, else superpixels
    bg_power: float = 0.7  # p of the background score (1 - max)^p: FMA-WSSS 0.6 coarse / 0.7 fine seeds
    order: Literal["area", "confidence", "area_x_confidence"] = "area"  # painting order key (small -> whole)
    background_first: bool = False  # paint every background-voted region before the foreground ones (semples'
    # earlier default); False = METHOD.md's one order for all regions, small/low-confidence to whole/high


@dataclass(frozen=True)
class IgnoreBandConfig:
    """Low-confidence pixels -> 255 (ignored by the segmentation loss). Off by default.

    Scores are the seed scores (threshold/crf: constant background t and the CAMs) or the painted region's vote
    scores (region-vote). Pixels that region voting leaves uncovered are never ignored.
    """

    margin: float | None = None  # ignore where top score - runner-up score < margin
    min_confidence: float | None = None  # ignore where the top score < min_confidence

    @property
    def enabled(self) -> bool:
        return self.margin is not None or self.min_confidence is not None


@dataclass(frozen=True)
class PseudoMaskConfig:
    """Seeds -> pseudo masks (label PNGs: 0 background, 1..K classes, 255 ignore)."""

    method: Literal["crf", "region-vote", "threshold"] = "crf"
    threshold: float | None = None  # background score t (crf, threshold); None: pass --threshold/--threshold-from
    split: str | None = None  # split whose seeds become pseudo masks (default: data.train_split)
    cams_dir: str | None = None  # seeds to read (default: cams.out_dir, else <output_dir>/<experiment>/cams/<split>)
    out_dir: str | None = None  # default: <output_dir>/<experiment>/pseudo_masks/<method>/<split>
    workers: int = 2  # processes (CRF and superpixels are CPU-bound); SAM always runs in the main process
    crf: CrfConfig = field(default_factory=CrfConfig)
    region_vote: RegionVoteConfig = field(default_factory=RegionVoteConfig)
    superpixels: SuperpixelConfig = field(default_factory=SuperpixelConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    ignore: IgnoreBandConfig = field(default_factory=IgnoreBandConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"pseudo.threshold must be in [0, 1], got {self.threshold}")
        if self.workers < 0:
            raise ConfigError(f"pseudo.workers must be >= 0, got {self.workers}")
        if not 0.0 < self.crf.gt_prob < 1.0:
            raise ConfigError(f"pseudo.crf.gt_prob must be in (0, 1), got {self.crf.gt_prob}")
        if self.region_vote.bg_power <= 0:
            raise ConfigError(f"pseudo.region_vote.bg_power must be > 0, got {self.region_vote.bg_power}")


__all__ = ["PSEUDO_MASK_METHODS", "CrfConfig", "IgnoreBandConfig", "PseudoMaskConfig", "RegionVoteConfig"]
