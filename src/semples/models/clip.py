"""Frozen CLIP on open_clip, and the text path that learnable prompts run through.

`FrozenCLIP` wraps an open_clip model so that it can never train: parameters have requires_grad False, the
module stays in eval mode whatever `.train()` is called with, and it is not registered as a child of any
trainable module (stages hold it aside), so it stays out of optimisers, DDP and checkpoints. Gradients still
flow to its *inputs*: masks multiply images before `encode_image`, prompt vectors enter `encode_embeddings`.

`load_clip(cfg)` builds it from an open_clip name + pretrained tag (``"ViT-B-32"`` + ``"openai"``), a local
checkpoint file, ``local-dir:DIR`` (open_clip_config.json + weights), or a model-config JSON with random weights
(``pretrained: none``; tests only). Nothing is downloaded unless a pretrained tag asks for it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from semples.errors import WeightsError
from semples.utils.checkpoint_io import sha256_file

log = logging.getLogger(__name__)

NO_WEIGHTS = ("", "none", "random", "null")
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "clip"  # small architectures shipped as JSON


class FrozenCLIP(nn.Module):
    """An open_clip model that never trains. Images go in CLIP-normalised at `image_size`.

    Attributes:
        model: the open_clip model (CLIP or CustomTextCLIP with an open_clip text transformer).
        tokenizer: the open_clip tokenizer that matches the text tower.
        image_size: (H, W) the image tower expects.
        embed_dim: width of the joint embedding space.
        token_width: width of the text tower's token embeddings (D of the prompt vectors).
        context_length: number of text positions.
        source: where the weights came from (arch, pretrained, file, sha256) — what checkpoints record.
    """

    def __init__(self, model: nn.Module, tokenizer, source: dict) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self._text = model.text if hasattr(model, "text") else model
        for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"):
            if not hasattr(self._text, attr):
                raise WeightsError(f"CLIP text tower {type(self._text).__name__} has no '{attr}': only open_clip "
                                   "text transformers can run learnable prompts")
        if getattr(self._text, "cls_emb", None) is not None:
            raise WeightsError("CLIP text towers with a CLS embedding (CoCa-style) are not supported")
        size = model.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.embed_dim = int(self._text.text_projection.shape[1] if isinstance(self._text.text_projection, torch.Tensor)
                             else self._text.text_projection.out_features)
        self.token_width = int(self._text.token_embedding.embedding_dim)
        self.context_length = int(self._text.positional_embedding.shape[0])
        self.requires_grad_(False)
        super().train(False)
        self._text_cache: dict[tuple, torch.Tensor] = {}
        self.causal_text = _is_causal_mask(self._text.attn_mask, self.context_length)
        self.class_token_cut = _class_token_pooled(model.visual)

    def train(self, mode: bool = True) -> FrozenCLIP:
        """Always eval: CLIP is frozen (dropout and similar stay off)."""
        return super().train(False)

    def _apply(self, fn, recurse: bool = True):
        self._text_cache.clear()  # cached features live on the old device/dtype
        return super()._apply(fn, recurse)

    # ----------------------------------------------------------------------------------------------- image
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image features (not normalised); differentiable w.r.t. `images`.

        Shape: images (N, 3, H, W), CLIP-normalised; resized bilinearly to `image_size` if different.
        Returns (N, embed_dim).
        """
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        visual = self.model.visual
        if not self.class_token_cut or getattr(visual, "_compiled_call_impl", None) is not None:
            return self.model.encode_image(images)
        # the feature is the class token's: the last block runs for that token only (its keys and values still
        # come from every token), ~10/12 of the last block's work, exact (tests/models/test_clip_class_token_cut.py)
        x = visual._embeds(images)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        pooled, _ = visual._pool(_class_token_block(visual.transformer.resblocks[-1], x))
        return pooled @ visual.proj if visual.proj is not None else pooled

    # ------------------------------------------------------------------------------------------------ text
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(N, context_length) int64 token ids."""
        return self.tokenizer(texts)

    def token_ids(self, text: str) -> list[int]:
        """Ids of `text` without start/end tokens."""
        ids = self.tokenize([text])[0]
        eot = int(ids.argmax())
        return [int(t) for t in ids[1:eot]]

    @property
    def sot_id(self) -> int:
        return int(self.tokenize([""])[0, 0])

    @property
    def eot_id(self) -> int:
        ids = self.tokenize([""])[0]
        return int(ids[int(ids.argmax())])

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (N, T, token_width) of ids (N, T)."""
        return self._text.token_embedding(token_ids.to(self._text.token_embedding.weight.device))

    def encode_embeddings(self, embeddings: torch.Tensor, eot_index: torch.Tensor, length: int | None = None
                          ) -> torch.Tensor:
        """Runs token embeddings through the text transformer; the feature is read at `eot_index`.

        This is open_clip's `encode_text` from the token-embedding step on, so learnable prompt vectors can
        stand where token embeddings would. Under the causal mask of CLIP's text tower no position sees a later
        one, so the sequences are run only up to the last EOT (``length`` positions): the EOT features are those
        of the full-length pass (the padding after EOT is never read), at a fraction of the cost. Towers without a
        causal mask always run the full length.

        Shape: embeddings (N, T, token_width), T <= context_length; eot_index (N,) int. Returns (N, embed_dim).

        Args:
            length: positions to run, > max(eot_index); default ``max(eot_index) + 1`` (reading it syncs the
                device: callers that know it pass it). Ignored by non-causal towers.
        """
        text = self._text
        cast_dtype = text.transformer.get_cast_dtype()
        mask = text.attn_mask
        if self.causal_text:
            t = int(eot_index.max()) + 1 if length is None else int(length)
            embeddings, mask = embeddings[:, :t], mask[:t, :t]
        t = embeddings.shape[1]
        x = embeddings.to(cast_dtype) + text.positional_embedding[:t].to(cast_dtype)
        x = text.transformer(x, attn_mask=mask)
        x = text.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index.to(x.device)]
        proj = text.text_projection
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Features (N, embed_dim) of plain sentences, through open_clip's own `encode_text`."""
        device = self._text.token_embedding.weight.device
        return self.model.encode_text(self.tokenize(texts).to(device))

    @torch.no_grad()
    def class_text_features(self, names: list[str] | tuple[str, ...], template: str) -> torch.Tensor:
        """Features (K, embed_dim) of ``template.format(name)`` for each class, computed once and cached."""
        key = (tuple(names), template)
        if key not in self._text_cache:
            self._text_cache[key] = self.encode_text([template.format(n) for n in names]).float()
        return self._text_cache[key]


