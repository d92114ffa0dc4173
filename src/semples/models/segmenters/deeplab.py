"""DeepLabV3+ on a (dilated) ResNet: atrous spatial pyramid pooling + a light decoder with low-level features.

Paper: Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation"
(ECCV 2018). The backbone is a timm ResNet with output stride 16 (layer4 dilated) or 8 (layers 3-4 dilated):

    low  = layer1(x)                         (B, C_low, H/4, W/4)
    high = layer4(x)                         (B, C_high, H/16, W/16)
    a    = ASPP(high)                        1×1 conv, three 3×3 atrous convs (rates 6/12/18 at OS 16, doubled at
                                             OS 8) and image pooling, concatenated and projected to 256 channels
    d    = [up(a) ; 1×1(low) -> 48 ch]       at stride 4
    out  = 1×1(3×3(3×3(d)))                  (B, C, H/4, W/4), upsampled bilinearly to (H, W)

The paper's separable convolutions are replaced by ordinary ones (the torchvision/mmseg variant): same receptive
field, more parameters, simpler code. The image-pooling branch has no BatchNorm, so a micro-batch of one image
(possible with many GPUs) trains too.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from semples.errors import ConfigError
from semples.models.segmenters.base import SegmentationModel, create_timm_backbone, weights_source


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel - 1) // 2
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling. Shape: (B, C_in, h, w) -> (B, channels, h, w)."""

    def __init__(self, in_channels: int, channels: int = 256, rates: tuple[int, ...] = (6, 12, 18),
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(in_channels, channels, 1)]
                                      + [conv_bn_relu(in_channels, channels, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(conv_bn_relu(channels * (len(rates) + 2), channels, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [branch(x) for branch in self.branches]
        feats.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(feats, dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """ASPP on the deep features, fused with projected low-level features at stride 4, then a classifier.

    Shape: low (B, C_low, H/4, W/4), high (B, C_high, h, w) -> logits (B, num_classes, H/4, W/4).
    """

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, channels: int = 256,
                 low_level_channels: int = 48, rates: tuple[int, ...] = (6, 12, 18), dropout: float = 0.1) -> None:
        super().__init__()
        self.aspp = ASPP(high_channels, channels, rates, dropout)
        self.low_proj = conv_bn_relu(low_channels, low_level_channels, 1)
        self.fuse = nn.Sequential(conv_bn_relu(channels + low_level_channels, channels, 3),
                                  conv_bn_relu(channels, channels, 3), nn.Dropout(dropout))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        a = self.aspp(high)
        a = F.interpolate(a, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([a, self.low_proj(low)], dim=1)))


class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+ on a timm feature backbone that returns (stride-4, deepest) feature maps.

    Evaluation forwards run in channels_last (`SegmentationModel.channels_last_inference`).

    Args:
        backbone: a timm ``features_only`` model with two outputs (low level, high level).
        num_classes: C (background included).
        channels / low_level_channels / rates / dropout: decoder widths, ASPP dilation rates, dropout.
        output_stride: stride of the deepest features (16 or 8).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, channels: int = 256, low_level_channels: int = 48,
                 rates: tuple[int, ...] = (6, 12, 18), dropout: float = 0.1, output_stride: int = 16) -> None:
        super().__init__()
        self.backbone = backbone
        low_c, high_c = backbone.feature_info.channels()
        self.decoder = DeepLabV3PlusDecoder(low_c, high_c, num_classes, channels, low_level_channels, rates,
                                            dropout)
        self.num_classes = num_classes
        self.output_stride = int(backbone.feature_info.reduction()[0])  # logits come at the low-level stride
        self.deep_stride = output_stride
        self.size_multiple = 1  # convolutions take any size
        self.channels_last_inference = True
        self.source = {}

    def forward_grid(self, images: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone(images)
        return self.decoder(low, high)


def build_deeplabv3plus(cfg, num_classes: int, quiet: bool = False) -> DeepLabV3Plus:
    """A `DeepLabV3Plus` from a `SegmenterConfig` (`backbone` defaults to ResNet-101)."""
    name = cfg.backbone or "resnet101"
    if cfg.output_stride not in (8, 16):
        raise ConfigError(f"segment.model.output_stride must be 8 or 16 for DeepLabV3+, got {cfg.output_stride}")
    backbone = create_timm_backbone(name, pretrained=cfg.pretrained, checkpoint=cfg.backbone_checkpoint,
                                    kwargs=cfg.backbone_kwargs, quiet=quiet, features_only=True,
                                    out_indices=(1, 4), output_stride=cfg.output_stride)
    # rates are given for output stride 16 (the paper's); at stride 8 the same context needs twice the dilation
    rates = tuple(int(r) * (16 // cfg.output_stride) for r in cfg.aspp_rates)
    model = DeepLabV3Plus(backbone, num_classes, channels=cfg.decoder_channels,
                          low_level_channels=cfg.low_level_channels, rates=rates, dropout=cfg.dropout,
                          output_stride=cfg.output_stride)
    model.source = weights_source(name, cfg.pretrained, cfg.backbone_checkpoint)
    return model
