"""Stage prompt — Contrastive Prompt Learning (paper §3.2, Eq. 2).

Trains: the class-specific prompt vectors p_k only.
Frozen: CLIP and the mask generator S (eval mode, no grad: it only defines X^b).
Loss: L_prompt = −log s(u^b, v^b) + λ_T log s(u^b, u^f); the prompts of the classes in the batch are encoded
once per step and shared by all pairs of that class.
"""

from __future__ import annotations

import torch

from semples.losses import prompt_loss
from semples.models.clip import PromptTextEncoder
from semples.models.mask_generators import MaskGenerator
from semples.stages.base import BuiltStage
from semples.stages.clip_stage import ClipStage
from semples.stages.common import clip_stage_kwargs, new_prompts, require, start_generator


class PromptStage(ClipStage):
    name = "prompt"
    trains = ("prompts",)
    frozen = ("clip", "mask_generator")
    loss_names = ("prompt_loss", "prompt_image_loss", "prompt_text_loss")
    depends_on = ("clip", "masking", "generator", "prompts", "loss.lambda_text", "loss.use_prompt_image",
                  "loss.use_prompt_text", "loss.sim_min", "loss.sim_max")

    @classmethod
    def validate_inputs(cls, cfg, *, generator=None, prompts=None, seeds=None) -> None:
        require(generator, "stage prompt needs the mask generator trained by stage match: pass --generator "
                           "<match run folder>")

    @classmethod
    def from_config(cls, cfg, classes, *, generator=None, prompts=None, clip=None, seeds=None,
                    dataset=None) -> BuiltStage:
        """S (frozen) from a match run (`generator`); fresh prompt vectors."""
        cls.validate_inputs(cfg, generator=generator)
        gen, record = start_generator(cfg, classes, generator, clip)
        stage = cls(gen, new_prompts(cfg, clip, len(classes)), clip, list(classes.prompt_names),
                    **clip_stage_kwargs(cfg, cls.name))
        return BuiltStage(stage, {"generator": record})

    def __init__(self, generator: MaskGenerator, prompts: PromptTextEncoder, clip, class_names, *, loss, masking,
                 class_template: str = "a photo of {}.", data_norm: str = "imagenet") -> None:
        super().__init__(clip, class_names, masking=masking, class_template=class_template, data_norm=data_norm,
                         sim_range=(loss.sim_min, loss.sim_max))
        self.prompts = prompts
        self.hold_frozen("mask_generator", generator)
        self.loss_cfg = loss

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            f = self.pair_features(self._frozen["mask_generator"], batch["image"], batch["labels"],
                                   self.masking.eps_prompt, foreground=False)
        if f is None:
            zero = self.zero_loss()
            return {"loss": zero, **{name: zero.detach() for name in self.loss_names}}
        classes, inverse = torch.unique(f.k, return_inverse=True)
        u_bg = self.prompts(classes)[inverse]
        c = self.loss_cfg
        out = prompt_loss(u_bg, f.v_bg, self.text_features[f.k], lambda_text=c.lambda_text,
                          use_image=c.use_prompt_image, use_text=c.use_prompt_text,
                          sim_min=self.sim_min, sim_max=self.sim_max)
        out["loss"] = out["prompt_loss"]
        return out
