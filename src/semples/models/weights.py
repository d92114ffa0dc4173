"""Backbone weights from a file a user hands in, loaded strictly, whatever wrapper and key prefix the file has.

timm builds the backbones here with ``num_classes=0`` (the heads are ours), and for that case timm loads a
``pretrained_cfg_overlay={"file": ...}`` file non-strictly: a file whose keys match nothing leaves random weights
without a word. Every explicit backbone file (``generator.backbone_checkpoint``, ``segment.model.backbone_checkpoint``)
goes through `load_backbone_weights` instead:

1. the file is read without running code (``torch.load(weights_only=True)``, or safetensors);
2. the usual containers are unwrapped (``{"state_dict": ...}``, ``{"model": ...}``, ``{"model_ema": ...}``,
   ``{"module": ...}``, ``{"net": ...}``; timm's ``load_state_dict`` order: EMA weights first);
3. the key prefix that makes the most tensor names fit (``module.``, ``model.``, ``backbone.``, ``encoder.``,
   ``module.visual.trunk.`` ... any leading dotted prefix) is stripped — keys outside it belong to other parts of a
   whole-model checkpoint and are ignored (reported);
4. the model family's timm checkpoint filter runs (position-embedding resampling, layout conversions), as timm's
   own pretrained loading would;
5. the classifier heads the caller replaces (the family's ``pretrained_cfg["classifier"]``, ``head``, ``fc`` ...)
   are dropped;
6. the load is **refused** (`WeightsError`) when a tensor of the model's has another shape in the file, when less
   than ``min_fraction`` of the model's parameters (by element count) come from the file, or when less than
   ``min_fraction`` of the file's tensors are used (a file of another architecture whose first layers happen to
   fit); otherwise the missing and unexpected keys are logged and returned in the load record, which the run
   manifest keeps next to the file's path and sha256.

The default bound, 0.99, tolerates what is legitimately absent from a backbone file (a norm or a token that the
model adds) and refuses a missing block (one of 12 ViT blocks is 8% of the parameters).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from semples.errors import WeightsError

log = logging.getLogger(__name__)

DEFAULT_MIN_FRACTION = 0.99
# containers a training script wraps its weights in, in the order timm's load_state_dict prefers them
WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module", "net", "network", "weights")
# classifier heads dropped from a file (besides the family's own pretrained_cfg["classifier"]) when the model has
# no tensor of that name: the parts the caller replaces with its own head
HEAD_NAMES = ("head", "head_dist", "fc", "classifier", "last_linear", "heads", "pre_logits")


def read_state_dict(path: str | Path, config_key: str = "backbone_checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from the usual containers (never runs code from the file).

    Raises:
        WeightsError: missing, unreadable, or holding no tensors (the message names the file and `config_key`).
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: {config_key} file not found" if not p.exists() else
                           f"{p}: {config_key} is not a file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zips, a file that is not a checkpoint at all
        raise WeightsError(f"{p}: cannot read as weights ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                           f"{config_key} takes a PyTorch state dict (.pth/.pt/.bin) or a .safetensors file"
                           ) from None
    state = unwrap_state_dict(obj)
    if not state:
        raise WeightsError(f"{p}: holds no tensors (keys: {_preview(obj.keys() if isinstance(obj, dict) else [])}); "
                           f"{config_key} takes a state dict of the backbone")
    return state


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint: the first `WRAPPER_KEYS` entry that is a mapping (nested ones too),
    else `obj` itself; entries that are not tensors are left out."""
    for _ in range(4):  # {"model": {"state_dict": ...}} and the like
        if not isinstance(obj, dict):
            return {}
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict) and obj[k]), None)
        if inner is None:
            return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        obj = inner
    return {}


def _prefixes(keys: Iterable[str], depth: int, min_share: float) -> list[str]:
    """"" plus every leading dotted prefix (up to `depth` parts) shared by at least `min_share` of `keys`."""
    keys = list(keys)
    counts: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        for d in range(1, min(depth, len(parts) - 1) + 1):
            p = ".".join(parts[:d]) + "."
            counts[p] = counts.get(p, 0) + 1
    need = max(1, int(min_share * len(keys)))
    return ["", *sorted((p for p, c in counts.items() if c >= need), key=len)]


