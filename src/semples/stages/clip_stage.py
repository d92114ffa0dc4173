"""Shared plumbing of the stages that talk to CLIP: class text features once, masked pair features per step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from semples.models.clip import FrozenCLIP
from semples.models.mask_generators import MaskGenerator, run_generator
from semples.stages.base import Stage
from semples.stages.masking import masked_images, pair_masks, positive_pairs


@dataclass
class PairFeatures:
    """CLIP features of the masked images of a batch's positive pairs.

    Attributes:
        n, k: (P,) image index and class index of each pair.
        v_fg, v_bg: (P, E) image features of M ⊙ X and (1 − M) ⊙ X (None when not computed).
        masks: (P, H, W) the soft masks used.
    """

    n: torch.Tensor
    k: torch.Tensor
    v_fg: torch.Tensor | None
    v_bg: torch.Tensor | None
    masks: torch.Tensor


class ClipStage(Stage):
    """A stage with a frozen CLIP, cached class text features u^f and the masking switches."""

    def __init__(self, clip: FrozenCLIP, class_names: list[str] | tuple[str, ...], *, masking,
                 class_template: str = "a photo of {}.", data_norm: str = "imagenet",
                 sim_range: tuple[float, float] = (1e-4, 0.9999)) -> None:
        super().__init__()
        self.hold_frozen("clip", clip)
        self.masking = masking
        self.data_norm = data_norm
        self.sim_min, self.sim_max = sim_range
        # u^f depends only on the class: encoded once here, never per step
        self.register_buffer("text_features", clip.class_text_features(list(class_names), class_template).clone(),
                             persistent=False)

    @property
    def clip(self) -> FrozenCLIP:
        return self._frozen["clip"]

    def pair_features(self, generator: MaskGenerator, images: torch.Tensor, labels: torch.Tensor, eps: float,
                      foreground: bool = True, background: bool = True) -> PairFeatures | None:
        """Runs S, builds the masked images of every positive pair and encodes them with CLIP in one call.

        Returns None when the batch has no positive pair.
        """
        n, k = positive_pairs(labels)
        if n.numel() == 0:
            return None
        out = run_generator(generator, images, labels)  # labels reach the generators that use them
        masks = pair_masks(out, n, k, eps, self.masking.align_corners)
        fg, bg = masked_images(images[n], masks, space=self.masking.space, data_norm=self.data_norm,
                               foreground=foreground, background=background)
        parts = [x for x in (fg, bg) if x is not None]
        feats = self.clip.encode_image(torch.cat(parts) if len(parts) > 1 else parts[0])
        if foreground and background:
            v_fg, v_bg = feats.chunk(2)
        else:
            v_fg, v_bg = (feats, None) if foreground else (None, feats)
        return PairFeatures(n, k, v_fg, v_bg, masks)
