"""Stage joint — all SemPLeS parts trained at once (paper Table 6, "joint training": 65.9 vs 68.7 sequential).

Trains: the mask generator S and the prompts together. Frozen: CLIP.
Loss: L_match + L_prompt + λ L_refine, where each term trains the part its own stage trains: L_prompt sees the
background features detached from S, L_refine sees the prompt features detached — so the only difference to
the sequential scheme is that both parts move at the same time (prompts are immature early on, which is the
paper's explanation for the drop). One mask per pair is used for all terms (ε of stage match).
"""

from __future__ import annotations

import torch

from semples.losses import match_loss, prompt_loss, refine_loss
from semples.models.clip import PromptTextEncoder
from semples.models.mask_generators import MaskGenerator
from semples.stages.base import BuiltStage
from semples.stages.clip_stage import ClipStage
from semples.stages.common import clip_stage_kwargs, new_prompts, start_generator, warn_fresh_start


class JointStage(ClipStage):
    name = "joint"
    trains = ("mask_generator", "prompts")
    frozen = ("clip",)
    loss_names = ("match_loss", "match_fg_loss", "match_bg_loss", "prompt_loss", "prompt_image_loss",
                  "prompt_text_loss", "refine_loss")
    depends_on = ("clip", "masking", "generator", "prompts", "loss")

    @classmethod
    def from_config(cls, cfg, classes, *, generator=None, prompts=None, clip=None, seeds=None,
                    dataset=None) -> BuiltStage:
        """S from a classify run (`generator`); fresh prompt vectors."""
        warn_fresh_start(cls.name, generator)
        gen, record = start_generator(cfg, classes, generator, clip)
        stage = cls(gen, new_prompts(cfg, clip, len(classes)), clip, list(classes.prompt_names),
                    train_trunk=cfg.generator.train_trunk, **clip_stage_kwargs(cfg, cls.name))
        return BuiltStage(stage, {"generator": record})

    def __init__(self, generator: MaskGenerator, prompts: PromptTextEncoder, clip, class_names, *, loss, masking,
                 train_trunk: bool = False, class_template: str = "a photo of {}.",
                 data_norm: str = "imagenet") -> None:
        super().__init__(clip, class_names, masking=masking, class_template=class_template, data_norm=data_norm,
                         sim_range=(loss.sim_min, loss.sim_max))
        self.mask_generator = generator
        self.prompts = prompts
        generator.set_trunk_trainable(train_trunk)
        generator.detach_coarse_in_fusion = False
        self.loss_cfg = loss

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        f = self.pair_features(self.mask_generator, batch["image"], batch["labels"], self.masking.eps_match)
        if f is None:
            zero = self.zero_loss()
            return {"loss": zero, **{name: zero.detach() for name in self.loss_names}}
        c = self.loss_cfg
        u_fg = self.text_features[f.k]
        classes, inverse = torch.unique(f.k, return_inverse=True)
        u_bg = self.prompts(classes)[inverse]
        out = match_loss(f.v_fg, f.v_bg, u_fg, lambda_bg=c.lambda_bg, sim_min=self.sim_min, sim_max=self.sim_max)
        out.update(prompt_loss(u_bg, f.v_bg.detach(), u_fg, lambda_text=c.lambda_text, use_image=c.use_prompt_image,
                               use_text=c.use_prompt_text, sim_min=self.sim_min, sim_max=self.sim_max))
        out.update(refine_loss(f.v_fg, u_bg.detach(), self.sim_min, self.sim_max))
        out["loss"] = out["match_loss"] + out["prompt_loss"] + c.lambda_refine * out["refine_loss"]
        return out
