"""What every mask generator S gives the SemPLeS losses, whatever its architecture.

A generator maps images (B, 3, H, W) to a `GeneratorOutput`: class maps on its own grid (B, K, h, w) — the
`cam` that becomes the soft mask — plus named image-level logits (B, K) that stage classify trains with
multi-label losses. `to_image_size` brings grid maps back to the input's pixels (handling the padding a
patch-based generator adds).

Generators whose maps depend on the image label (CLIP Grad-CAM: a softmax over the classes present in the image)
set ``uses_labels = True`` and accept ``forward(images, labels=...)``; `run_generator` passes the labels to those
and only to those, so callers need not know which kind they hold. A generator may need more than its config to be
built (class names for text prompts, the frozen CLIP it runs on): builders receive a `GeneratorContext`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GeneratorOutput:
    """Outputs of a mask generator.

    Attributes:
        cam: (B, K, h, w) non-negative class maps used as masks/seeds.
        logits: name -> (B, K) image-level class scores (for stage classify's losses).
        maps: name -> (B, K, h, w) every named map the generator computes (e.g. coarse, fused, fine).
        input_size: (H, W) of the images before any padding.
        padded_size: (Hp, Wp) the grid covers (>= input_size).
    """

    cam: torch.Tensor
    logits: dict[str, torch.Tensor]
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    input_size: tuple[int, int] = (0, 0)
    padded_size: tuple[int, int] = (0, 0)

    def to_image_size(self, maps: torch.Tensor | None = None, align_corners: bool = True,
                      size: tuple[int, int] | None = None) -> torch.Tensor:
        """Bilinearly upsamples grid maps (N, C, h, w) (default: `cam`) to the input's (H, W), or to `size`.

        Patch grids of padded inputs are upsampled to the padded size first and then cropped, so each
        map pixel stays aligned with the image pixel it came from.
        """
        maps = self.cam if maps is None else maps
        padded, valid = self.padded_size, self.input_size
        if padded != valid:
            maps = F.interpolate(maps, size=padded, mode="bilinear", align_corners=align_corners)
            maps = maps[..., : valid[0], : valid[1]]
            if size is not None and tuple(size) != tuple(valid):
                maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=align_corners)
            return maps
        return F.interpolate(maps, size=size or valid, mode="bilinear", align_corners=align_corners)


@dataclass
class GeneratorContext:
    """What a generator builder may need beyond its `GeneratorConfig` (only CLIP Grad-CAM needs any of it).

    Attributes:
        class_names: how CLIP reads the K foreground classes (the dataset's prompt names).
        background_names: background classes of the text prompts (FMA-WSSS; `semples.models.prompts`).
        clip: the experiment's frozen CLIP (`FrozenCLIP`), shared with the stage instead of loaded twice.
    """

    class_names: tuple[str, ...] | None = None
    background_names: tuple[str, ...] | None = None
    clip: nn.Module | None = None


class MaskGenerator(nn.Module, abc.ABC):
    """Base class of mask generators. Subclasses split their parameters into a trunk and a head."""

    num_classes: int
    uses_labels: bool = False  # forward takes labels= (maps depend on the image label)

    @abc.abstractmethod
    def forward(self, images: torch.Tensor) -> GeneratorOutput:
        """Shape: images (B, 3, H, W), normalised as the generator expects (ImageNet by default).

        Generators with ``uses_labels`` also take ``labels`` (B, K) multi-hot (None: all classes count as present).
        """

    @abc.abstractmethod
    def trunk_modules(self) -> list[nn.Module]:
        """Modules of the feature trunk (frozen in SemPLeS stages unless train_trunk is set)."""

    def set_trunk_trainable(self, trainable: bool) -> None:
        """Freezes or unfreezes the trunk; a frozen trunk runs in eval mode and under no_grad."""
        self.trunk_trainable = trainable
        for m in self.trunk_modules():
            m.requires_grad_(trainable)
        self.train(self.training)

    def train(self, mode: bool = True) -> MaskGenerator:
        super().train(mode)
        if not getattr(self, "trunk_trainable", True):
            for m in self.trunk_modules():
                m.train(False)
        return self


def run_generator(generator: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> GeneratorOutput:
    """``generator(images)``, with ``labels=`` for the generators that use them (``uses_labels``).

    Shape: images (B, 3, H, W); labels (B, K) multi-hot or None.
    """
    if labels is not None and getattr(generator, "uses_labels", False):
        return generator(images, labels=labels)
    return generator(images)
