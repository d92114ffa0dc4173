"""Tiny segmentation-model configs and pseudo-mask folders shared by the final-segmentation tests."""

from __future__ import annotations

from pathlib import Path

import torch

from semples.config import SegmenterConfig
from semples.data.io import write_mask_png

RESNET_TINY = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16}
VIT_TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 32}
# a Mask2Former of ~0.35M parameters: 4 one-block Swin stages of width 16, a 32-wide pixel decoder, 6 queries
MASK2FORMER_TINY = {
    "backbone_config": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2], "window_size": 4,
                        "image_size": 64, "drop_path_rate": 0.0},
    "feature_size": 32, "mask_feature_size": 32, "hidden_dim": 32, "encoder_layers": 1, "decoder_layers": 2,
    "num_queries": 6, "encoder_feedforward_dim": 32, "dim_feedforward": 32, "num_attention_heads": 2,
    "train_num_points": 64,
}
SEGMENTER_NAMES = ("deeplabv3plus", "unet", "segmenter_linear", "segmenter_mask", "mask2former")


def tiny_segmenter_cfg(name: str = "deeplabv3plus", **kw) -> SegmenterConfig:
    """A small random-weight variant of each family (tens to hundreds of thousands of parameters)."""
    if name == "deeplabv3plus":
        base = dict(encoder="tu-resnet18", encoder_kwargs=RESNET_TINY, decoder_channels=16)
    elif name == "unet":
        base = dict(encoder="tu-resnet18", encoder_kwargs=RESNET_TINY,
                    arch_kwargs={"decoder_channels": [32, 16, 16, 8, 8]})
    elif name == "mask2former":
        base = dict(hf_config=MASK2FORMER_TINY)
    else:
        base = dict(encoder_kwargs=VIT_TINY, drop_path=0.0)
    return SegmenterConfig(arch=name, **{"pretrained": False, **base, **kw})


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
