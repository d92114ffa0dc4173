"""Any architecture of segmentation_models_pytorch (SMP) on any timm or SMP encoder, as a `SegmentationModel`.

``segment.model.arch`` names the SMP architecture (`SMP_ARCHS`: deeplabv3plus — the default, DeepLabV3+ of Chen
et al., ECCV 2018 —, deeplabv3, unet, unetplusplus, manet, linknet, fpn, pspnet, pan, upernet, segformer, dpt) and
``segment.model.encoder`` its encoder: ``tu-<timm name>`` (any timm model, e.g. ``tu-resnet101``, the default;
``tu-resnet101.tv_in1k`` for torchvision's weights) or an SMP encoder name (``resnet101``, ``mit_b2``, ...).
``encoder_kwargs`` go to the timm model (tiny test variants: ``layers``, ``channels``, ``stem_width``);
``arch_kwargs`` to the SMP architecture (e.g. UNet's ``decoder_channels: [256, 128, 64, 32, 16]``).

DeepLabV3 / V3+ take their recipe from the config: ``output_stride`` 16 or 8 (the encoder's last blocks dilated),
ASPP rates given at stride 16 (6/12/18, doubled at stride 8), ``aspp_separable`` (the paper's atrous separable
convolutions), ``decoder_channels`` and ``dropout``. The ASPP image-pooling branch has no BatchNorm here (its
BatchNorm is replaced by a bias), so a micro-batch of one image per GPU trains too.

Inputs are padded (bottom/right, zeros = the mean colour) to a multiple of the encoder's output stride — SMP
refuses other sizes — and the logits cropped back, so every output pixel stays aligned with its input pixel.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from semples.errors import ConfigError, WeightsError
from semples.models.segmenters.base import CONFIG_KEY, SegmentationModel, load_backbone_file, weights_source

log = logging.getLogger(__name__)

# segmentation_models_pytorch architectures (smp.MODEL_ARCHITECTURES_MAPPING keys; a test keeps them in sync)
SMP_ARCHS: tuple[str, ...] = ("deeplabv3plus", "deeplabv3", "unet", "unetplusplus", "manet", "linknet", "fpn",
                              "pspnet", "pan", "upernet", "segformer", "dpt")
DEEPLAB_ARCHS = ("deeplabv3plus", "deeplabv3")
DEFAULT_ENCODER = "tu-resnet101"


class SmpSegmenter(SegmentationModel):
    """An SMP model (encoder, decoder, segmentation head) behind the `SegmentationModel` interface.

    Args:
        model: an SMP ``SegmentationModel`` with `num_classes` output channels.
        num_classes: C (background included).
    """

    backbone_prefix = "model.encoder"

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.size_multiple = int(model.encoder.output_stride)
        self.output_stride = 1  # SMP heads upsample their logits to the input size
        self.source = {}
        self.channels_last_inference = True  # evaluation / prediction forwards NHWC (benchmarks/torch_features.py)

    def forward_grid(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def _timm_encoder(encoder: str) -> bool:
    return encoder.startswith("tu-")


def _drop_pooling_norm(model: nn.Module) -> None:
    """ASPP image pooling: BatchNorm over a 1x1 map fails on one image; use a biased conv without norm instead."""
    from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPPPooling

    for module in model.modules():
        if isinstance(module, ASPPPooling):
            conv = module[1]
            module[1] = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=True)
            module[2] = nn.Identity()


def smp_kwargs(cfg, arch: str) -> dict:
    """The SMP constructor arguments a `SegmenterConfig` asks for (besides encoder, weights and classes)."""
    kwargs: dict = {}
    if arch in DEEPLAB_ARCHS:
        if cfg.output_stride not in (8, 16):
            raise ConfigError(f"{CONFIG_KEY}.output_stride must be 8 or 16 for {arch}, got {cfg.output_stride}")
        if len(cfg.aspp_rates) != 3:
            raise ConfigError(f"{CONFIG_KEY}.aspp_rates must be three dilation rates, got {list(cfg.aspp_rates)}")
        # rates are given for output stride 16 (the paper's); at stride 8 the same context needs twice the dilation
        rates = tuple(int(r) * (16 // cfg.output_stride) for r in cfg.aspp_rates)
        kwargs.update(encoder_output_stride=cfg.output_stride, decoder_atrous_rates=rates,
                      decoder_aspp_separable=cfg.aspp_separable, decoder_aspp_dropout=cfg.dropout,
                      decoder_channels=cfg.decoder_channels)
    kwargs.update(cfg.arch_kwargs)
    kwargs.update(cfg.encoder_kwargs)  # SMP passes unknown keywords on to the timm encoder
    return kwargs


def build_smp(cfg, num_classes: int, quiet: bool = False) -> SmpSegmenter:
    """An SMP architecture (``cfg.arch``) on ``cfg.encoder`` from a `SegmenterConfig`.

    Weights: ``backbone_checkpoint`` (an explicit file, loaded into the encoder), else ImageNet weights by name
    when ``pretrained`` (timm's for ``tu-`` encoders, SMP's for its own), else random with a warning.

    Raises:
        ConfigError: an unknown architecture or encoder, or arguments the architecture does not take.
        WeightsError: the ImageNet weights cannot be had (offline) or the file does not fit; says what to pass.
    """
    import segmentation_models_pytorch as smp

    arch = cfg.arch
    encoder = cfg.encoder or DEFAULT_ENCODER
    fetch = bool(cfg.pretrained and not cfg.backbone_checkpoint)
    weights = (True if _timm_encoder(encoder) else "imagenet") if fetch else None
    kwargs = smp_kwargs(cfg, arch)
    try:
        model = smp.create_model(arch, encoder_name=encoder, encoder_weights=weights, classes=num_classes, **kwargs)
    except OSError as e:  # the hub is out of reach (offline) and the cache has no copy
        raise WeightsError(
            f"could not get ImageNet weights for encoder {encoder} ({type(e).__name__}); offline machines must pass "
            f"--set {CONFIG_KEY}.backbone_checkpoint=/path/to/{encoder.removeprefix('tu-')}.pth, or --set "
            f"{CONFIG_KEY}.pretrained=false to start from random weights") from e
    except KeyError as e:
        raise ConfigError(f"{CONFIG_KEY}: {e.args[0] if e.args else e}") from None
    except (TypeError, ValueError, RuntimeError) as e:
        if "Unknown model" in str(e) or "Invalid model" in str(e):
            raise ConfigError(f"{CONFIG_KEY}.encoder {encoder!r} is not a timm model ({e})") from None
        raise ConfigError(f"cannot build {arch} on {encoder} with {kwargs}: {type(e).__name__}: {e}") from None
    if arch in DEEPLAB_ARCHS:
        _drop_pooling_norm(model)
    if cfg.backbone_checkpoint:
        target = model.encoder.model if _timm_encoder(encoder) else model.encoder
        load_backbone_file(target, cfg.backbone_checkpoint, what=f"{encoder} encoder")
    elif not (cfg.pretrained or quiet):
        log.warning("segmentation encoder %s has RANDOM weights (%s.pretrained=false): fine for tests, useless for "
                    "results", encoder, CONFIG_KEY)
    out = SmpSegmenter(model, num_classes)
    out.source = {**weights_source(encoder, cfg.pretrained, cfg.backbone_checkpoint), "arch": arch}
    return out


__all__ = ["DEEPLAB_ARCHS", "DEFAULT_ENCODER", "SMP_ARCHS", "SmpSegmenter", "build_smp", "smp_kwargs"]
