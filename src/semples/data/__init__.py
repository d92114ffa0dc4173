"""Datasets, image-level labels and transforms.

`build_dataset(cfg, split)` is the one entry point the rest of the package uses; readers register in
`DATASETS` (a plain dict: name -> builder).
"""

from __future__ import annotations

from collections.abc import Callable

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


def _build_synthetic(cfg: DataConfig, split: str) -> SegmentationDataset:
    from semples.data.synthetic import build_synthetic

    return build_synthetic(cfg, split)


DATASETS: dict[str, Callable[[DataConfig, str], SegmentationDataset]] = {
    "synthetic": _build_synthetic,
}


def build_dataset(cfg: DataConfig, split: str | None = None) -> SegmentationDataset:
    """The dataset named by `cfg.dataset`, split `split` (default: `cfg.train_split`)."""
    try:
        builder = DATASETS[cfg.dataset]
    except KeyError:
        raise DataError(f"unknown dataset {cfg.dataset!r}; valid datasets are: {', '.join(DATASETS)}") from None
    return builder(cfg, split or cfg.train_split)


__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "ClassTable",
    "DataConfig",
    "DataError",
    "RawItem",
    "SegmentationDataset",
    "TrainTransformConfig",
    "TransformedDataset",
    "build_dataset",
    "collate",
]
