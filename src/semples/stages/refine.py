"""Stage refine — Prompt-guided Semantic Refinement (paper §3.2, Eq. 3).

Trains: the mask generator S. Frozen: CLIP and the learned prompts (their features u^b are encoded once, when the
stage is built). Loss: L_match + λ L_refine with L_refine = −log(1 − s(v^f, u^b)); v^f is encoded once per step
and shared by both terms.
"""

from __future__ import annotations

import torch

from semples.losses import match_loss, refine_loss
from semples.models.clip import PromptTextEncoder
from semples.models.mask_generators import MaskGenerator
from semples.stages.base import BuiltStage
from semples.stages.clip_stage import ClipStage
from semples.stages.common import clip_stage_kwargs, load_prompts, require, start_generator, warn_fresh_start


class RefineStage(ClipStage):
    name = "refine"
    trains = ("mask_generator",)
    frozen = ("clip", "prompts")
    loss_names = ("match_loss", "match_fg_loss", "match_bg_loss", "refine_loss")
    # scheme.refine_init: which S refine starts from (also recorded as the generator input's sha256)
    depends_on = ("clip", "masking", "generator", "prompts", "loss.lambda_bg", "loss.lambda_refine", "loss.sim_min",
                  "loss.sim_max", "scheme.refine_init")

    @classmethod
    def validate_inputs(cls, cfg, *, generator=None, prompts=None, seeds=None) -> None:
        require(prompts, "stage refine needs learned prompts: pass --prompts <prompt run folder>")

    @classmethod
    def from_config(cls, cfg, classes, *, generator=None, prompts=None, clip=None, seeds=None,
                    dataset=None) -> BuiltStage:
        """S from the classify run (reference) or the match run (`generator`); learned prompts from a prompt run."""
        cls.validate_inputs(cfg, prompts=prompts)
        warn_fresh_start(cls.name, generator)
        gen, record = start_generator(cfg, classes, generator, clip)
        inputs = {"generator": record}
        learned, inputs["prompts"] = load_prompts(prompts, clip, len(classes))
        # which S stage refine starts from: the classify result (reference) or the match result
        inputs["start_point"] = record.get("stage", "fresh")
        stage = cls(gen, learned, clip, list(classes.prompt_names), train_trunk=cfg.generator.train_trunk,
                    **clip_stage_kwargs(cfg, cls.name))
        return BuiltStage(stage, inputs)

    def __init__(self, generator: MaskGenerator, prompts: PromptTextEncoder, clip, class_names, *, loss, masking,
                 train_trunk: bool = False, class_template: str = "a photo of {}.",
                 data_norm: str = "imagenet") -> None:
        super().__init__(clip, class_names, masking=masking, class_template=class_template, data_norm=data_norm,
                         sim_range=(loss.sim_min, loss.sim_max))
        self.mask_generator = generator
        generator.set_trunk_trainable(train_trunk)
        generator.detach_coarse_in_fusion = False
        self.hold_frozen("prompts", prompts)
        with torch.no_grad():
            self.register_buffer("prompt_features", prompts().float(), persistent=False)
        self.lambda_bg = loss.lambda_bg
        self.lambda_refine = loss.lambda_refine

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        f = self.pair_features(self.mask_generator, batch["image"], batch["labels"], self.masking.eps_match)
        if f is None:
            zero = self.zero_loss()
            return {"loss": zero, **{name: zero.detach() for name in self.loss_names}}
        out = match_loss(f.v_fg, f.v_bg, self.text_features[f.k], lambda_bg=self.lambda_bg,
                         sim_min=self.sim_min, sim_max=self.sim_max)
        out.update(refine_loss(f.v_fg, self.prompt_features[f.k], self.sim_min, self.sim_max))
        out["loss"] = out["match_loss"] + self.lambda_refine * out["refine_loss"]
        return out
