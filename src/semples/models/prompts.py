"""Text prompts of the CLIP Grad-CAM generator (FMA-WSSS, METHOD.md §2): CoOp-style learnable contexts and
hand-written templates, plus the background class names they cover.

`CoOpPrompts` (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022): M learnable context
vectors stand next to the tokens of a name, and the sequence runs through the frozen text tower
(`FrozenCLIP.encode_embeddings`, the same text path `PromptTextEncoder` uses), read at the EOT position:

    class_position "end"   (FMA classification prompts):  [SOT] c_1 … c_M  name_i . [EOT] pad…
    class_position "front" (FMA segmentation prompts):     [SOT] name_i  c_1 … c_M . [EOT] pad…

with one context shared by all prompts (classification) or one context per prompt (segmentation). The token ids
of every sequence, the context slots and the EOT positions are *persistent buffers*: a checkpoint carries the
exact prompts it was trained with (names included), and a generator rebuilt from it needs no class list.

`HandcraftedPrompts`: fixed text features of ``template.format(name)``, averaged over templates (CLIP-ES's
training-free baseline uses the single template "a clean origami {}.").

Background names: FMA-WSSS adds background classes to the foreground ones (20 + 25 on VOC). `background_names_for`
picks the list the dataset's registry entry names (`semples.data.DATASETS`): the 25 words CLIP-ES uses for VOC
(and folders of images), the VOC list without "keyboard" (a COCO class — our choice) for COCO, and for the
synthetic world its own background types.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from semples.models.clip import FrozenCLIP

log = logging.getLogger(__name__)

CLIP_ES_TEMPLATES: tuple[str, ...] = ("a clean origami {}.",)


def background_names_for(data_cfg, override: Sequence[str] = ()) -> tuple[str, ...]:
    """Background class names for a dataset config (a `DataConfig`): `override` when non-empty, else the list the
    dataset's registry entry names (`semples.data.DATASETS`: VOC's 25 words for VOC and folders, COCO's, the
    synthetic world's background types)."""
    if override:
        return tuple(override)
    from semples.data import dataset_spec

    return tuple(dataset_spec(data_cfg.dataset).background_names(data_cfg))


