"""Skipping unreadable items during training (``data.skip_bad``) and reporting them at the end.

How the engine uses it (`build_dataset` wraps automatically when ``cfg.skip_bad`` is set)::

    dataset = build_dataset(cfg.data, split, bad_items_dir=run_dir)   # SkipBadItems when data.skip_bad
    ... train through TransformedDataset(dataset, ...) and a DataLoader with any number of workers ...
    for line in bad_items_report(dataset):                             # at the end of the stage
        log.warning("skipped: %s", line)

`SkipBadItems` replaces an item that raises `DataError` by the next readable one (deterministically, so a
resumed run sees the same substitutions) and appends the message to ``<bad_items_dir>/bad_items.txt``, one line per
problem; DataLoader workers are separate processes, so the file, not memory, is what collects their reports.
The substitute's ``id`` is the one returned, so outputs keyed by id stay correct (outputs keyed by the requested
index would not: inference code should key by id, or filter with `find_bad_items` first).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from semples.data.base import DataError, RawItem, SegmentationDataset

log = logging.getLogger(__name__)

REPORT_NAME = "bad_items.txt"


class SkipBadItems(SegmentationDataset):
    """Wraps a dataset; items raising `DataError` are replaced by the next readable item and reported.

    Args:
        dataset: the dataset to read.
        report_dir: folder for ``bad_items.txt`` (a run folder); default: a fresh temporary folder.
        max_consecutive: give up (DataError) after this many unreadable items in a row.
    """

    def __init__(self, dataset: SegmentationDataset, report_dir: str | Path | None = None,
                 max_consecutive: int = 100) -> None:
        self.dataset = dataset
        self.classes = dataset.classes
        self.ids = dataset.ids
        self.name = dataset.name
        self.has_masks = dataset.has_masks
        self.max_consecutive = max_consecutive
        folder = Path(report_dir) if report_dir is not None else Path(tempfile.mkdtemp(prefix="semples-bad-"))
        folder.mkdir(parents=True, exist_ok=True)
        self.report_file = folder / REPORT_NAME
        self._reported: set[str] = set()

    def __getattr__(self, name: str):
        # Reader-specific attributes (split, root, warnings, ...) pass through; only called when not found here.
        if name.startswith("__") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def _record(self, message: str) -> None:
        if message in self._reported:
            return
        self._reported.add(message)
        log.warning("skipping bad item: %s", message)
        line = (message.replace("\n", " ") + "\n").encode()
        fd = os.open(self.report_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)  # one write per line: appends from several worker processes do not interleave
        finally:
            os.close(fd)

    def _first_good(self, index: int, read):
        n = len(self.dataset)
        for step in range(min(self.max_consecutive, n)):
            j = (index + step) % n
            try:
                return read(j)
            except DataError as e:
                self._record(str(e))
        raise DataError(f"{self.max_consecutive} unreadable items in a row from index {index} of {self.name}; "
                        f"see {self.report_file}")

    def labels(self, index: int) -> np.ndarray:
        return self._first_good(index, self.dataset.labels)

    def load_image(self, index: int) -> Image.Image:
        return self.dataset.load_image(index)

    def load_mask(self, index: int) -> np.ndarray | None:
        return self.dataset.load_mask(index)

    def __getitem__(self, index: int) -> RawItem:
        return self._first_good(index, self.dataset.__getitem__)

    def report(self) -> list[str]:
        """Problems seen so far by this process and its DataLoader workers (sorted, unique)."""
        lines = set(self._reported)
        try:
            lines.update(line for line in self.report_file.read_text().splitlines() if line.strip())
        except FileNotFoundError:
            pass
        return sorted(lines)


def _chain(dataset: object):
    seen = set()
    while dataset is not None and id(dataset) not in seen:
        seen.add(id(dataset))
        yield dataset
        dataset = getattr(dataset, "dataset", None) if "dataset" in getattr(dataset, "__dict__", {}) else None


def bad_items_report(dataset: object) -> list[str]:
    """Every bad item skipped so far, one line each (``<file>: <problem>``); [] when nothing was skipped.

    Accepts the dataset itself or any wrapper whose ``.dataset`` leads to it (TransformedDataset, SkipBadItems).
    Includes list/label-file entries left out at construction under ``skip_bad``.
    """
    lines: list[str] = []
    for d in _chain(dataset):
        if isinstance(d, SkipBadItems):
            lines.extend(d.report())
        lines.extend(getattr(d, "bad_entries", None) or [])
    return sorted(dict.fromkeys(lines))


def find_bad_items(dataset: SegmentationDataset, decode: bool = True, progress: bool = False) -> dict[int, list[str]]:
    """Reads every item; index -> its problems for the items that fail (a full scan: use before inference).

    Uses the reader's `check_item` when it has one (all problems of an item), else tries ``dataset[i]``.
    """
    from tqdm.auto import tqdm

    check = getattr(dataset, "check_item", None)
    out: dict[int, list[str]] = {}
    for i in tqdm(range(len(dataset)), desc="checking items", disable=not progress, leave=False):
        if check is not None:
            problems = check(i, decode=decode)
        else:
            try:
                dataset[i]
                problems = []
            except DataError as e:
                problems = [str(e)]
        if problems:
            out[i] = problems
    return out
