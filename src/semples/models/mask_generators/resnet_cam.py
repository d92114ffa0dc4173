"""ResNet CAM network, CLIMS style (Xie et al., "CLIMS", CVPR 2022; Zhou et al. CAM, CVPR 2016).

A timm ResNet (ResNet-50 for real runs) at output stride 16 (the last stage dilated instead of strided) and a
1×1 convolution without bias as the classifier:

    F      = backbone(images)                 (B, C, H/16, W/16)
    linear = Conv1x1(F)                        (B, K, h, w)    class activation before the ReLU
    cam    = ReLU(linear)                      the map that becomes the soft mask
    logits = mean over (h, w) of linear        = Conv1x1(GAP(F)): the classifier's image-level scores

Stage classify trains it with the multi-label soft-margin loss on ``logits["gap"]``; the SemPLeS stages train the
classifier (and the backbone with ``generator.train_trunk``) through the same interface as the other generators.
Weights: ImageNet by timm name, an explicit file (``generator.backbone_checkpoint``) or random with a warning
(`create_timm_vit` does the same for every timm backbone). Under ``torch.inference_mode`` (`semples cams`) the
input goes in channels_last memory format, which oneDNN's convolutions run ~1.3x faster on CPU; training forwards
are untouched.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from semples.models.mask_generators.base import GeneratorContext, GeneratorOutput, MaskGenerator
from semples.models.mask_generators.weaktr import create_timm_vit


class ResNetCAM(MaskGenerator):
    """CAM network on a timm ResNet (see the module docstring).

    Args:
        num_classes: K foreground classes.
        backbone: a timm ResNet built with ``num_classes=0, global_pool=""`` (its ``forward_features`` gives the
            last feature map).
        stride: output stride of the backbone (inputs are padded to a multiple of it).
    """

    def __init__(self, num_classes: int, backbone: nn.Module, stride: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = backbone
        self.stride = stride
        self.head = nn.Conv2d(int(backbone.num_features), num_classes, kernel_size=1, bias=False)
        nn.init.kaiming_normal_(self.head.weight)
        self.trunk_trainable = True
        self.detach_coarse_in_fusion = False  # attribute the SemPLeS stages set on every generator (unused here)

    def trunk_modules(self) -> list[nn.Module]:
        return [self.backbone]

    def forward(self, images: torch.Tensor) -> GeneratorOutput:
        """Shape: images (B, 3, H, W) ImageNet-normalised -> cam (B, K, ⌈H/s⌉, ⌈W/s⌉), logits {"gap": (B, K)}."""
        b, _, height, width = images.shape
        s = self.stride
        pad_h, pad_w = (-height) % s, (-width) % s
        x = F.pad(images, (0, pad_w, 0, pad_h)) if (pad_h or pad_w) else images
        if torch.is_inference_mode_enabled():  # seeds: oneDNN convolutions are ~1.3x faster on NHWC input
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trunk_trainable):
            feats = self.backbone.forward_features(x)
        linear = self.head(feats)
        cam = F.relu(linear)
        return GeneratorOutput(cam=cam, logits={"gap": linear.mean(dim=(2, 3))}, maps={"cam": cam, "linear": linear},
                               input_size=(height, width), padded_size=(height + pad_h, width + pad_w))


def build_resnet_cam(cfg, num_classes: int, quiet: bool = False,
                     context: GeneratorContext | None = None) -> ResNetCAM:
    """A `ResNetCAM` from a `GeneratorConfig`: ``backbone`` (e.g. resnet50), ``pretrained`` / ``backbone_checkpoint``,
    ``backbone_kwargs`` (``output_stride`` defaults to 16, as in CLIMS)."""
    kwargs = {"output_stride": 16, **dict(cfg.backbone_kwargs), "global_pool": ""}
    backbone = create_timm_vit(cfg.backbone, pretrained=cfg.pretrained, checkpoint=cfg.backbone_checkpoint,
                               drop_path=cfg.drop_path, kwargs=kwargs, quiet=quiet)
    generator = ResNetCAM(num_classes, backbone, stride=int(kwargs["output_stride"]))
    generator.backbone_weights = backbone.weights_record  # what a backbone file loaded (the manifest keeps it)
    return generator


__all__ = ["ResNetCAM", "build_resnet_cam"]
