"""Stage fma-classify — classification prompts of FMA-WSSS (METHOD.md §2).

Trains: the shared CoOp context of the classification prompts (16 vectors, class name last) of a CLIP Grad-CAM
generator, over the K foreground classes and the named background classes. Frozen: CLIP (held aside).
Loss: multi-label contrastive loss on logit_scale · cos(image feature, prompt feature), the image feature being the
mean of CLIP's projected patch tokens: each present class against the image's negatives — the absent foreground
classes and (``fma.background_negatives``, default) every background class.

The trained generator is an ordinary mask generator: `semples cams --generator <this run>` gives its Grad-CAMs
(the coarse CAMs of FMA-WSSS), and `semples.methods.fma` refines them with CAA and region voting.
"""

from __future__ import annotations

import torch

from semples.losses import multilabel_contrastive_loss
from semples.models.mask_generators import ClipGradCAM
from semples.stages.base import BuiltStage, Stage
from semples.stages.common import fma_config, start_generator


class FmaClassifyStage(Stage):
    name = "fma-classify"
    trains = ("mask_generator",)
    frozen = ("clip",)
    loss_names = ("contrastive_loss",)
    depends_on = ("clip", "generator", "fma")
    prompt_set = "classification"  # the generator.clip_cam.prompts this stage trains

    @classmethod
    def configure(cls, cfg):
        return fma_config(cfg, cls.name, cls.prompt_set)

    @classmethod
    def from_config(cls, cfg, classes, *, generator=None, prompts=None, clip=None, seeds=None,
                    dataset=None) -> BuiltStage:
        """A CLIP Grad-CAM generator with fresh classification prompts (`generator` continues one)."""
        gen, record = start_generator(cfg, classes, generator, clip)
        return BuiltStage(cls(gen, background_negatives=cfg.fma.background_negatives), {"generator": record},
                          config=cfg)

    def __init__(self, generator: ClipGradCAM, *, background_negatives: bool = True) -> None:
        super().__init__()
        if not isinstance(generator, ClipGradCAM):
            raise TypeError(f"stage fma-classify trains a ClipGradCAM generator, got {type(generator).__name__}")
        if not any(p.requires_grad for p in generator.parameters()):
            raise ValueError("stage fma-classify needs learnable prompts (generator.clip_cam.prompts: classification)")
        self.mask_generator = generator
        self.hold_frozen("clip", generator.clip)
        self.background_negatives = background_negatives

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        gen = self.mask_generator
        logits = gen.image_logits(batch["image"])  # (B, K + N_bg)
        k = gen.num_classes
        positives = torch.zeros_like(logits, dtype=torch.bool)
        positives[:, :k] = batch["labels"] > 0.5
        negatives = ~positives
        if not self.background_negatives:
            negatives[:, k:] = False
        out = multilabel_contrastive_loss(logits, positives, negatives)
        out["loss"] = out["contrastive_loss"]
        return out

    def describe(self) -> dict:
        info = super().describe()
        info["prompts"] = self.mask_generator.prompt_record()
        info["background_negatives"] = self.background_negatives
        return info