def match_prefix(file_keys: Iterable[str], model_keys: Iterable[str]) -> tuple[str, str]:
    """(prefix to strip from the file's keys, prefix to add for the model's) that makes the most names fit.

    Ties go to the shortest prefixes (no prefix at all when nothing fits better).
    """
    file_keys, model_keys = list(file_keys), set(model_keys)
    best, best_count = ("", ""), -1
    for fp in _prefixes(file_keys, depth=3, min_share=0.1):
        stripped = [k[len(fp):] for k in file_keys if k.startswith(fp)]
        for mp in _prefixes(model_keys, depth=1, min_share=0.5):
            count = sum(1 for k in stripped if mp + k in model_keys)
            if count > best_count:
                best, best_count = (fp, mp), count
    return best


def timm_filter_fn(model: nn.Module) -> Callable | None:
    """The ``checkpoint_filter_fn`` of a timm model's family (what timm applies to pretrained weights), if any."""
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    module_name = None
    if arch:
        try:
            from timm.models import _registry

            module_name = _registry._model_to_module.get(_registry.get_arch_name(arch))
        except Exception:
            module_name = None
    candidates = [f"timm.models.{module_name}"] if module_name else []
    candidates.append(type(model).__module__)
    for name in candidates:
        try:
            fn = getattr(importlib.import_module(name), "checkpoint_filter_fn", None)
        except ImportError:
            fn = None
        if callable(fn):
            return fn
    return None