def _class_token_pooled(visual: nn.Module) -> bool:
    """Whether an image tower's feature is its class token after the last block and nothing else (open_clip's
    ViTs with ``pool_type='tok'``, SDPA blocks, no attention pooler): then the last block can run for that token
    alone (`_class_token_block`)."""
    from open_clip.transformer import Attention, CustomResidualAttentionBlock, VisionTransformer

    if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None or visual.pool_type != "tok":
        return False
    if visual.output_tokens or not visual.transformer.batch_first or visual.transformer.grad_checkpointing:
        return False
    last = visual.transformer.resblocks[-1]
    return (isinstance(last, CustomResidualAttentionBlock) and isinstance(last.attn, Attention)
            and last.attn.logit_scale is None and last.attn.head_scale is None)


def _class_token_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An open_clip `CustomResidualAttentionBlock` evaluated at the first token only: queries, attention output,
    projection and MLP of that token; keys and values of all. Shape: x (N, L, C) -> (N, 1, C)."""
    attn = block.attn
    h = block.ln_1(x)
    n, length, c = h.shape
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q = F.linear(h[:, :1], w[:c], None if b is None else b[:c])
    k, v = F.linear(h, w[c:], None if b is None else b[c:]).chunk(2, dim=-1)
    heads = attn.num_heads
    q = attn.ln_q(q.reshape(n, 1, heads, -1).transpose(1, 2))
    k = attn.ln_k(k.reshape(n, length, heads, -1).transpose(1, 2))
    v = v.reshape(n, length, heads, -1).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, 1, c)
    out = attn.out_drop(attn.out_proj(attn.ln_inner(out)))
    y = x[:, :1] + block.ls_1(block.ln_attn(out))
    return y + block.ls_2(block.mlp(block.ln_2(y)))


def _is_causal_mask(mask: torch.Tensor | None, length: int) -> bool:
    """Whether `mask` is the additive causal mask of `length` positions (-inf above the diagonal, 0 elsewhere)."""
    if mask is None or tuple(mask.shape) != (length, length) or not mask.is_floating_point():
        return False
    above = torch.ones(length, length, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.isneginf(mask[above]).all()) and bool((mask[~above] == 0).all())


def _builtin_or_json_config(arch: str) -> tuple[dict, str | None]:
    """(model_cfg, local weights file or None) for an open_clip name, a JSON file, or local-dir:DIR.

    A shipped name (a folder ``ASSET_DIR/<arch>`` with open_clip_config.json, e.g. ``synth-clip``) is local-dir.
    """
    import open_clip

    if open_clip.get_model_config(arch) is None and (ASSET_DIR / arch / "open_clip_config.json").is_file():
        arch = f"local-dir:{ASSET_DIR / arch}"
    if arch.startswith("local-dir:"):
        folder = Path(arch[len("local-dir:"):])
        cfg_file = folder / "open_clip_config.json"
        if not cfg_file.is_file():
            raise WeightsError(f"{cfg_file}: missing (a local-dir CLIP needs open_clip_config.json + weights)")
        model_cfg = json.loads(cfg_file.read_text())["model_cfg"]
        weights = None
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
            if (folder / name).is_file():
                weights = str(folder / name)
                break
        if weights is None:
            raise WeightsError(f"{folder}: no open_clip_model.safetensors or open_clip_pytorch_model.bin in it")
        return model_cfg, weights
    if arch.endswith(".json"):
        path = Path(arch)
        if not path.is_file():
            raise WeightsError(f"{path}: CLIP model-config file not found")
        data = json.loads(path.read_text())
        return (data["model_cfg"] if "model_cfg" in data else data), None
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None and (ASSET_DIR / f"{arch}.json").is_file():
        return json.loads((ASSET_DIR / f"{arch}.json").read_text()), None
    if model_cfg is None:
        raise WeightsError(f"unknown open_clip architecture {arch!r}; pass an open_clip model name "
                           "(e.g. ViT-B-32), a model-config .json path, or local-dir:DIR")
    return copy.deepcopy(model_cfg), None


def load_clip(cfg, device: str | torch.device = "cpu") -> FrozenCLIP:
    """Builds the frozen CLIP described by a `ClipConfig`.

    Raises:
        WeightsError: unknown architecture, or weights that cannot be found or downloaded (the message names
            what to pass instead).
    """
    import open_clip

    model_cfg, weights_file = _builtin_or_json_config(cfg.arch)
    pretrained = (cfg.pretrained or "").strip()
    tag_cfg = None
    if weights_file is None and pretrained.lower() not in NO_WEIGHTS:
        if os.path.isfile(pretrained):
            weights_file = pretrained
        else:
            name = cfg.arch.replace("/", "-")
            tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) or None
            if not tag_cfg:
                tags = open_clip.list_pretrained_tags_by_model(name)
                raise WeightsError(f"CLIP weights {pretrained!r} are neither a file nor a pretrained tag of {name} "
                                   f"(tags: {', '.join(tags) or 'none'}); pass clip.pretrained=/path/to/checkpoint")
            try:
                weights_file = open_clip.download_pretrained(tag_cfg, cache_dir=cfg.cache_dir)
            except Exception as e:  # network errors come in many types
                raise WeightsError(
                    f"could not get CLIP weights '{name}' / '{pretrained}' ({type(e).__name__}); offline machines "
                    f"must pass a local file: clip.pretrained=/path/to/{name}.pt (or clip.arch=local-dir:DIR), "
                    "or clip.pretrained=none for random weights (tests only)") from e
            if not weights_file:
                raise WeightsError(f"open_clip returned no file for {name} / {pretrained}; "
                                   f"pass clip.pretrained=/path/to/{name}.pt")
            if tag_cfg.get("quick_gelu", False):
                model_cfg["quick_gelu"] = True  # the OpenAI weights were trained with QuickGELU
    for tower in ("vision_cfg", "text_cfg"):
        if cfg.block_type and isinstance(model_cfg.get(tower), dict) and "hf_model_name" not in model_cfg[tower] \
                and "timm_model_name" not in model_cfg[tower]:
            model_cfg[tower]["block_type"] = cfg.block_type
    model_cfg.pop("custom_text", None)
    model_class = open_clip.CustomTextCLIP if "hf_model_name" in model_cfg.get("text_cfg", {}) else open_clip.CLIP
    model = model_class(**model_cfg)
    sha = None
    if weights_file is not None:
        try:
            open_clip.load_checkpoint(model, weights_file, strict=True, weights_only=True)
        except Exception as e:
            raise WeightsError(f"{weights_file}: cannot load as {cfg.arch} CLIP weights ({e})") from e
        sha = sha256_file(weights_file)
        log.info("CLIP %s loaded from %s", cfg.arch, weights_file)
    else:
        log.warning("CLIP %s has RANDOM weights (clip.pretrained=%r): fine for tests, meaningless for results",
                    cfg.arch, cfg.pretrained)
    if getattr(cfg, "compile", None):
        from semples.models.compile import compile_clip

        compiled = compile_clip(model, cfg.compile)
        log.info("CLIP %s: torch.compile (%s) of %s", cfg.arch, cfg.compile, ", ".join(compiled))
    tokenizer = _tokenizer_for(cfg.arch, model_cfg)
    source = {"arch": cfg.arch, "pretrained": cfg.pretrained, "file": str(weights_file) if weights_file else None,
              "sha256": sha, "block_type": cfg.block_type}
    return FrozenCLIP(model, tokenizer, source).to(device)


def _tokenizer_for(arch: str | None, model_cfg: dict):
    import open_clip

    context_length = model_cfg.get("text_cfg", {}).get("context_length", 77)
    if arch and not arch.endswith(".json") and not arch.startswith("local-dir:") \
            and open_clip.get_model_config(arch) is not None:
        return open_clip.get_tokenizer(arch)
    hf_name = model_cfg.get("text_cfg", {}).get("hf_tokenizer_name")
    if hf_name:
        return open_clip.HFTokenizer(hf_name, context_length=context_length)
    return open_clip.SimpleTokenizer(context_length=context_length)


class PromptTextEncoder(nn.Module):
    """Class-specific learnable prompt vectors run through the frozen text tower (METHOD.md §1.2).

    For template ``"a photo of {}."`` the sequence of class k is
    ``[SOT] a photo of p_k,1 … p_k,L . [EOT] [pad…]``, read at the EOT position (5 + L), then ln_final and the
    text projection. ``"{}"`` gives bare prompts ``[SOT] p_k [EOT]``.

    Only `prompts` (K, L, D) is a parameter; the CLIP it runs through is held aside (not a submodule).

    Args:
        clip: the frozen CLIP.
        num_classes: K.
        length: L, vectors per class.
        template: text around the prompt vectors, with one ``{}``.
        init: "uniform" (U[init_low, init_high), reference) or "normal" (N(0, init_std)).
    """

    def __init__(self, clip: FrozenCLIP, num_classes: int, length: int = 30, template: str = "a photo of {}.",
                 init: str = "uniform", init_low: float = 0.0, init_high: float = 1.0,
                 init_std: float = 0.02) -> None:
        super().__init__()
        if template.count("{}") != 1:
            raise ValueError(f"prompt template must contain exactly one {{}}, got {template!r}")
        object.__setattr__(self, "clip", clip)  # held aside: never a submodule, never in state_dict
        before, after = template.split("{}")
        before_ids = clip.token_ids(before.strip()) if before.strip() else []
        after_ids = clip.token_ids(after.strip()) if after.strip() else []
        total = 1 + len(before_ids) + length + len(after_ids) + 1
        if total > clip.context_length:
            raise ValueError(f"prompt of length {length} in template {template!r} needs {total} positions; "
                             f"the text tower has {clip.context_length}")
        self.length = length
        self.template = template
        self.prefix_len = 1 + len(before_ids)
        self.eot_position = total - 1
        pad = clip.context_length - (len(after_ids) + 1) - (self.prefix_len + length)
        prefix = torch.tensor([clip.sot_id] + before_ids)
        suffix = torch.tensor(after_ids + [clip.eot_id] + [0] * pad)
        with torch.no_grad():
            self.register_buffer("prefix_embedding", clip.embed_tokens(prefix[None])[0].float(), persistent=False)
            self.register_buffer("suffix_embedding", clip.embed_tokens(suffix[None])[0].float(), persistent=False)
        prompts = torch.empty(num_classes, length, clip.token_width)
        if init == "uniform":
            nn.init.uniform_(prompts, init_low, init_high)
        elif init == "normal":
            nn.init.normal_(prompts, 0.0, init_std)
        else:
            raise ValueError(f"unknown prompt init {init!r}; valid: uniform, normal")
        self.prompts = nn.Parameter(prompts)

    @property
    def num_classes(self) -> int:
        return self.prompts.shape[0]

    def sequences(self, vectors: torch.Tensor) -> torch.Tensor:
        """Full token-embedding sequences (N, context_length, D) around prompt vectors (N, L, D)."""
        n = vectors.shape[0]
        return torch.cat([self.prefix_embedding.expand(n, -1, -1).to(vectors.dtype), vectors,
                          self.suffix_embedding.expand(n, -1, -1).to(vectors.dtype)], dim=1)

    def encode_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """Text features (N, embed_dim) of arbitrary prompt vectors (N, L, D) in this template."""
        eot = torch.full((vectors.shape[0],), self.eot_position, dtype=torch.long, device=vectors.device)
        return self.clip.encode_embeddings(self.sequences(vectors), eot, length=self.eot_position + 1)

    def forward(self, class_indices: torch.Tensor | None = None) -> torch.Tensor:
        """Features u^b (N, embed_dim) of the prompts of `class_indices` (N,) — all K classes when None."""
        vectors = self.prompts if class_indices is None else self.prompts[class_indices]
        return self.encode_vectors(vectors)
