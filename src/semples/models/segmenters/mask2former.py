"""Mask2Former (Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation", CVPR 2022)
through HF transformers' ``Mask2FormerForUniversalSegmentation``, trained as semantic segmentation.

The paper's headline numbers (SemPLeS and FMA-WSSS) come from Mask2Former with a Swin-L backbone trained on the
pseudo masks. Here it is one more `SegmentationModel`, so it trains through the same engine and is evaluated by
the same `eval-seg` (single- and multi-scale + flip) as every other final model:

- training (`loss`): each (pseudo) mask becomes one binary target mask per class present in it (255 = in no
  target, as in the official semantic recipe) and HF's Mask2Former loss runs on them: Hungarian matching of the
  queries, class cross-entropy (no-object weight 0.1), sigmoid-CE and dice mask losses on sampled points, on
  every decoder layer (deep supervision); weights class 2, mask 5, dice 5 (``segment.model.hf_config``).
- inference (`forward`): the semantic map of the official code, s_c = Σ_q softmax(class_q)_c · sigmoid(mask_q),
  returned as log(s_c / Σ_c' s_c'), so that a softmax gives the normalised class scores and the argmax is the
  official one; multi-scale + flip averages these probabilities like any other model's.

Architecture: ``segment.model.hf_config`` (keywords of `transformers.Mask2FormerConfig`; ``backbone_config`` a
Swin config) — the Swin-L preset (``voc_semples``) and a tiny random one for tests set it. Weights:
``segment.model.hf_weights``, a HF hub id or a local folder (``save_pretrained`` layout) holding either a whole
Mask2Former checkpoint (its class head is re-initialised when the class count differs) or a Swin backbone
(e.g. ``microsoft/swin-large-patch4-window12-384-in22k``, the paper's ImageNet-22K Swin-L; decoder random);
``backbone_checkpoint`` an explicit backbone file; else random with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn as nn

from semples.errors import ConfigError, WeightsError
from semples.models.segmenters.base import CONFIG_KEY, SegmentationModel, load_backbone_file
from semples.utils.extras import require

log = logging.getLogger(__name__)

SWIN_STAGES = ["stage1", "stage2", "stage3", "stage4"]
LOSS_PARTS = {"loss_cross_entropy": "class_loss", "loss_mask": "mask_loss", "loss_dice": "dice_loss"}


def semantic_targets(masks: torch.Tensor, ignore_index: int = 255) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Semantic masks -> Mask2Former targets: one binary mask per class present in each image.

    Shape: masks (B, H, W) integer labels (``ignore_index`` = no target) -> B tensors (n_i, H, W) float and
    B tensors (n_i,) int64 class labels.
    """
    mask_labels, class_labels = [], []
    for m in masks:
        present = torch.unique(m)
        present = present[present != ignore_index]
        mask_labels.append((m[None] == present[:, None, None]).to(torch.float32))
        class_labels.append(present.to(torch.int64))
    return mask_labels, class_labels


def semantic_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """The official semantic inference of Mask2Former (no-object column dropped).

    Shape: class_logits (B, Q, C + 1), mask_logits (B, Q, h, w) -> (B, C, h, w) non-negative scores.
    """
    classes = class_logits.float().softmax(-1)[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", classes, mask_logits.float().sigmoid())


class Mask2FormerSegmenter(SegmentationModel):
    """A HF ``Mask2FormerForUniversalSegmentation`` behind the `SegmentationModel` interface.

    Args:
        model: the HF model, ``config.num_labels`` = `num_classes`.
        num_classes: C (background included).
    """

    backbone_prefix = "model.model.pixel_level_module.encoder"
    loss_names = tuple(LOSS_PARTS.values())

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.output_stride = 4  # masks come at the stride-4 grid of the pixel decoder
        self.size_multiple = 32  # the Swin stages and the pixel decoder's strides
        self.source = {}
        # the Swin model's final LayerNorm is not on the path to the feature maps: no gradient ever reaches it,
        # which DDP (find_unused_parameters=False) would not accept
        backbone = model.model.pixel_level_module.encoder
        for name, p in backbone.named_parameters():
            if name.startswith(("swin.layernorm.", "layernorm.")):
                p.requires_grad_(False)

    def _outputs(self, images: torch.Tensor, auxiliary: bool):
        return self.model(pixel_values=images, output_auxiliary_logits=auxiliary)

    def forward_grid(self, images: torch.Tensor) -> torch.Tensor:
        out = self._outputs(images, auxiliary=False)
        scores = semantic_scores(out.class_queries_logits, out.masks_queries_logits)
        probs = scores / scores.sum(1, keepdim=True).clamp_min(1e-12)
        return probs.clamp_min(1e-8).log()

    def loss(self, images: torch.Tensor, masks: torch.Tensor, ignore_index: int = 255) -> dict[str, torch.Tensor]:
        """HF's Mask2Former loss (matching; class, mask and dice losses on every decoder layer), weighted.

        Shape: images (B, 3, H, W) with H, W multiples of 32 (pad otherwise); masks (B, H, W).
        """
        h, w = images.shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            images = nn.functional.pad(images, (0, pw, 0, ph))
            masks = nn.functional.pad(masks, (0, pw, 0, ph), value=ignore_index)
        mask_labels, class_labels = semantic_targets(masks, ignore_index)
        out = self._outputs(images, auxiliary=True)
        parts = self.model.get_loss_dict(masks_queries_logits=out.masks_queries_logits,
                                         class_queries_logits=out.class_queries_logits, mask_labels=mask_labels,
                                         class_labels=class_labels, auxiliary_predictions=out.auxiliary_logits)
        named = {name: sum(v for k, v in parts.items() if k == key or k.startswith(key + "_"))
                 for key, name in LOSS_PARTS.items()}
        return {"loss": sum(named.values()), **named}


def hf_config(cfg, num_classes: int):
    """The `transformers.Mask2FormerConfig` of a `SegmenterConfig` (``hf_config`` keywords, C labels)."""
    from transformers import Mask2FormerConfig

    kwargs = dict(cfg.hf_config)
    backbone = dict(kwargs.pop("backbone_config", None) or {})
    backbone.setdefault("model_type", "swin")
    backbone.setdefault("out_features", list(SWIN_STAGES))
    try:
        return Mask2FormerConfig(backbone_config=backbone, num_labels=num_classes, **kwargs)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"{CONFIG_KEY}.hf_config does not make a Mask2Former config: "
                          f"{type(e).__name__}: {e}") from None


