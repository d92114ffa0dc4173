"""What a training stage is: trainable parts (registered submodules), frozen parts (held aside), named losses, and
what it is built from.

The one training loop (`semples.engine`) runs any `Stage`: it optimises the parameters that require grad,
checkpoints `state_dict()` (trainable parts only), and calls `forward(batch)`, which returns
``{"loss": total, "<name>_loss": ..., ...}``. Frozen parts — CLIP, and S in stage prompt — are never
submodules: they stay out of optimisers, DDP and checkpoints, follow the stage across devices, and stay in
eval mode whatever `train()` is called with.

A stage class also carries what the rest of the package needs to know about it (`semples.stages.STAGES` is the one
list of stages): `from_config` builds it from the experiment config and the run folders of earlier stages,
`depends_on` names the config keys its result depends on besides its own section (stored in its checkpoint and
compared when a finished run folder is reused), `needs_clip` says whether training it loads the frozen CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from semples.config import Config
    from semples.data.base import ClassTable

def denormalize(images: torch.Tensor, norm: str = "imagenet") -> torch.Tensor:
    """Normalised images back to [0, 1] (for pictures). Shape: (N, 3, H, W)."""
    from semples.data.transforms import denormalize as _denormalize

    return _denormalize(images.float().cpu(), norm).clamp(0, 1)


def colour_labels(labels: torch.Tensor) -> torch.Tensor:
    """Label maps in the VOC palette (255 = ignore in its palette colour). Shape: (N, H, W) -> (N, 3, H, W) in
    [0, 1]."""
    from semples.data.io import voc_colormap

    palette = torch.from_numpy(voc_colormap()).float() / 255.0
    return palette[labels.long().cpu().clamp(0, 255)].permute(0, 3, 1, 2)


# what every stage's result depends on, besides its own section and its `depends_on` keys
TRAINING_KEYS = ("seed", "deterministic", "mixed_precision", "data")


@dataclass
class BuiltStage:
    """A stage ready for the engine, plus a record of what it was built from (for the manifest)."""

    stage: Stage
    inputs: dict = field(default_factory=dict)
    config: Any = None  # the config the stage runs with, when the stage adjusted it (FMA stages)
    dataset: object = None  # a dataset replacing the training split (fma-segment: images + coarse seeds)
    with_mask: bool = False  # batches carry the dataset's masks (the seeds)


def select_keys(data: dict, dotted: tuple[str, ...]) -> dict:
    """The parts of a nested dict named by dotted keys ("loss" = the whole section, "loss.lambda_bg" = one value)."""
    out: dict = {}
    for key in dotted:
        head, _, rest = key.partition(".")
        if head not in data:
            continue
        if not rest:
            out[head] = data[head]
        elif isinstance(data[head], dict):
            sub = select_keys(data[head], (rest,))
            if sub:
                out.setdefault(head, {}).update(sub)
    return out


class Stage(nn.Module):
    """Base class of training stages.

    Class attributes (documentation that tests check):
        name: the stage's name (run folder, CLI, config section with "-" as "_").
        trains: names of the submodules that train.
        frozen: names of the frozen parts.
        loss_names: keys of the dict `forward` returns, besides "loss".
        depends_on: dotted config keys its result depends on besides `TRAINING_KEYS` and its own section.
        needs_clip: training it loads the frozen CLIP (also true whenever the generator family needs it).
    """

    name: str = "stage"
    trains: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()
    loss_names: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ("clip", "generator")
    needs_clip: bool = True

    @classmethod
    def section(cls) -> str:
        """The stage's config section ("fma-classify" -> "fma_classify")."""
        return cls.name.replace("-", "_")

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        """Every config key the stage's result depends on (stored in its checkpoint, compared on reuse)."""
        return (*TRAINING_KEYS, cls.section(), *cls.depends_on)

    @classmethod
    def recorded_config(cls, cfg: Config) -> dict:
        """The parts of `cfg` named by `config_keys`, plus the stage name: what its checkpoint records."""
        from semples.config import config_to_dict

        out = select_keys(config_to_dict(cfg), cls.config_keys())
        out["stage_name"] = cls.name
        return out

    @classmethod
    def configure(cls, cfg: Config) -> Config:
        """The config the stage runs with (and its checkpoint records); the FMA stages fix their generator."""
        return cfg

    @classmethod
    def validate_inputs(cls, cfg: Config, *, generator: str | None = None, prompts: str | None = None,
                        seeds: str | None = None) -> None:
        """Raises `ConfigError` (saying what to pass) when an input the stage needs is missing."""

    @classmethod
    def from_config(cls, cfg: Config, classes: ClassTable, *, generator: str | None = None,
                    prompts: str | None = None, clip=None, seeds: str | None = None, dataset=None) -> BuiltStage:
        """Builds the stage from the experiment config and the run folders of earlier stages.

        Args:
            cfg: the experiment config.
            classes: the dataset's class table (prompt names feed CLIP).
            generator: run folder or checkpoint of S to start from.
            prompts: run folder or checkpoint of learned prompts.
            clip: the frozen CLIP (loaded by `semples.stages.build_stage` when the stage needs it).
            seeds: a folder of seeds (fma-segment).
            dataset: the training split (fma-segment wraps it with the seeds).
        """
        raise NotImplementedError(f"stage {cls.name} has no from_config")

    def __init__(self) -> None:
        super().__init__()
        self._frozen: dict[str, nn.Module] = {}

    def hold_frozen(self, name: str, module: nn.Module) -> nn.Module:
        """Keeps `module` as a frozen part: no grad, eval mode, not a submodule (not in state_dict)."""
        module.requires_grad_(False)
        module.eval()
        self._frozen[name] = module
        return module

    def frozen_modules(self) -> dict[str, nn.Module]:
        return dict(self._frozen)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return dict(self.named_children())

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for module in self._frozen.values():
            module._apply(fn)
        return self

    def train(self, mode: bool = True) -> Stage:
        super().train(mode)
        for module in self._frozen.values():
            module.eval()
        return self

    def zero_loss(self) -> torch.Tensor:
        """A zero that is connected to every trainable parameter (for batches without positive pairs)."""
        params = [p for p in self.parameters() if p.requires_grad]
        zero = sum((p.sum() * 0.0 for p in params), torch.zeros(()))
        return zero

    @torch.no_grad()
    def sample_images(self, batch: dict, count: int = 4) -> dict[str, torch.Tensor]:
        """A few pictures of what the stage learns, for TensorBoard (the engine calls it once per epoch, in eval
        mode): the images and, for stages with a mask generator, its CAM (max over the labelled classes).

        Shape: each value (N, 3, H, W) float in [0, 1].
        """
        images = batch["image"][:count]
        out = {"image": denormalize(images)}
        generator = getattr(self, "mask_generator", None) or self._frozen.get("mask_generator")
        if generator is None or "labels" not in batch:
            return out
        from semples.models.mask_generators import run_generator

        labels = batch["labels"][:count]
        result = run_generator(generator, images, labels)
        cams = result.to_image_size(result.cam.float()) * labels[:, :, None, None]
        peak = cams.flatten(2).amax(-1).clamp_min(1e-6)[:, :, None, None]
        heat = (cams / peak).amax(1, keepdim=True).clamp(0, 1)
        out["cam"] = 0.5 * out["image"] + 0.5 * torch.cat([heat, torch.zeros_like(heat), 1 - heat], 1)
        return out

    def describe(self) -> dict:
        """What trains, what is frozen, which losses — recorded in each run's manifest."""
        trainable = {n: sum(p.numel() for p in m.parameters() if p.requires_grad)
                     for n, m in self.trainable_modules().items()}
        frozen_info = {}
        for n, m in self._frozen.items():
            frozen_info[n] = getattr(m, "source", None) or type(m).__name__
        return {"stage": self.name, "trainable_parameters": trainable, "frozen": frozen_info,
                "losses": list(self.loss_names)}
