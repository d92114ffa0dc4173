"""What the file-backed readers (VOC, COCO, folder) share: per-item errors, image/mask alignment, item checks.

A reader decides at construction which items exist and their image-level labels. Items it already knows are
unusable (a label naming an unknown class, a mask that cannot be read to derive labels, no label at all) stay in
the list and raise a one-line `DataError` when read, so nothing disappears silently: the training loop either
stops with that message or, with ``data.skip_bad``, skips the item and reports it (`semples.data.skip`).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from semples.data.base import DataError, RawItem, SegmentationDataset
from semples.data.io import image_header, orient_mask, read_image, read_mask

log = logging.getLogger(__name__)

EMPTY_LABEL_POLICIES = ("error", "keep", "drop")


def parse_options(options: dict | None, valid: dict[str, object], dataset: str) -> dict:
    """`options` merged over the defaults in `valid`; an unknown key is a DataError listing the valid ones."""
    options = dict(options or {})
    unknown = sorted(k for k in options if k not in valid)
    if unknown:
        raise DataError(f"unknown data.options {', '.join(map(repr, unknown))} for dataset {dataset!r}; valid "
                        f"options are: {', '.join(valid)}")
    out = dict(valid)
    out.update(options)
    if "empty_labels" in out and out["empty_labels"] not in EMPTY_LABEL_POLICIES:
        raise DataError(f"data.options.empty_labels must be one of {', '.join(EMPTY_LABEL_POLICIES)}, "
                        f"got {out['empty_labels']!r}")
    return out


def resolve_path(value: str | None, base: Path) -> Path | None:
    """A user path option: absolute, ``~``-expanded, or relative to `base`."""
    if value in (None, ""):
        return None
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else base / p


class FileDataset(SegmentationDataset):
    """Base of the file-backed readers. Subclasses call `_set_items` and implement `image_path` (+ masks).

    Attributes:
        warnings: problems that do not stop training (duplicate list entries, images without a labels entry).
        notes: facts worth a line in `semples data check` (e.g. COCO images without annotations excluded).
        bad_entries: list entries that were skipped at construction because ``skip_bad`` was set.
    """

    exif_transpose: bool = True

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.bad_entries: list[str] = []
        self._labels = np.zeros((0, 0), dtype=np.float32)
        self._item_errors: dict[int, str] = {}

    # ------------------------------------------------------------------ construction helpers
    def _set_items(self, ids: list[str], labels: dict[str, np.ndarray], errors: dict[str, str],
                   where: dict[str, str], empty_labels: str) -> list[str]:
        """Fixes the item list. Returns the ids dropped by ``empty_labels="drop"``.

        Args:
            ids: item ids in order.
            labels: id -> (K,) multi-hot for items whose labels are known.
            errors: id -> one-line problem for items known to be unusable.
            where: id -> the file to name when an item has no foreground label.
            empty_labels: "error" (the item is bad), "keep" (all-zero labels) or "drop" (left out, counted).
        """
        k = len(self.classes)
        kept, dropped = [], []
        item_errors: dict[str, str] = {}
        for i in ids:
            if i in errors:
                kept.append(i)
                item_errors[i] = errors[i]
                continue
            vec = labels.get(i)
            if vec is None:
                kept.append(i)
                item_errors[i] = f"{where.get(i, i)}: no image-level labels for {i!r}"
            elif not vec.any():
                if empty_labels == "drop":
                    dropped.append(i)
                    continue
                kept.append(i)
                if empty_labels == "error":
                    item_errors[i] = (f"{where.get(i, i)}: image has no foreground class label "
                                      f"(data.options.empty_labels: keep | drop to accept or leave out such images)")
            else:
                kept.append(i)
        self.ids = kept
        self._labels = np.zeros((len(kept), k), dtype=np.float32)
        for n, i in enumerate(kept):
            vec = labels.get(i)
            if vec is not None:
                self._labels[n] = vec
        self._item_errors = {n: item_errors[i] for n, i in enumerate(kept) if i in item_errors}
        return dropped

    def _handle_bad_entries(self, messages: Iterable[str], skip_bad: bool, what: str) -> None:
        """Bad list/label entries: a DataError (first one + count) unless `skip_bad`, then recorded."""
        messages = list(messages)
        if not messages:
            return
        if not skip_bad:
            more = f" (and {len(messages) - 1} more; `semples data check` lists them)" if len(messages) > 1 else ""
            raise DataError(f"{messages[0]}{more}")
        log.warning("%s: skipping %d bad entries (data.skip_bad), e.g. %s", what, len(messages), messages[0])
        self.bad_entries.extend(messages)

    # ------------------------------------------------------------------ the contract
    @abc.abstractmethod
    def image_path(self, index: int) -> Path:
        """The image file of item `index` (every reader defines where its images live)."""

    def mask_path(self, index: int) -> Path | None:
        """The mask file of item `index` (None: no mask file, e.g. masks built from annotations)."""
        return None

    def has_mask_file(self, index: int) -> bool:
        """Whether item `index` has a mask (file or annotations) in a split that has masks."""
        p = self.mask_path(index)
        return p is not None and p.is_file()

    def read_stored_mask(self, index: int) -> np.ndarray:
        """(H, W) uint8 mask of item `index` in the stored-pixel frame of its image (before EXIF rotation)."""
        p = self.mask_path(index)
        if p is None:
            raise DataError(f"{self.image_path(index)}: no mask for item {self.ids[index]!r}")
        return read_mask(p, len(self.classes))

    def mask_source(self, index: int) -> str:
        """What to name in a message about the mask of item `index`."""
        p = self.mask_path(index)
        return str(p) if p is not None else f"mask of {self.ids[index]!r}"

    def labels(self, index: int) -> np.ndarray:
        err = self._item_errors.get(index)
        if err is not None:
            raise DataError(err)
        return self._labels[index]

    def known_labels(self) -> np.ndarray:
        """(N, K) labels of all items (rows of items known to be bad are zero); no file access."""
        return self._labels

    def known_errors(self) -> dict[int, str]:
        """index -> problem for the items already known to be unusable."""
        return dict(self._item_errors)

    def load_image(self, index: int) -> Image.Image:
        return read_image(self.image_path(index), self.exif_transpose)[0]

    def _aligned_mask(self, index: int, image_size: tuple[int, int], orientation: int) -> np.ndarray:
        mask = orient_mask(self.read_stored_mask(index), orientation, image_size)
        if (mask.shape[1], mask.shape[0]) != tuple(image_size):
            raise DataError(f"{self.mask_source(index)}: mask is {mask.shape[1]}x{mask.shape[0]} but image "
                            f"{self.image_path(index)} is {image_size[0]}x{image_size[1]}")
        return mask

    def load_mask(self, index: int) -> np.ndarray | None:
        if not self.has_masks:
            return None
        size, orientation = image_header(self.image_path(index), self.exif_transpose)
        return self._aligned_mask(index, size, orientation)

    def __getitem__(self, index: int) -> RawItem:
        if not 0 <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} items")
        labels = self.labels(index)
        image, orientation = read_image(self.image_path(index), self.exif_transpose)
        mask = self._aligned_mask(index, image.size, orientation) if self.has_masks else None
        return RawItem(self.ids[index], image, labels, mask)

    def check_mask_header(self, index: int, image_size: tuple[int, int] | None, orientation: int) -> None:
        """Cheap mask check from file headers: exists, and its size fits the image (stored or displayed frame)."""
        p = self.mask_path(index)
        if p is None:
            return
        if not p.is_file():
            raise DataError(f"{p}: mask file is missing")
        try:
            with Image.open(p) as m:
                w, h = m.size
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{p}: unreadable mask header ({e})") from None
        if image_size is None:
            return
        stored = (image_size[1], image_size[0]) if orientation in (5, 6, 7, 8) else tuple(image_size)
        if (w, h) not in (tuple(image_size), stored):
            raise DataError(f"{p}: mask is {w}x{h} but image {self.image_path(index)} is "
                            f"{image_size[0]}x{image_size[1]}")

    def check_item(self, index: int, decode: bool = True) -> list[str]:
        """Every problem of item `index` (empty when it loads). `decode=False` reads file headers only."""
        problems: list[str] = []

        def add(err: DataError) -> None:
            if str(err) not in problems:
                problems.append(str(err))

        try:
            self.labels(index)
        except DataError as e:
            add(e)
        size, orientation = None, 1
        try:
            if decode:
                image, orientation = read_image(self.image_path(index), self.exif_transpose)
                size = image.size
            else:
                size, orientation = image_header(self.image_path(index), self.exif_transpose)
        except DataError as e:
            add(e)
        if self.has_masks:
            try:
                if not decode:
                    self.check_mask_header(index, size, orientation)
                elif size is None:
                    self.read_stored_mask(index)
                else:
                    self._aligned_mask(index, size, orientation)
            except DataError as e:
                add(e)
        return problems