def _hub_error(source: str, e: Exception) -> WeightsError:
    return WeightsError(
        f"could not get Mask2Former/Swin weights {source!r} ({type(e).__name__}); offline machines must pass a "
        f"local folder (save_pretrained layout: config.json + model.safetensors): --set {CONFIG_KEY}.hf_weights="
        f"/path/to/folder, or --set {CONFIG_KEY}.pretrained=false to start from random weights")


def _check_loading(source: str, info: dict, allowed: Sequence[str] = ()) -> None:
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(tuple(allowed))]
    unexpected = list(info.get("unexpected_keys", []))
    bad = [k for k in info.get("mismatched_keys", []) if not str(k[0] if isinstance(k, tuple) else k)
           .startswith(tuple(allowed))]
    if missing or unexpected or bad:
        raise WeightsError(f"{source}: the weights do not fit the configured Mask2Former ({CONFIG_KEY}.hf_config): "
                           f"missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {bad[:3]}")


def load_hf_weights(model: nn.Module, source: str, config) -> str:
    """Loads a HF hub id or local folder into `model` (a whole Mask2Former, or its Swin backbone).

    Returns:
        "mask2former" or "backbone": what the source held.
    """
    from transformers import AutoConfig, Mask2FormerForUniversalSegmentation, SwinBackbone

    try:
        found = AutoConfig.from_pretrained(source)
    except OSError as e:
        raise _hub_error(source, e) from e
    except ValueError as e:
        raise WeightsError(f"{source}: not a HF model folder or hub id ({e})") from None
    try:
        if found.model_type == "mask2former":
            loaded, info = Mask2FormerForUniversalSegmentation.from_pretrained(
                source, config=config, ignore_mismatched_sizes=True, output_loading_info=True)
            _check_loading(source, info, allowed=("class_predictor.", "criterion."))
            model.load_state_dict(loaded.state_dict())
            if any(str(k[0] if isinstance(k, tuple) else k).startswith("class_predictor.")
                   for k in info.get("mismatched_keys", [])):
                log.info("%s: class head re-initialised for %d classes", source, config.num_labels)
            return "mask2former"
        if found.model_type == "swin":
            backbone, info = SwinBackbone.from_pretrained(source, config=config.backbone_config,
                                                          output_loading_info=True)
            _check_loading(source, info)
            model.model.pixel_level_module.encoder.load_state_dict(backbone.state_dict())
            return "backbone"
    except OSError as e:
        raise _hub_error(source, e) from e
    except RuntimeError as e:  # transformers refuses weights of other shapes
        raise WeightsError(f"{source}: the weights do not fit the configured Mask2Former ({CONFIG_KEY}.hf_config): "
                           f"{str(e).splitlines()[0][:300]}") from None
    raise WeightsError(f"{source}: holds a {found.model_type!r} model; {CONFIG_KEY}.hf_weights takes a Mask2Former "
                       "checkpoint or a Swin backbone")


def build_mask2former(cfg, num_classes: int, quiet: bool = False) -> Mask2FormerSegmenter:
    """A `Mask2FormerSegmenter` from a `SegmenterConfig` (architecture ``hf_config``, weights as the module says).

    Raises:
        MissingExtraError: transformers is not installed (pip install 'semples[hf]').
        ConfigError: ``hf_config`` is not a Mask2Former config.
        WeightsError: the weights cannot be had (offline: says what to pass) or do not fit.
    """
    require(["transformers"], f"{CONFIG_KEY}.arch=mask2former")
    from transformers import Mask2FormerForUniversalSegmentation

    config = hf_config(cfg, num_classes)
    model = Mask2FormerForUniversalSegmentation(config)
    source: dict = {"arch": "mask2former", "backbone": config.backbone_config.model_type}
    if cfg.backbone_checkpoint:
        load_backbone_file(model.model.pixel_level_module.encoder, cfg.backbone_checkpoint,
                           what="Mask2Former backbone")
        source.update(weights="file", path=str(cfg.backbone_checkpoint))
    elif cfg.pretrained and cfg.hf_weights:
        held = load_hf_weights(model, cfg.hf_weights, config)
        source.update(weights=f"hf: {cfg.hf_weights} ({held})")
    else:
        source.update(weights="random")
        if cfg.pretrained and not cfg.hf_weights:
            raise WeightsError(f"{CONFIG_KEY}.arch=mask2former with pretrained weights needs {CONFIG_KEY}.hf_weights "
                               f"(a HF hub id or a local folder), or --set {CONFIG_KEY}.pretrained=false for random "
                               "weights")
        if not quiet:
            log.warning("Mask2Former has RANDOM weights (%s.pretrained=false): fine for tests, useless for results",
                        CONFIG_KEY)
    out = Mask2FormerSegmenter(model, num_classes)
    out.source = source
    return out


__all__ = ["Mask2FormerSegmenter", "build_mask2former", "hf_config", "load_hf_weights", "semantic_scores",
           "semantic_targets"]
