"""CLIP Grad-CAM mask generator (FMA-WSSS, Yang & Gong; CLIP-ES, Lin et al., CVPR 2023; METHOD.md §2).

A frozen CLIP ViT (ViT-B/16 for real runs) scores an image against text prompts of the K foreground classes and
of background classes:

    f       = mean over patches of ln_post(tokens) @ proj           image feature (class token left out)
    logits  = logit_scale · cos(f, u_c)                               c over K foreground + N_bg background prompts
    p       = softmax over {classes present in the image} ∪ {background prompts}
    A       = LN1 output of the last block (B, 1 + h·w, D)            the Grad-CAM activation
    w_c     = mean over patches of ∂p_c / ∂A                          channel weights (D,)
    CAM_c   = ReLU(Σ_d w_c,d · A[patch, d])                           (h, w)

Every (image, class) pair is one row of an expanded batch through the last block, so all classes of all images
get their Grad-CAM from one `torch.autograd.grad` call ("batched over classes"). When the prompts train
(grad enabled and prompt parameters that require grad), that call uses ``create_graph=True``: the CAM is then a
differentiable function of the prompts, which is what stage fma-segment (CAM activation loss) and SemPLeS'
match/refine (masks from the CAM) train. The blocks before the last one do not depend on the prompts and run
without a graph. Without labels (``labels=None``) every class counts as present.

Prompts (`semples.models.prompts`): learnable CoOp segmentation prompts (default), classification prompts, or
hand-written templates — the last is the training-free CLIP-ES baseline (``generator.clip_cam.prompts:
handcrafted``; preset ``voc_clip_es``).

The CLIP is the experiment's frozen CLIP, held aside (never a submodule): checkpoints hold only the prompt
contexts and their token ids (a few hundred kB), never CLIP. `load_generator` rebuilds the generator from those
and the CLIP handed in through a `GeneratorContext` (or, failing that, the CLIP named in the checkpoint's config).
Images arrive ImageNet-normalised by default (``clip_cam.input_norm``) and are converted to CLIP's normalisation
inside; sizes that are not multiples of the patch size are padded (bottom/right, CLIP's mean colour) and the
position embedding is interpolated to the patch grid.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from semples.data.transforms import denormalize, normalize
from semples.models.clip_visual import block_forward, check_visual, embed, patch_feature, patch_size, run_blocks
from semples.models.mask_generators.base import GeneratorContext, GeneratorOutput, MaskGenerator
from semples.models.prompts import CoOpPrompts, HandcraftedPrompts
from semples.utils.dataclass_config import ConfigError

log = logging.getLogger(__name__)

PROMPT_KINDS = ("segmentation", "classification", "handcrafted")


class ClipGradCAM(MaskGenerator):
    """Grad-CAM of a frozen CLIP against text prompts (see the module docstring).

    Args:
        clip: the frozen CLIP (`FrozenCLIP`, an open_clip ViT); held aside, moved with this module.
        prompts: a module returning (C, E) text features of C = K + N_bg prompts, foreground classes first
            (`CoOpPrompts` or `HandcraftedPrompts`); its parameters are what trains.
        num_classes: K foreground classes.
        logit_scale: logits = logit_scale · cosine (FMA-WSSS / CLIP: 100).
        input_norm: "imagenet" or "clip", the normalisation of the images handed in.
        pair_chunk: (image, class) rows per pass through the last block (bounds memory at inference).
    """

    uses_labels = True

    def __init__(self, clip: nn.Module, prompts: nn.Module, num_classes: int, *, logit_scale: float = 100.0,
                 input_norm: str = "imagenet", pair_chunk: int = 64) -> None:
        super().__init__()
        check_visual(clip.model.visual)
        if input_norm not in ("imagenet", "clip"):
            raise ValueError(f"input_norm must be 'imagenet' or 'clip', got {input_norm!r}")
        num_prompts = int(prompts.num_prompts)
        if num_prompts < num_classes:
            raise ValueError(f"{num_prompts} prompts cannot cover {num_classes} foreground classes")
        object.__setattr__(self, "clip", clip)  # held aside: not a submodule, not in state_dict
        self.prompts = prompts
        self.num_classes = num_classes
        self.num_background = num_prompts - num_classes
        self.logit_scale = float(logit_scale)
        self.input_norm = input_norm
        self.pair_chunk = pair_chunk
        self.patch_size = patch_size(clip.model.visual)
        self.trunk_trainable = False  # the CLIP trunk never trains (it is not even part of this module)
        self.detach_coarse_in_fusion = False  # attribute the SemPLeS stages set on every generator (unused here)

    # ------------------------------------------------------------------------------------------- plumbing
    @property
    def visual(self) -> nn.Module:
        return self.clip.model.visual

    def trunk_modules(self) -> list[nn.Module]:
        return []  # CLIP is held aside and frozen; only the prompt contexts are this generator's parameters

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self.clip._apply(fn)  # the held-aside CLIP follows the generator across devices and dtypes
        return self

    def _prompts_train(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.prompts.parameters())

    def _clip_input(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """CLIP-normalised images padded to multiples of the patch size, and the padded size."""
        x = images.float()
        if self.input_norm == "imagenet":
            x = normalize(denormalize(x, "imagenet"), "clip")
        height, width = x.shape[-2:]
        p = self.patch_size
        pad_h, pad_w = (-height) % p, (-width) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # 0 = CLIP's mean colour after normalisation
        return x, (height + pad_h, width + pad_w)

    def text_features(self) -> torch.Tensor:
        """(C, E) L2-normalised prompt features, foreground classes first (differentiable w.r.t. the prompts)."""
        return F.normalize(self.prompts().float(), dim=-1)

    def check_class_names(self, names: tuple[str, ...] | list[str], background_names: tuple[str, ...] | None = None,
                          where: str = "") -> bool:
        """Whether learned prompts (loaded from `where`) hold these class names (and background names, when given).

        On a match the prompts take the names (for manifests); otherwise a warning says they keep the names they
        were trained with (their token ids).
        """
        if not isinstance(self.prompts, CoOpPrompts):
            return True
        wanted = list(names) + (list(background_names) if background_names is not None else [])
        if background_names is not None and len(wanted) != self.prompts.num_prompts:
            wanted = list(names)
        bad = [name for i, name in enumerate(wanted) if not self.prompts.holds_name(i, name)]
        if bad:
            log.warning("%s: the CLIP Grad-CAM prompts were trained for other names than %d of those given "
                        "(first: %r); they keep the names they were trained with", where or "generator", len(bad),
                        bad[0])
            return False
        self.prompts.names[: len(wanted)] = wanted
        return True

    def prompt_record(self) -> dict:
        """What the manifest says about the prompts: kind, names, context length."""
        p = self.prompts
        kind = ("handcrafted" if isinstance(p, HandcraftedPrompts) else
                "classification" if p.shared else "segmentation")
        rec = {"kind": kind, "class_names": list(p.names[: self.num_classes]),
               "background_names": list(p.names[self.num_classes:])}
        if isinstance(p, CoOpPrompts):
            rec.update(context_length=p.context_length, class_position=p.class_position)
        else:
            rec["templates"] = list(p.templates)
        return rec

    # ------------------------------------------------------------------------------------------- image level
    def image_logits(self, images: torch.Tensor) -> torch.Tensor:
        """logit_scale · cos(f, u_c) for all C prompts (K foreground, then background); CLIP runs without a graph,
        the prompts with one when they train.

        Shape: images (B, 3, H, W) -> (B, C).
        """
        x, _ = self._clip_input(images)
        visual = self.visual
        with torch.no_grad():
            tokens, _ = embed(visual, x)
            tokens, _ = run_blocks(visual, tokens, len(visual.transformer.resblocks))
            feat = F.normalize(patch_feature(visual, tokens).float(), dim=-1)
        return self.logit_scale * feat @ self.text_features().t()

    # ------------------------------------------------------------------------------------------- Grad-CAM
    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> GeneratorOutput:
        """Grad-CAMs of the classes present in `labels` (all K when None); absent classes are 0.

        Shape: images (B, 3, H, W) normalised with ``input_norm``; labels (B, K) multi-hot.
        Returns `GeneratorOutput` with cam (B, K, h, w) ≥ 0, maps {"gradcam": cam, "raw": before the ReLU},
        logits {"clip": (B, K) foreground logits}.
        """
        return self._run(images, labels, attention_layers=0)[0]

    def forward_with_attention(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                               layers: int = 8) -> tuple[GeneratorOutput, torch.Tensor]:
        """`forward` plus the attention of the last `layers` blocks (all blocks when the tower has fewer),
        averaged over layers and heads.

        Returns (output, attention (B, 1 + h·w, 1 + h·w) float32, class token first, detached).
        """
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        layers = min(layers, len(self.visual.transformer.resblocks))
        out, attn = self._run(images, labels, attention_layers=layers)
        return out, attn

    def _run(self, images: torch.Tensor, labels: torch.Tensor | None,
             attention_layers: int) -> tuple[GeneratorOutput, torch.Tensor | None]:
        train = self._prompts_train()
        # Grad-CAM needs autograd even where the caller runs under torch.inference_mode (seed inference)
        with torch.inference_mode(False):
            if images.is_inference():
                images = images.clone()
            if labels is not None and labels.is_inference():
                labels = labels.clone()
            return self._gradcam(images, labels, attention_layers, train)

    def _gradcam(self, images: torch.Tensor, labels: torch.Tensor | None, attention_layers: int,
                 train: bool) -> tuple[GeneratorOutput, torch.Tensor | None]:
        b, _, height, width = images.shape
        k = self.num_classes
        visual = self.visual
        blocks = visual.transformer.resblocks
        depth = len(blocks)
        if not 0 <= attention_layers <= depth:
            raise ValueError(f"attention_layers must be in 0..{depth}, got {attention_layers}")
        x, padded = self._clip_input(images)
        with torch.no_grad():  # nothing before the last block depends on the prompts
            tokens, (gh, gw) = embed(visual, x)
            x_last, attns = run_blocks(visual, tokens, depth - 1,
                                       attention_from=depth - attention_layers if attention_layers else None)
        last = blocks[-1]
        with torch.set_grad_enabled(train):
            text = self.text_features()  # (C, E)
            with torch.no_grad():
                out_img, attn_last = block_forward(last, x_last)
                feat = F.normalize(patch_feature(visual, out_img).float(), dim=-1)
            logits = self.logit_scale * feat @ text.t()  # (B, C)

        present = (torch.ones(b, k, dtype=torch.bool, device=x.device) if labels is None
                   else (labels > 0.5).to(x.device))
        allowed = torch.cat([present, present.new_ones(b, self.num_background)], dim=1)  # softmax support
        n, c = present.nonzero(as_tuple=True)
        raws = [self._pair_gradcam(last, x_last, text, allowed, n[i:i + self.pair_chunk], c[i:i + self.pair_chunk],
                                   train) for i in range(0, n.numel(), self.pair_chunk)]
        raw_full = torch.zeros(b, k, gh, gw, dtype=torch.float32, device=x.device)
        if raws:
            # float32 maps whatever precision the Grad-CAM ran in (bf16 autocast hands back bf16)
            raw_full = raw_full.index_put((n, c), torch.cat(raws).reshape(-1, gh, gw).float())
        cam = F.relu(raw_full)
        out = GeneratorOutput(cam=cam, logits={"clip": logits[:, :k]}, maps={"gradcam": cam, "raw": raw_full},
                              input_size=(height, width), padded_size=padded)
        attention = None
        if attention_layers:
            attention = torch.stack([a.float().mean(1) for a in [*attns, attn_last]]).mean(0).detach()
        return out, attention

    def _pair_gradcam(self, block: nn.Module, x_last: torch.Tensor, text: torch.Tensor, allowed: torch.Tensor,
                      n: torch.Tensor, c: torch.Tensor, train: bool) -> torch.Tensor:
        """Raw Grad-CAM (before the ReLU) of pairs (image n_i, class c_i). Shape: -> (P, h·w)."""
        visual = self.visual
        with torch.enable_grad():
            rows = x_last[n]  # (P, N, D): the last block's input, one row per pair
            a = block.ln_1(rows).detach().requires_grad_(True)  # the Grad-CAM activation A
            out, _ = block_forward(block, rows, ln1=a)
            feat = F.normalize(patch_feature(visual, out).float(), dim=-1)
            logits = (self.logit_scale * feat @ text.t()).masked_fill(~allowed[n], float("-inf"))
            prob = logits.softmax(dim=-1).gather(1, c[:, None]).squeeze(1)
            (grad,) = torch.autograd.grad(prob.sum(), a, create_graph=train)
        weights = grad[:, 1:].float().mean(dim=1)  # (P, D): channel weights = mean gradient over the patches
        raw = torch.einsum("pnd,pd->pn", a[:, 1:].detach().float(), weights)
        return raw if train else raw.detach()


# --------------------------------------------------------------------------------------------------- builders
def make_prompts(kind: str, clip: nn.Module, names: tuple[str, ...], cc) -> nn.Module:
    """The prompt set of a `ClipCamConfig` (`cc`) for `names` (foreground, then background)."""
    if kind == "segmentation":  # FMA-WSSS: one context per class, class name first
        return CoOpPrompts(clip, names, context_length=cc.context_length, shared=False, class_position="front",
                           init_std=cc.init_std, init_text=cc.init_text)
    if kind == "classification":  # FMA-WSSS: one shared context, class name last
        return CoOpPrompts(clip, names, context_length=cc.context_length, shared=True, class_position="end",
                           init_std=cc.init_std, init_text=cc.init_text)
    if kind == "handcrafted":
        return HandcraftedPrompts(clip, names, cc.templates)
    raise ConfigError(f"unknown generator.clip_cam.prompts {kind!r}; valid: {', '.join(PROMPT_KINDS)}")


def build_clip_gradcam(cfg, num_classes: int, quiet: bool = False,
                       context: GeneratorContext | None = None) -> ClipGradCAM:
    """A `ClipGradCAM` from a `GeneratorConfig` (section ``clip_cam``) and a context holding the frozen CLIP and the
    class / background names.

    Raises:
        ConfigError: no CLIP or no class names in the context, or a class-count mismatch.
    """
    context = context or GeneratorContext()
    if context.clip is None:
        raise ConfigError("generator clip_gradcam runs on the experiment's frozen CLIP: build it with a "
                          "GeneratorContext(clip=...) (semples.models.mask_generators.generator_context)")
    if context.class_names is None:
        raise ConfigError("generator clip_gradcam needs the class names CLIP reads: pass them in the "
                          "GeneratorContext (semples.models.mask_generators.generator_context)")
    fg = tuple(context.class_names)
    if len(fg) != num_classes:
        raise ConfigError(f"generator clip_gradcam got {len(fg)} class names for {num_classes} classes")
    names = fg + tuple(context.background_names or ())
    cc = cfg.clip_cam
    prompts = make_prompts(cc.prompts, context.clip, names, cc)
    return ClipGradCAM(context.clip, prompts, num_classes, logit_scale=cc.logit_scale, input_norm=cc.input_norm)


def clip_gradcam_for_checkpoint(gen_cfg, state: dict, num_classes: int, context: GeneratorContext | None,
                                ckpt: dict) -> tuple[object, GeneratorContext]:
    """(config, context) that rebuild a saved CLIP Grad-CAM generator exactly from its `state`.

    The prompt kind and context length come from the saved tensors, the token ids (names included) are loaded
    from the state afterwards, so placeholder names of the right counts build the modules. The CLIP is the one in
    `context`; without one, the CLIP named in the checkpoint's config is loaded (with a warning: random-weight
    CLIPs cannot be rebuilt).
    """
    context = context or GeneratorContext()
    cc = gen_cfg.clip_cam
    ctx = state.get("prompts.context")
    if ctx is None:
        kind = "handcrafted"
        total = num_classes + len(context.background_names or ())
    else:
        total = int(state["prompts.token_ids"].shape[0])
        kind = "classification" if ctx.shape[0] == 1 and total > 1 else "segmentation"
        cc = dataclasses.replace(cc, context_length=int(ctx.shape[1]), init_text=None)
    gen_cfg = dataclasses.replace(gen_cfg, name="clip_gradcam", clip_cam=dataclasses.replace(cc, prompts=kind))
    clip = context.clip
    if clip is None:
        from types import SimpleNamespace

        from semples.models.clip import load_clip

        saved = ckpt.get("config", {}).get("clip")
        if not saved:
            raise ConfigError(f"{ckpt.get('path')}: a CLIP Grad-CAM checkpoint needs the frozen CLIP it ran on; pass "
                              "it in the GeneratorContext")
        log.info("loading the checkpoint's CLIP %s (%s) for its CLIP Grad-CAM generator", saved.get("arch"),
                 saved.get("pretrained"))
        clip = load_clip(SimpleNamespace(**{"block_type": "custom", "cache_dir": None, **saved}))
    if kind == "handcrafted":
        return gen_cfg, dataclasses.replace(context, clip=clip)
    if total < num_classes:
        raise ConfigError(f"{ckpt.get('path')}: CLIP Grad-CAM prompts for {total} names cannot cover {num_classes} "
                          "classes")
    placeholders = GeneratorContext(class_names=("x",) * num_classes, background_names=("x",) * (total - num_classes),
                                    clip=clip)
    return gen_cfg, placeholders


__all__ = ["PROMPT_KINDS", "ClipGradCAM", "build_clip_gradcam", "clip_gradcam_for_checkpoint", "make_prompts"]
