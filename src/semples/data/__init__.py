"""Datasets, image-level labels and transforms.

`build_dataset(cfg, split)` is the one entry point the rest of the package uses; readers register in
`DATASETS` (a plain dict: name -> builder). Readers: voc.py (PASCAL VOC 2012 + SBD), coco.py (MS COCO from the
official instances), folder.py (a user's folder of images + labels file), synthetic.py. `bad_items_report` lists
what ``data.skip_bad`` skipped (skip.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from semples.data.base import (
    IGNORE_INDEX,
    ClassTable,
    DataError,
    RawItem,
    SegmentationDataset,
    TransformedDataset,
    collate,
)
from semples.data.config import DataConfig, TrainTransformConfig
from semples.data.skip import SkipBadItems, bad_items_report, find_bad_items


def _build_synthetic(cfg: DataConfig, split: str) -> SegmentationDataset:
    from semples.data.synthetic import build_synthetic

    return build_synthetic(cfg, split)


def _build_voc(cfg: DataConfig, split: str) -> SegmentationDataset:
    from semples.data.voc import build_voc

    return build_voc(cfg, split)


def _build_coco(cfg: DataConfig, split: str) -> SegmentationDataset:
    from semples.data.coco import build_coco

    return build_coco(cfg, split)


def _build_folder(cfg: DataConfig, split: str) -> SegmentationDataset:
    from semples.data.folder import build_folder

    return build_folder(cfg, split)


DATASETS: dict[str, Callable[[DataConfig, str], SegmentationDataset]] = {
    "synthetic": _build_synthetic,
    "voc": _build_voc,
    "coco": _build_coco,
    "folder": _build_folder,
}


def build_dataset(cfg: DataConfig, split: str | None = None,
                  bad_items_dir: str | Path | None = None) -> SegmentationDataset:
    """The dataset named by `cfg.dataset`, split `split` (default: `cfg.train_split`).

    With ``cfg.skip_bad`` the dataset comes wrapped in `SkipBadItems`: unreadable items are replaced by the next
    readable one and recorded in ``<bad_items_dir>/bad_items.txt`` (default: a temporary folder); call
    `bad_items_report(dataset)` at the end of the run to list them.
    """
    try:
        builder = DATASETS[cfg.dataset]
    except KeyError:
        raise DataError(f"unknown dataset {cfg.dataset!r}; valid datasets are: {', '.join(DATASETS)}") from None
    dataset = builder(cfg, split or cfg.train_split)
    if cfg.skip_bad:
        dataset = SkipBadItems(dataset, bad_items_dir)
    return dataset


__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "ClassTable",
    "DataConfig",
    "DataError",
    "RawItem",
    "SegmentationDataset",
    "TrainTransformConfig",
    "SkipBadItems",
    "TransformedDataset",
    "bad_items_report",
    "build_dataset",
    "collate",
    "find_bad_items",
]
