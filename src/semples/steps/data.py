"""Steps data check and data export-masks (`semples data ...`): which dataset a target names, its check, and the
one-off export of masks that are built on the fly (COCO)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from semples.data import DataConfig, dataset_spec, detect_layout
from semples.errors import DataError


def target_config(target: str | Path, *, dataset: str | None = None, overrides: Sequence[str] = ()
                  ) -> tuple[DataConfig, list[str] | None]:
    """The `DataConfig` a target names — a dataset folder (layout detected unless `dataset`), a YAML config file or
    a preset — and, for configs, their train and eval splits (None for folders: every split found)."""
    from semples.config import load_config

    folder = Path(target).expanduser()
    if folder.is_dir():
        name = dataset or detect_layout(folder)
        if name is None:
            raise DataError(f"{folder}: cannot tell the layout (no VOC2012/JPEGImages, annotations/instances_*.json "
                            f"or labels.csv/json); pass --dataset voc|coco|folder")
        return load_config(None, [f"data.dataset={name}", f"data.root={folder}", *overrides]).data, None
    cfg = load_config(target, list(overrides)).data
    if dataset is not None and dataset != cfg.dataset:
        raise DataError(f"--dataset {dataset} contradicts data.dataset={cfg.dataset} in {target}")
    return cfg, list(dict.fromkeys([cfg.train_split, cfg.eval_split]))


def check(cfg: DataConfig, splits: Sequence[str] | None = None, *, decode: bool = True, limit: int | None = None,
          workers: int = 4, progress: bool = True):
    """`semples.data.check.check_dataset`: counts and every problem per split (a `CheckReport`)."""
    from semples.data.check import check_dataset

    return check_dataset(cfg, splits, decode=decode, limit=limit, workers=workers, progress=progress)


def export_masks(cfg: DataConfig, splits: Sequence[str] | None = None, *, out: str | Path | None = None,
                 overwrite: bool = False) -> list[tuple[object, int, int]]:
    """Writes the masks of a dataset whose masks are built on the fly (COCO) to PNG once, per split.

    Returns:
        (dataset, written, already there) per split.

    Raises:
        DataError: the dataset has nothing to export (its registry entry has no ``export_masks``).
    """
    spec = dataset_spec(cfg.dataset)
    if spec.export_masks is None:
        raise DataError(f"export-masks is for datasets whose masks are built from annotations (COCO); data.dataset "
                        f"is {cfg.dataset!r}")
    return [spec.export_masks(cfg, split, out, overwrite) for split in (splits or [cfg.train_split])]


__all__ = ["check", "export_masks", "target_config"]