class CoOpPrompts(nn.Module):
    """CoOp-style prompts for C names (see the module docstring for the token layout).

    Parameters: `context` (1, M, D) when shared, else (C, M, D). The frozen CLIP is held aside (not a submodule).

    Args:
        clip: the frozen CLIP whose text tower reads the prompts.
        names: the C names (foreground classes, then background classes).
        context_length: M, learnable vectors per prompt (FMA-WSSS: 16).
        shared: one context for all prompts (classification) or one per prompt (segmentation).
        class_position: "end" (name after the context) or "front" (name before it).
        init_std: std of the normal initialisation N(0, init_std) (CoOp: 0.02).
        init_text: optional phrase whose token embeddings initialise the first context vectors (e.g. "a photo of
            a"); the rest stay random.
        suffix: text after name and context (default ".").
    """

    def __init__(self, clip: FrozenCLIP, names: Sequence[str], *, context_length: int = 16, shared: bool = True,
                 class_position: str = "end", init_std: float = 0.02, init_text: str | None = None,
                 suffix: str = ".") -> None:
        super().__init__()
        if class_position not in ("end", "front"):
            raise ValueError(f"class_position must be 'end' or 'front', got {class_position!r}")
        if not names:
            raise ValueError("CoOpPrompts needs at least one name")
        object.__setattr__(self, "clip", clip)  # held aside: never a submodule, never in state_dict
        self.names = list(names)
        self.class_position = class_position
        t, m = clip.context_length, context_length
        suffix_ids = clip.token_ids(suffix) if suffix.strip() else []
        ids = torch.zeros(len(names), t, dtype=torch.long)
        slots = torch.zeros(len(names), t, dtype=torch.bool)
        eot = torch.zeros(len(names), dtype=torch.long)
        for i, name in enumerate(names):
            name_ids = clip.token_ids(name)
            body = ([None] * m + name_ids) if class_position == "end" else (name_ids + [None] * m)
            seq = [clip.sot_id] + body + suffix_ids + [clip.eot_id]
            if len(seq) > t:
                raise ValueError(f"prompt for {name!r} needs {len(seq)} positions with {m} context vectors; the "
                                 f"text tower has {t}")
            for j, tok in enumerate(seq):
                if tok is None:
                    slots[i, j] = True
                else:
                    ids[i, j] = tok
            eot[i] = len(seq) - 1
        self.register_buffer("token_ids", ids)
        self.register_buffer("context_slots", slots)
        self.register_buffer("eot_index", eot)
        context = torch.empty(1 if shared else len(names), m, clip.token_width)
        nn.init.normal_(context, 0.0, init_std)
        if init_text:
            init_ids = clip.token_ids(init_text)[:m]
            with torch.no_grad():
                emb = clip.embed_tokens(torch.tensor([init_ids])).float()[0].cpu()
            context[:, : len(init_ids)] = emb
        self.context = nn.Parameter(context)
        # positions the text tower runs (up to the last EOT of all prompts, so a prompt's feature does not depend
        # on which others share its batch); a Python int, read from the buffer again when a state_dict is loaded
        self.sequence_length = int(eot.max()) + 1
        self.register_load_state_dict_post_hook(_refresh_sequence_length)

    @property
    def num_prompts(self) -> int:
        return self.token_ids.shape[0]

    @property
    def shared(self) -> bool:
        return self.context.shape[0] == 1 and self.num_prompts > 1

    @property
    def context_length(self) -> int:
        return self.context.shape[1]

    def holds_name(self, index: int, name: str) -> bool:
        """Whether prompt `index` contains the tokens of `name` (a check after loading token ids from a checkpoint)."""
        want = self.clip.token_ids(name)
        row = [int(t) for t, slot in zip(self.token_ids[index].tolist(), self.context_slots[index].tolist())
               if not slot]
        return any(row[i:i + len(want)] == want for i in range(len(row) - len(want) + 1))

    def sequences(self, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token-embedding sequences with the context vectors in their slots, and the EOT positions.

        Returns (embeddings (N, T, D), eot_index (N,)) for prompts `indices` (all C when None).
        """
        ids, slots, eot = self.token_ids, self.context_slots, self.eot_index
        if indices is not None:
            ids, slots, eot = ids[indices], slots[indices], eot[indices]
        with torch.no_grad():
            emb = self.clip.embed_tokens(ids)
        n = ids.shape[0]
        if self.context.shape[0] == 1:
            ctx = self.context.expand(n, -1, -1)
        else:
            ctx = self.context if indices is None else self.context[indices]
        rows, cols = slots.nonzero(as_tuple=True)  # row-major: prompt by prompt, slot by slot
        emb = emb.index_put((rows, cols), ctx.reshape(-1, ctx.shape[-1]).to(emb.dtype))
        return emb, eot

    def forward(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Text features (N, embed_dim), not normalised, of prompts `indices` (all C when None)."""
        emb, eot = self.sequences(indices)
        return self.clip.encode_embeddings(emb, eot, length=self.sequence_length)


def _refresh_sequence_length(module: CoOpPrompts, incompatible_keys) -> None:
    module.sequence_length = int(module.eot_index.max()) + 1


class HandcraftedPrompts(nn.Module):
    """Fixed text features of hand-written templates: mean over templates of the L2-normalised features of
    ``template.format(name)`` (no parameters; the features are recomputed from CLIP, not checkpointed).

    Args:
        clip: the frozen CLIP.
        names: the C names.
        templates: sentences with one ``{}`` each (CLIP-ES: "a clean origami {}.").
    """

    def __init__(self, clip: FrozenCLIP, names: Sequence[str], templates: Sequence[str] = CLIP_ES_TEMPLATES) -> None:
        super().__init__()
        if not templates or any(t.count("{}") != 1 for t in templates):
            raise ValueError(f"templates must be sentences with exactly one {{}}, got {templates!r}")
        object.__setattr__(self, "clip", clip)
        self.names = list(names)
        self.templates = tuple(templates)
        feats = torch.stack([F.normalize(clip.class_text_features(list(names), t), dim=-1) for t in templates])
        self.register_buffer("features", feats.mean(0), persistent=False)

    @property
    def num_prompts(self) -> int:
        return self.features.shape[0]

    def forward(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Text features (N, embed_dim) of prompts `indices` (all C when None)."""
        return self.features if indices is None else self.features[indices]


__all__ = ["CLIP_ES_TEMPLATES", "CoOpPrompts", "HandcraftedPrompts",
           "background_names_for"]
