"""Stage classify (stage 0): image-level multi-label training of the mask generator (WeakTr / MCTformer).

Trains: the whole mask generator (trunk, class tokens, conv head, attention fusion).
Frozen: nothing. Losses: multi-label soft margin on the class-token scores, the pooled coarse CAM and the pooled
fine CAM (the coarse map enters the fusion detached, as in WeakTr, so the fine loss trains the fusion).
"""

from __future__ import annotations

import torch

from semples.losses import multilabel_losses
from semples.models.mask_generators import MaskGenerator, run_generator
from semples.stages.base import BuiltStage, Stage
from semples.stages.common import start_generator


class ClassifyStage(Stage):
    name = "classify"
    trains = ("mask_generator",)
    frozen = ()
    loss_names = ("classify_loss", "token_loss", "coarse_loss", "fine_loss")
    depends_on = ("clip", "generator", "loss.classify_token", "loss.classify_coarse", "loss.classify_fine")
    needs_clip = False  # unless the generator family needs it (CLIP Grad-CAM)

    @classmethod
    def from_config(cls, cfg, classes, *, generator=None, prompts=None, clip=None, seeds=None,
                    dataset=None) -> BuiltStage:
        """S from ImageNet / random weights, or continued from `generator` (a run folder / checkpoint)."""
        gen, record = start_generator(cfg, classes, generator, clip)
        lc = cfg.loss
        return BuiltStage(cls(gen, token_weight=lc.classify_token, coarse_weight=lc.classify_coarse,
                              fine_weight=lc.classify_fine), {"generator": record})

    def __init__(self, generator: MaskGenerator, *, token_weight: float = 1.0, coarse_weight: float = 1.0,
                 fine_weight: float = 1.0) -> None:
        super().__init__()
        self.mask_generator = generator
        generator.set_trunk_trainable(True)
        generator.detach_coarse_in_fusion = True
        self.weights = {"token": token_weight, "coarse": coarse_weight, "fine": fine_weight}

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        out = run_generator(self.mask_generator, batch["image"], batch["labels"])
        losses = multilabel_losses(out.logits, batch["labels"], self.weights)
        losses["loss"] = losses["classify_loss"]
        return losses
