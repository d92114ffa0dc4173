"""Shared fixtures: tiny random-weight CLIP and mask generator, a toy dataset, the tiny config preset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semples.config import load_config
from semples.data.base import ClassTable, SegmentationDataset

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("SEMPLES_FIXTURES", REPO.parent / "shared" / "data"))


class ToyDataset(SegmentationDataset):
    """n images (48..72 px) with 1-2 coloured rectangles of K=3 classes on noise; exact masks."""

    name = "toy"
    has_masks = True

    def __init__(self, n: int = 8, seed: int = 0) -> None:
        self.classes = ClassTable(("cat", "dog", "boat"), ("cat", "dog", "boat"))
        self.ids = [f"toy{i:03d}" for i in range(n)]
        self.seed = seed
        self._items = [self._make(i) for i in range(n)]

    def _make(self, i: int):
        rng = np.random.default_rng(self.seed * 1000 + i)
        h, w = int(rng.integers(48, 73)), int(rng.integers(48, 73))
        img = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            k = int(rng.integers(0, 3))
            y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            y1, x1 = y0 + int(rng.integers(10, h // 2)), x0 + int(rng.integers(10, w // 2))
            img[y0:y1, x0:x1] = [(200, 40, 40), (40, 200, 40), (40, 40, 200)][k]
            mask[y0:y1, x0:x1] = k + 1
        return Image.fromarray(img), mask

    def labels(self, index: int) -> np.ndarray:
        lab = np.zeros(3, np.float32)
        for v in np.unique(self._items[index][1]):
            if 0 < v < 255:
                lab[v - 1] = 1
        return lab

    def load_image(self, index: int) -> Image.Image:
        return self._items[index][0]

    def load_mask(self, index: int) -> np.ndarray:
        return self._items[index][1]


@pytest.fixture
def tiny_cfg():
    return load_config("tiny")


@pytest.fixture(scope="session")
def tiny_clip():
    from semples.config import ClipConfig
    from semples.models.clip import load_clip

    torch.manual_seed(0)
    return load_clip(ClipConfig(arch="tiny-clip", pretrained="none"))


@pytest.fixture
def toy_dataset():
    return ToyDataset()


def make_generator(num_classes: int = 3, seed: int = 0):
    from semples.config import GeneratorConfig
    from semples.models.mask_generators import build_generator

    torch.manual_seed(seed)
    cfg = GeneratorConfig(pretrained=False, drop_path=0.0, attention_reduction=1,
                          backbone_kwargs={"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 64})
    return build_generator(cfg, num_classes, quiet=True)


def toy_batch(n: int = 4, size: int = 64, num_classes: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, num_classes, generator=g) > 0.5).float()
    labels[:, 0] = torch.where(labels.sum(1) == 0, 1.0, labels[:, 0])
    return {"image": torch.randn(n, 3, size, size, generator=g), "labels": labels}
