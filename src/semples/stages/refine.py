"""Stage refine — Prompt-guided Semantic Refinement (paper §3.2, Eq. 3).

Trains: the mask generator S. Frozen: CLIP and the learned prompts (their features u^b are encoded once, when the
stage is built). Loss: L_match + λ L_refine with L_refine = −log(1 − s(v^f, u^b)); v^f is encoded once per step
and shared by both terms.

Ablation controls (`control_features`, ``prompts.refine_with``): u^b replaced by random Gaussian directions in
CLIP's joint space, or by the class's own text feature u^f — what a correct SemPLeS must beat.
"""

from __future__ import annotations

import torch

from semples.errors import ConfigError
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
        control = cfg.prompts.refine_with
        if control == "learned":
            require(prompts, "stage refine needs learned prompts: pass --prompts <prompt run folder>")
        elif prompts is not None:
            raise ConfigError(f"prompts.refine_with={control} replaces the learned prompts by a control: drop "
                              "--prompts (or set prompts.refine_with=learned)")

    @classmethod
    def from_config(cls, cfg, classes, *, generator=None, prompts=None, clip=None, seeds=None,
                    dataset=None) -> BuiltStage:
        """S from the classify run (reference) or the match run (`generator`); learned prompts from a prompt run,
        or the control of ``prompts.refine_with``."""
        cls.validate_inputs(cfg, prompts=prompts)
        warn_fresh_start(cls.name, generator)
        gen, record = start_generator(cfg, classes, generator, clip)
        inputs = {"generator": record}
        # which S stage refine starts from: the classify result (reference) or the match result
        inputs["start_point"] = record.get("stage", "fresh")
        names = list(classes.prompt_names)
        control = cfg.prompts.refine_with
        if control == "learned":
            learned, inputs["prompts"] = load_prompts(prompts, clip, len(classes))
            features = None
        else:
            learned = None
            inputs["prompts"] = {"control": control, "seed": cfg.seed if control == "gaussian" else None}
            features = control_features(control, clip, names, cfg.clip.class_template, seed=cfg.seed)
        stage = cls(gen, learned, clip, names, train_trunk=cfg.generator.train_trunk, background_features=features,
                    **clip_stage_kwargs(cfg, cls.name))
        return BuiltStage(stage, inputs)

    def __init__(self, generator: MaskGenerator, prompts: PromptTextEncoder | None, clip, class_names, *, loss,
                 masking, train_trunk: bool = False, class_template: str = "a photo of {}.",
                 data_norm: str = "imagenet", background_features: torch.Tensor | None = None) -> None:
        super().__init__(clip, class_names, masking=masking, class_template=class_template, data_norm=data_norm,
                         sim_range=(loss.sim_min, loss.sim_max))
        self.mask_generator = generator
        generator.set_trunk_trainable(train_trunk)
        generator.detach_coarse_in_fusion = False
        if (prompts is None) == (background_features is None):
            raise ValueError("stage refine takes either learned prompts or fixed background features (a control)")
        if prompts is not None:
            self.hold_frozen("prompts", prompts)
            with torch.no_grad():
                background_features = prompts().float()
        self.register_buffer("prompt_features", background_features.float(), persistent=False)
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


def control_features(kind: str, clip, class_names: list[str] | tuple[str, ...], class_template: str,
                     seed: int = 0) -> torch.Tensor:
    """u^b of an ablation control, one row per class (not normalised; the losses use cosines).

    Args:
        kind: "gaussian" — independent N(0, I) directions in CLIP's joint space, seeded by `seed`;
            "class_text" — the class's own text feature u^f (L_refine then pushes M ⊙ X away from its class).
        clip: the frozen CLIP (its embedding width and text tower).
        class_names: the classes, in label order.
        class_template: the text t_k of u^f.
        seed: the Gaussian control's seed.

    Shape: returns (K, embed_dim) float32.
    """
    if kind == "class_text":
        return clip.class_text_features(list(class_names), class_template).float().clone()
    if kind == "gaussian":
        g = torch.Generator().manual_seed(seed)
        return torch.randn(len(class_names), clip.embed_dim, generator=g)
    raise ValueError(f"unknown refine control {kind!r}; valid: gaussian, class_text")
