"""Fixtures of the data-layer tests: the real fixtures folder (skipped when absent) and tiny generated datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semples.data.io import write_mask_png

REPO = Path(__file__).resolve().parents[2]


def fixtures_root() -> Path:
    """$SEMPLES_FIXTURES, else <repo>/../shared/data."""
    env = os.environ.get("SEMPLES_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own label cache folder (never the user's ~/.cache)."""
    monkeypatch.setenv("SEMPLES_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def voc128() -> Path:
    root = fixtures_root() / "voc128"
    if not (root / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"real fixtures not found at {root} (set SEMPLES_FIXTURES)")
    return root


@pytest.fixture
def coco128() -> Path:
    root = fixtures_root() / "coco128"
    if not (root / "annotations" / "instances_train2017.json").is_file():
        pytest.skip(f"real fixtures not found at {root} (set SEMPLES_FIXTURES)")
    return root


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def box_mask(width: int, height: int, label: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Background mask with `label` inside box (x0, y0, x1, y1) (default: the centre quarter)."""
    m = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box or (width // 4, height // 4, 3 * width // 4, 3 * height // 4)
    m[y0:y1, x0:x1] = label
    return m


def make_voc(root: Path, splits: dict[str, list[str]], labels: dict[str, int] | None = None,
             size: tuple[int, int] = (32, 24), mask_dir: str = "SegmentationClass") -> Path:
    """A VOC2012 layout under root/VOC2012: one JPEG + palette mask per id (class labels[id], default 1..)."""
    voc = root / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    all_ids = sorted({i for ids in splits.values() for i in ids})
    labels = labels or {i: (n % 20) + 1 for n, i in enumerate(all_ids)}
    for n, i in enumerate(all_ids):
        random_image(*size, seed=n).save(voc / "JPEGImages" / f"{i}.jpg", quality=95)
        m = box_mask(*size, labels[i])
        m[0, :] = 255  # an ignore band, as in real VOC masks
        write_mask_png(voc / mask_dir / f"{i}.png", m)
    for split, ids in splits.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc


def polygon(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def make_coco(root: Path, split: str, images: list[dict], annotations: list[dict],
              categories: list[dict] | None = None) -> Path:
    """An official-style COCO layout: <root>/images/<split>/*.jpg and <root>/annotations/instances_<split>.json."""
    from semples.data.classes import COCO_CATEGORIES

    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for n, img in enumerate(images):
        random_image(img["width"], img["height"], seed=n).save(root / "images" / split / img["file_name"])
    cats = categories if categories is not None else [{"id": c, "name": n} for c, n in COCO_CATEGORIES]
    data = {"images": images, "annotations": annotations, "categories": cats}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


@pytest.fixture
def gen():
    """The generators above, as a fixture (test modules need no imports from conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(random_image=random_image, box_mask=box_mask, make_voc=make_voc, polygon=polygon,
                           make_coco=make_coco)
