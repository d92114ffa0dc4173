"""Tiny CLIP Grad-CAM / ResNet CAM generators shared by the FMA-WSSS and compatibility tests."""

from __future__ import annotations

import torch

from semples.config import ClipCamConfig, GeneratorConfig
from semples.models.mask_generators import GeneratorContext, build_generator

NAMES = ("cat", "dog", "boat")
BACKGROUNDS = ("sky", "water")
RESNET_TINY = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16}


def clip_cam_cfg(kind: str = "segmentation", **kw) -> GeneratorConfig:
    """logit_scale 10 keeps the random tiny CLIP's softmax away from saturation (non-zero Grad-CAMs)."""
    kw = {"context_length": 4, "logit_scale": 10.0, **kw}
    cc = ClipCamConfig(prompts=kind, **kw)
    return GeneratorConfig(name="clip_gradcam", clip_cam=cc)


def make_clip_generator(clip, kind: str = "segmentation", seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_generator(clip_cam_cfg(kind, **kw), len(NAMES), context=GeneratorContext(NAMES, BACKGROUNDS, clip))


def resnet_cfg(**kw) -> GeneratorConfig:
    return GeneratorConfig(name="resnet_cam", backbone="resnet18", pretrained=False, drop_path=0.0,
                           backbone_kwargs={**RESNET_TINY, **kw})


def make_resnet_generator(num_classes: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    return build_generator(resnet_cfg(), num_classes, quiet=True)
