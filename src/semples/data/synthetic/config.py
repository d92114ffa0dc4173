"""Every parameter of the synthetic world (`SyntheticConfig`, YAML ``data.synthetic.<field>``) and its constants."""

from __future__ import annotations

from dataclasses import dataclass, field

from semples.data.synthetic.shapes import OBJECT_SHAPES
from semples.data.synthetic.textures import BACKGROUND_TEXTURES
from semples.utils.dataclass_config import ConfigError

# ImageNet mean as 8-bit RGB: the colour masked pixels take when a mask multiplies an ImageNet-normalised image.
# Backgrounds are kept well away from it so that "masked out" never looks like a background type.
MASK_FILL_RGB = (124, 116, 104)

DEFAULT_ASSOCIATIONS = {
    "boat": "water",
    "plane": "sky",
    "cow": "grass",
    "train": "rails",
    "bird": "sand",
    "car": "snow",
}

DEFAULT_SPLITS = {"train": 2000, "val": 300, "test": 300}


@dataclass(frozen=True)
class SyntheticConfig:
    """Every parameter of the synthetic world (YAML: ``data.synthetic.<field>``)."""

    seed: int = 0  # world seed: item i of split s is a pure function of (seed, s, i)
    splits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SPLITS))  # name -> size, over the defaults
    image_size: tuple[int, int] = (96, 128)  # (min, max) side in pixels; height and width drawn independently
    classes: tuple[str, ...] = tuple(DEFAULT_ASSOCIATIONS)  # object classes, in label order (see OBJECT_SHAPES)
    backgrounds: tuple[str, ...] = ("water", "sky", "grass", "rails", "sand", "snow", "brick", "tiles")
    associations: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ASSOCIATIONS))  # class -> background
    p_cooc: float = 0.8  # probability that a class present in an image comes with its associated background
    objects_per_image: tuple[int, int] = (1, 3)  # (min, max) objects, drawn uniformly; classes drawn uniformly
    object_size: tuple[float, float] = (0.3, 0.55)  # sqrt(box area) as a fraction of the shorter image side
    max_box_overlap: float = 0.25  # placements whose box IoU with an earlier object exceeds this are redrawn
    placement_tries: int = 6  # redraws before an overlapping placement is accepted anyway
    colour_jitter: float = 0.12  # per-object brightness factor range (1 ± this)
    pixel_noise: float = 5.0  # std of the per-pixel luminance noise (8-bit units); 0 = off
    texture_variants: int = 24  # pre-generated texture tiles per background type (images crop them at random)
    caption_background_prob: float = 0.2  # share of object captions that also name the background(s)
    caption_partial_prob: float = 0.0  # share of captions of multi-class images that name only some of the
    # classes (a random non-empty subset), as web captions name the salient objects and skip the rest
    cache: bool = False  # keep generated items in memory (per dataset object, per worker: ~50 kB per item)

    def validate(self) -> None:
        lo, hi = self.image_size
        if not 32 <= lo <= hi:
            raise ConfigError(f"data.synthetic.image_size must satisfy 32 <= min <= max, got {self.image_size}")
        unknown = [c for c in self.classes if c not in OBJECT_SHAPES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"data.synthetic.classes must be distinct names among {', '.join(OBJECT_SHAPES)}; "
                              f"got {self.classes}")
        unknown = [b for b in self.backgrounds if b not in BACKGROUND_TEXTURES]
        if unknown or len(set(self.backgrounds)) != len(self.backgrounds):
            raise ConfigError(f"data.synthetic.backgrounds must be distinct names among "
                              f"{', '.join(BACKGROUND_TEXTURES)}; got {self.backgrounds}")
        for c in self.classes:
            if self.associations.get(c) not in self.backgrounds:
                raise ConfigError(f"data.synthetic.associations: class {c!r} needs an associated background among "
                                  f"data.synthetic.backgrounds ({', '.join(self.backgrounds)}), got "
                                  f"{self.associations.get(c)!r}")
        if not 0.0 <= self.p_cooc <= 1.0:
            raise ConfigError(f"data.synthetic.p_cooc must be in [0, 1], got {self.p_cooc}")
        omin, omax = self.objects_per_image
        if not 1 <= omin <= omax <= 5:
            raise ConfigError(f"data.synthetic.objects_per_image must satisfy 1 <= min <= max <= 5, "
                              f"got {self.objects_per_image}")
        if len(self.backgrounds) < omax + 1:
            raise ConfigError(f"data.synthetic.backgrounds needs at least objects_per_image max + 1 = {omax + 1} "
                              f"types (so a non-associated background always exists), got {len(self.backgrounds)}")
        if not 0.05 <= self.object_size[0] <= self.object_size[1] <= 0.9:
            raise ConfigError(f"data.synthetic.object_size must satisfy 0.05 <= min <= max <= 0.9, "
                              f"got {self.object_size}")
        if self.texture_variants < 1:
            raise ConfigError(f"data.synthetic.texture_variants must be >= 1, got {self.texture_variants}")
        if any(n < 0 for n in self.splits.values()):
            raise ConfigError(f"data.synthetic.splits sizes must be >= 0, got {self.splits}")
        if not 0.0 <= self.caption_partial_prob <= 1.0:
            raise ConfigError(f"data.synthetic.caption_partial_prob must be in [0, 1], got {self.caption_partial_prob}")
        if not 0.0 <= self.caption_background_prob <= 1.0:
            raise ConfigError(f"data.synthetic.caption_background_prob must be in [0, 1], "
                              f"got {self.caption_background_prob}")

    def __post_init__(self) -> None:
        self.validate()

    def split_sizes(self) -> dict[str, int]:
        """Split name -> size: `splits` over `DEFAULT_SPLITS` (so ``splits.train=50`` keeps val and test)."""
        return {**DEFAULT_SPLITS, **self.splits}
