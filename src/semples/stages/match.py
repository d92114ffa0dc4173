"""Stage match — Segment-Label Matching (paper §3.2, Eq. 1).

Trains: the mask generator S (conv head + attention fusion; the trunk too when `train_trunk`).
Frozen: CLIP. Loss: L_match = −log s(v^f, u^f) − λ_b log(1 − s(v^b, u^f)) over the positive pairs.
"""

from __future__ import annotations

import torch

from semples.losses import match_loss
from semples.models.mask_generators import MaskGenerator
from semples.stages.base import BuiltStage
from semples.stages.clip_stage import ClipStage
from semples.stages.common import clip_stage_kwargs, start_generator, warn_fresh_start


class MatchStage(ClipStage):
    name = "match"
    trains = ("mask_generator",)
    frozen = ("clip",)
    loss_names = ("match_loss", "match_fg_loss", "match_bg_loss")
    depends_on = ("clip", "masking", "generator", "loss.lambda_bg", "loss.sim_min", "loss.sim_max")

    @classmethod
    def from_config(cls, cfg, classes, *, generator=None, prompts=None, clip=None, seeds=None,
                    dataset=None) -> BuiltStage:
        """S from a classify run (`generator`)."""
        warn_fresh_start(cls.name, generator)
        gen, record = start_generator(cfg, classes, generator, clip)
        stage = cls(gen, clip, list(classes.prompt_names), train_trunk=cfg.generator.train_trunk,
                    **clip_stage_kwargs(cfg, cls.name))
        return BuiltStage(stage, {"generator": record})

    def __init__(self, generator: MaskGenerator, clip, class_names, *, loss, masking, train_trunk: bool = False,
                 class_template: str = "a photo of {}.", data_norm: str = "imagenet") -> None:
        super().__init__(clip, class_names, masking=masking, class_template=class_template, data_norm=data_norm,
                         sim_range=(loss.sim_min, loss.sim_max))
        self.mask_generator = generator
        generator.set_trunk_trainable(train_trunk)
        generator.detach_coarse_in_fusion = False
        self.lambda_bg = loss.lambda_bg

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        f = self.pair_features(self.mask_generator, batch["image"], batch["labels"], self.masking.eps_match)
        if f is None:
            zero = self.zero_loss()
            return {"loss": zero, **{name: zero.detach() for name in self.loss_names}}
        out = match_loss(f.v_fg, f.v_bg, self.text_features[f.k], lambda_bg=self.lambda_bg,
                         sim_min=self.sim_min, sim_max=self.sim_max)
        out["loss"] = out["match_loss"]
        return out
