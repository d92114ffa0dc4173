"""Tiny segmentation-model configs and pseudo-mask folders shared by the final-segmentation tests."""

from __future__ import annotations

from pathlib import Path

import torch

from semples.config import SegmenterConfig
from semples.data.io import write_mask_png

RESNET_TINY = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16}
VIT_TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}
SEGMENTER_NAMES = ("deeplabv3plus", "segmenter_linear", "segmenter_mask")


def tiny_segmenter_cfg(name: str = "deeplabv3plus", **kw) -> SegmenterConfig:
    """A few-thousand-parameter variant of each family (random weights)."""
    if name == "deeplabv3plus":
        base = dict(backbone="resnet18", backbone_kwargs=RESNET_TINY, decoder_channels=16, low_level_channels=8)
    else:
        base = dict(backbone_kwargs=VIT_TINY, drop_path=0.0)
    return SegmenterConfig(name=name, **{"pretrained": False, **base, **kw})


def tiny_segmenter(name: str = "deeplabv3plus", num_classes: int = 4, seed: int = 0, **kw):
    from semples.models.segmenters import build_segmenter

    torch.manual_seed(seed)
    return build_segmenter(tiny_segmenter_cfg(name, **kw), num_classes, quiet=True)


def write_masks_from_ground_truth(dataset, folder: Path, ids: list[str] | None = None) -> Path:
    """A pseudo-mask folder holding the dataset's own masks (the best pseudo masks there can be)."""
    wanted = set(ids) if ids is not None else None
    for i, image_id in enumerate(dataset.ids):
        if wanted is None or image_id in wanted:
            write_mask_png(Path(folder) / f"{image_id}.png", dataset.load_mask(i))
    return Path(folder)