def _head_names(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    family = cfg.get("classifier") or ()
    return (*([family] if isinstance(family, str) else family), *HEAD_NAMES)


def _preview(keys: Iterable, n: int = 4) -> str:
    keys = [str(k) for k in keys]
    return ", ".join(keys[:n]) + (f" … (+{len(keys) - n})" if len(keys) > n else "") if keys else "none"


def _numel(tensors: Iterable[torch.Tensor]) -> int:
    return int(sum(t.numel() for t in tensors))


def load_backbone_weights(model: nn.Module, path: str | Path, *, config_key: str = "backbone_checkpoint",
                          min_fraction: float = DEFAULT_MIN_FRACTION, fresh: tuple[str, ...] = (),
                          unused: tuple[str, ...] = (), filter_fn: Callable | None | str = "timm") -> dict[str, Any]:
    """Loads a backbone weights file into `model` strictly (see the module docstring); returns the load record.

    Args:
        model: the backbone (a timm model built without pretrained weights).
        path: the weights file.
        config_key: the setting that named the file (``generator.backbone_checkpoint`` ...), for messages.
        min_fraction: the least share of the model's parameters that must come from the file, and of the file's
            tensors (heads and tensors outside the matched prefix left out) that must be used.
        fresh: name prefixes of the model's tensors that are meant to start fresh (not counted as missing).
        unused: name prefixes (after the prefix is stripped) of the file's tensors the model leaves out on purpose
            (a feature extractor cut before its last stage: ``("layer4.",)``); not counted as unexpected.
        filter_fn: ``(state_dict, model) -> state_dict`` applied before loading; "timm" (default): the model
            family's timm checkpoint filter; None: none.

    Returns:
        {path, sha256, prefix, loaded, missing, unexpected, ignored, fraction_of_model, fraction_of_file}: what
        loaded, for logs and the run manifest.

    Raises:
        WeightsError: unreadable file, a shape mismatch, or too little of the model or of the file used.
    """
    from semples.utils.checkpoint_io import sha256_file

    p = Path(path)
    state = read_state_dict(p, config_key)
    own = model.state_dict()
    fp, mp = match_prefix(state, own)
    ignored = [k for k in state if not k.startswith(fp)]
    state = {k[len(fp):]: v for k, v in state.items() if k.startswith(fp)}
    note = ""
    fn = timm_filter_fn(model) if filter_fn == "timm" else filter_fn
    if callable(fn):
        try:
            state = dict(fn(dict(state), model))
        except Exception as e:  # a filter that does not know this layout: the checks below judge the raw keys
            note = f"; timm's checkpoint filter failed on it ({type(e).__name__}: {str(e)[:120]})"
    state = {mp + k: v for k, v in state.items()}
    heads = tuple(f"{mp}{h}." for h in _head_names(model))
    heads = (*heads, *(mp + u for u in unused))
    dropped = [k for k in state if k not in own and k.startswith(heads)]
    for k in dropped:
        del state[k]
    mismatched = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        k = mismatched[0]
        raise WeightsError(f"{p}: does not fit the backbone ({config_key}): {k} is {tuple(state[k].shape)} in the "
                           f"file, {tuple(own[k].shape)} in the model"
                           f"{f' (and {len(mismatched) - 1} more tensors)' if len(mismatched) > 1 else ''}; is it "
                           f"the weights of another architecture?{note}")
    counted = {k: v for k, v in own.items() if not k.startswith(fresh)}
    loaded = [k for k in state if k in own]
    missing = [k for k in counted if k not in state]
    unexpected = [k for k in state if k not in own]
    model_total = _numel(v for v in counted.values() if v.is_floating_point()) or 1
    model_loaded = _numel(own[k] for k in loaded if k in counted and own[k].is_floating_point())
    file_total = _numel(v for v in state.values() if v.is_floating_point()) or 1
    file_used = _numel(state[k] for k in loaded if state[k].is_floating_point())
    of_model, of_file = model_loaded / model_total, file_used / file_total
    where = f"prefix {fp!r} stripped" if fp else "no prefix"
    if of_model < min_fraction or of_file < min_fraction:
        what = (f"{of_model:.0%} of the model's parameters would load" if of_model < min_fraction
                else f"only {of_file:.0%} of the file's tensors fit the model")
        raise WeightsError(
            f"{p}: does not fit the backbone ({config_key}): {what} (needs {min_fraction:.0%}; {where}; "
            f"missing {len(missing)}: {_preview(missing)}; unexpected {len(unexpected)}: {_preview(unexpected)})"
            f"{note}; hand in the backbone's own weights (a timm/torchvision state dict of this architecture)")
    model.load_state_dict(state, strict=False)
    if missing or unexpected or ignored:
        log.warning("%s: %d of %d backbone tensors loaded (%s); missing %d: %s; unexpected %d: %s; %d outside the "
                    "prefix ignored", p, len(loaded), len(counted), where, len(missing), _preview(missing),
                    len(unexpected), _preview(unexpected), len(ignored))
    else:
        log.info("%s: all %d backbone tensors loaded (%s)", p, len(loaded), where)
    return {"path": str(p), "sha256": sha256_file(p), "prefix": fp, "loaded": len(loaded), "missing": missing[:20],
            "num_missing": len(missing), "unexpected": unexpected[:20], "num_unexpected": len(unexpected),
            "heads_dropped": len(dropped), "ignored_outside_prefix": len(ignored),  # heads: also the `unused` parts
            "fraction_of_model": round(of_model, 6), "fraction_of_file": round(of_file, 6)}


def create_timm_model(name: str, *, pretrained: bool, checkpoint: str | None, config_key: str,
                      what: str = "backbone", quiet: bool = False, min_fraction: float = DEFAULT_MIN_FRACTION,
                      unused: tuple[str, ...] = (), **model_args) -> nn.Module:
    """A timm model by name: ImageNet weights by (timm) name, an explicit file (loaded by `load_backbone_weights`),
    or random with a warning. The load record of a file is kept as ``model.weights_record``.

    Args:
        name: timm architecture (optionally with a pretrained tag, e.g. ``resnet101.tv_in1k``).
        pretrained: download (or read from the HF cache) the ImageNet weights named by `name`.
        checkpoint: explicit weights file; takes precedence over `pretrained`.
        config_key: the config section of these settings (``generator``, ``segment.model``), for messages.
        what: how log messages name the model.
        quiet: no warning about random weights (weights are loaded from a checkpoint right after).
        min_fraction, unused: see `load_backbone_weights`.
        **model_args: `timm.create_model` arguments (num_classes, drop_path_rate, features_only, user kwargs ...).

    Raises:
        WeightsError: the weights cannot be had (offline), or the file does not fit; the message says what to pass.
    """
    import timm

    try:
        model = timm.create_model(name, pretrained=bool(pretrained and not checkpoint), **model_args)
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as e:
        if pretrained and not checkpoint:
            raise WeightsError(
                f"could not get ImageNet weights for {name} ({type(e).__name__}); offline machines must pass "
                f"--set {config_key}.backbone_checkpoint=/path/to/{name}.pth, or --set {config_key}.pretrained=false "
                "to start from random weights") from e
        raise WeightsError(f"cannot build timm model {name!r} with {model_args}: {e}") from e
    model.weights_record = None
    if checkpoint:
        model.weights_record = load_backbone_weights(model, checkpoint, config_key=f"{config_key}.backbone_checkpoint",
                                                     min_fraction=min_fraction, unused=unused)
    elif not (pretrained or quiet):
        log.warning("%s %s has RANDOM weights (%s.pretrained=false): fine for tests, useless for results", what,
                    name, config_key)
    return model


__all__ = ["DEFAULT_MIN_FRACTION", "create_timm_model", "load_backbone_weights", "match_prefix", "read_state_dict",
           "timm_filter_fn", "unwrap_state_dict"]
