"""Datasets, image-level labels and transforms.

`build_dataset(cfg, split)` is the one entry point the rest of the package uses; readers register in
`DATASETS` (a plain dict: name -> `DatasetSpec`: the builder, the background names CLIP Grad-CAM adds, split
discovery, layout detection, mask export). Readers: voc.py (PASCAL VOC 2012 + SBD), coco.py (MS COCO from the
official instances), folder.py (a user's folder of images + labels file), synthetic/ (the co-occurrence world).
A new dataset is one reader module plus one entry here (docs/architecture.md). `bad_items_report` lists what
``data.skip_bad`` skipped (skip.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset family: how to build a split, and what other modules need to know about it.

    Attributes:
        build: builder(cfg: DataConfig, split) -> SegmentationDataset.
        background_names: (cfg: DataConfig) -> the background class names FMA-WSSS / CLIP Grad-CAM add to the
            dataset's classes (``generator.clip_cam.background_names`` overrides them).
        splits: (root, options) -> the splits found under a root (`semples data check`); None: not discoverable.
        detect: (folder) -> True when a folder holds this layout (`semples data check FOLDER`); None: never.
        export_masks: (cfg, split, out_dir, overwrite) -> (dataset, written, existing) for datasets whose masks
            are built on the fly and can be written once (`semples data export-masks`); None otherwise.
    """

    build: Callable[[DataConfig, str], SegmentationDataset]
    background_names: Callable[[DataConfig], tuple[str, ...]]
    splits: Callable[[str, dict | None], list[str]] | None = None
    detect: Callable[[str | Path], bool] | None = None
    export_masks: Callable | None = None


def _synthetic() -> DatasetSpec:
    def build(cfg: DataConfig, split: str) -> SegmentationDataset:
        from semples.data.synthetic import build_synthetic

        return build_synthetic(cfg, split)

    def background_names(cfg: DataConfig) -> tuple[str, ...]:  # the world's background types as captions name them
        from semples.data.synthetic import BACKGROUND_WORDS

        return tuple(BACKGROUND_WORDS.get(b, (b, b))[0] for b in cfg.synthetic.backgrounds)

    return DatasetSpec(build, background_names)


def _voc() -> DatasetSpec:
    from semples.data import voc

    def build(cfg: DataConfig, split: str) -> SegmentationDataset:
        return voc.build_voc(cfg, split)

    return DatasetSpec(build, lambda cfg: voc.VOC_BACKGROUND_NAMES, splits=voc.available_splits,
                       detect=voc.looks_like_voc)


def _coco() -> DatasetSpec:
    from semples.data import coco

    def build(cfg: DataConfig, split: str) -> SegmentationDataset:
        return coco.build_coco(cfg, split)

    return DatasetSpec(build, lambda cfg: coco.background_names(), splits=coco.available_splits,
                       detect=coco.looks_like_coco, export_masks=coco.export_split_masks)


def _folder() -> DatasetSpec:
    from semples.data import folder, voc

    def build(cfg: DataConfig, split: str) -> SegmentationDataset:
        return folder.build_folder(cfg, split)

    # a user's images: CLIP-ES's VOC list of generic scene words
    return DatasetSpec(build, lambda cfg: voc.VOC_BACKGROUND_NAMES, splits=folder.available_splits,
                       detect=folder.looks_like_folder)


# name -> spec; the keys are the valid values of `data.dataset`. Order = layout detection order.
DATASETS: dict[str, DatasetSpec] = {
    "synthetic": _synthetic(),
    "voc": _voc(),
    "coco": _coco(),
    "folder": _folder(),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The `DatasetSpec` of ``data.dataset`` `name`; the error lists the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; valid datasets are: {', '.join(DATASETS)}") from None


def detect_layout(path: str | Path) -> str | None:
    """The dataset whose layout a folder holds ("voc", "coco", "folder"), None when none is recognisable."""
    for name, spec in DATASETS.items():
        if spec.detect is not None and spec.detect(path):
            return name
    return None


def build_dataset(cfg: DataConfig, split: str | None = None,
                  bad_items_dir: str | Path | None = None) -> SegmentationDataset:
    """The dataset named by `cfg.dataset`, split `split` (default: `cfg.train_split`).

    With ``cfg.skip_bad`` the dataset comes wrapped in `SkipBadItems`: unreadable items are replaced by the next
    readable one and recorded in ``<bad_items_dir>/bad_items.txt`` (default: a temporary folder); call
    `bad_items_report(dataset)` at the end of the run to list them.
    """
    dataset = dataset_spec(cfg.dataset).build(cfg, split or cfg.train_split)
    if cfg.skip_bad:
        dataset = SkipBadItems(dataset, bad_items_dir)
    return dataset


__all__ = [
    "DATASETS",
    "DatasetSpec",
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
    "dataset_spec",
    "detect_layout",
    "find_bad_items",
]
