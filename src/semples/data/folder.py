"""A user's own data: a folder of images, a labels file (image -> class names), optional masks and class list.

Layout (every name can be changed through ``data.options``)::

    <root>/images/...            the images (any depth; or the images directly in <root>)
    <root>/labels.csv            or labels.json: image -> class names (formats in `semples.data.io.read_labels_file`)
    <root>/classes.txt           optional: one class name per line, in label order (mask value k = line k)
    <root>/masks/<image>.png     optional: index masks, same relative path as the image with .png
    <root>/<split>.txt           optional: the images of a split, one per line

Images are named in the labels and list files by their path relative to the image folder, with or without the
extension. Without ``classes.txt`` (or ``data.options.classes``) the classes are the sorted set of the names in
the labels file. Without a list file, the splits ``train`` and ``all`` are every labelled image; other splits
need a list file. Images under the image folder that the labels file does not mention are reported, not used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

import numpy as np

from semples.data.base import DataError
from semples.data.classes import class_matcher, custom_classes, normalise_class_name
from semples.data.file_dataset import FileDataset, parse_options, resolve_path
from semples.data.io import (
    IMAGE_EXTENSIONS,
    read_id_list,
    read_labels_file,
    safe_relative_path,
    strip_image_extension,
)

log = logging.getLogger(__name__)

OPTIONS: dict[str, object] = {
    "images": None,  # image folder (default <root>/images if it exists, else <root>)
    "labels_file": None,  # default <root>/labels.csv or <root>/labels.json
    "classes": None,  # list of class names, or a text file with one per line (default <root>/classes.txt)
    "masks": None,  # mask folder (default <root>/masks if it exists)
    "lists_dir": None,  # folder holding <split>.txt list files (default <root>)
    "empty_labels": "error",  # images whose labels entry names no class: error | keep | drop
    "exif_transpose": True,
}


def _labels_file(root: Path, opts: dict) -> Path:
    given = resolve_path(opts["labels_file"], root)
    if given is not None:
        return given
    for name in ("labels.csv", "labels.json", "labels.tsv"):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: no labels file (looked for labels.csv, labels.json, labels.tsv); "
                    f"set data.options.labels_file")


def looks_like_folder(path: str | Path) -> bool:
    """True when `path` holds a labels file (labels.csv / labels.json / labels.tsv)."""
    return any((Path(path) / n).is_file() for n in ("labels.csv", "labels.json", "labels.tsv"))


def available_splits(root: str | Path, options: dict | None = None) -> list[str]:
    """"all" plus the splits that have a ``<split>.txt`` list file."""
    root = Path(root).expanduser()
    opts = parse_options(options, OPTIONS, "folder")
    lists = resolve_path(opts["lists_dir"], root) or root
    names = {p.stem for p in lists.glob("*.txt") if p.stem not in ("classes", "labels")} if lists.is_dir() else set()
    return ["all", *sorted(names)]


class FolderDataset(FileDataset):
    """Images + labels file (+ optional masks) from a folder.

    Args:
        root: the folder (see the module docstring).
        split: a list-file name, or "train" / "all" for every labelled image when there is no list file.
        prompt_names: "plain" (class names with '_' read as spaces) or a names file.
        options: ``data.options`` (keys in `OPTIONS`).
        skip_bad: record unusable list/labels entries instead of raising.
    """

    name = "folder"

    def __init__(self, root: str | Path, split: str = "all", prompt_names: str = "plain",
                 options: dict | None = None, skip_bad: bool = False) -> None:
        super().__init__()
        self.opts = parse_options(options, OPTIONS, "folder")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder does not exist")
        self.split = split
        self.exif_transpose = bool(self.opts["exif_transpose"])
        self.image_dir = resolve_path(self.opts["images"], self.root) or (
            self.root / "images" if (self.root / "images").is_dir() else self.root)
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: image folder does not exist")
        self.mask_dir = resolve_path(self.opts["masks"], self.root) or (
            self.root / "masks" if (self.root / "masks").is_dir() else None)
        if self.mask_dir is not None and not self.mask_dir.is_dir():
            raise DataError(f"{self.mask_dir}: mask folder does not exist")
        self.has_masks = self.mask_dir is not None
        self.labels_file = _labels_file(self.root, self.opts)

        files = self._index_images()
        entries = read_labels_file(self.labels_file)
        bad: list[str] = []
        missing: dict[str, str] = {}
        labelled: dict[str, tuple[str, object]] = {}  # id -> (relative image path, entry)
        for key, entry in entries.items():
            rel = safe_relative_path(key)
            if rel is None:
                bad.append(f"{entry.where}: image {key!r} leaves the image folder")
                continue
            found = files.get(rel) or files.get(strip_image_extension(rel))
            if found is None:  # kept as an item that fails when read: "image file is missing"
                found = rel
                missing[strip_image_extension(rel)] = f"{self.image_dir / rel}: image file is missing " \
                                                      f"(listed in {entry.where})"
            item_id = strip_image_extension(found)
            if item_id in labelled:
                self.warnings.append(f"{entry.where}: image {key!r} is listed again (as "
                                     f"{labelled[item_id][1].where}); labels merged")
                labelled[item_id][1].names.extend(n for n in entry.names if n not in labelled[item_id][1].names)
                continue
            labelled[item_id] = (found, entry)
        self.classes = self._class_table(entries, prompt_names)

        ids = self._split_ids(labelled, bad)
        self._handle_bad_entries(bad, skip_bad, f"folder {self.root}")
        unlabelled = sorted(set(strip_image_extension(f) for f in files.values()) - set(labelled))
        if unlabelled:
            self.warnings.append(f"{self.image_dir}: {len(unlabelled)} images have no entry in {self.labels_file.name} "
                                 f"and are not used (e.g. {unlabelled[0]})")
        self._image_paths = {i: self.image_dir / labelled[i][0] for i in ids}

        match = class_matcher(self.classes)
        labels, errors, where = {}, {}, {}
        k = len(self.classes)
        for i in ids:
            entry = labelled[i][1]
            where[i] = entry.where
            if i in missing:
                errors[i] = missing[i]
                continue
            unknown = [n for n in entry.names if normalise_class_name(n) not in match]
            if unknown:
                errors[i] = (f"{entry.where}: unknown class {unknown[0]!r} for image {i!r}; valid classes are: "
                             f"{', '.join(self.classes.names)}")
                continue
            vec = np.zeros(k, dtype=np.float32)
            for n in entry.names:
                vec[match[normalise_class_name(n)]] = 1.0
            labels[i] = vec
        dropped = self._set_items(ids, labels, errors, where, str(self.opts["empty_labels"]))
        if dropped:
            self.notes.append(f"{len(dropped)} images with no class label left out (empty_labels: drop)")

    def _index_images(self) -> dict[str, str]:
        """relative path (with and without extension) -> relative path of every image under the image folder."""
        out: dict[str, str] = {}
        skip = {self.mask_dir.resolve()} if self.mask_dir is not None else set()
        for dirpath, dirnames, filenames in os.walk(self.image_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and (Path(dirpath) / d).resolve() not in skip)
            rel_dir = PurePosixPath(Path(dirpath).relative_to(self.image_dir).as_posix())
            for name in sorted(filenames):
                if Path(name).suffix.lower() not in IMAGE_EXTENSIONS or name.startswith("."):
                    continue
                rel = str(rel_dir / name) if str(rel_dir) != "." else name
                out.setdefault(rel, rel)
                out.setdefault(strip_image_extension(rel), rel)
        return out

    def _class_table(self, entries: dict, prompt_names: str):
        given = self.opts["classes"]
        if given is None and (self.root / "classes.txt").is_file():
            given = str(self.root / "classes.txt")
        if isinstance(given, list):
            names = [str(n).strip() for n in given if str(n).strip()]
        elif given is not None:
            path = resolve_path(str(given), self.root)
            try:
                names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            except OSError as e:
                raise DataError(f"{path}: cannot read the class list ({e.strerror or e})") from None
            if len(set(names)) != len(names):
                dup = next(n for n in names if names.count(n) > 1)
                raise DataError(f"{path}: class {dup!r} is listed twice")
        else:
            names = sorted({n for e in entries.values() for n in e.names})
            log.info("folder: %d classes from %s (no classes.txt): %s", len(names), self.labels_file.name,
                     ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))
        if not names:
            raise DataError(f"{self.labels_file}: no class names found (and no class list given)")
        normalised = [normalise_class_name(n) for n in names]
        if len(set(normalised)) != len(normalised):
            raise DataError(f"{self.root}: class names differ only by case/spaces/underscores: {names}")
        return custom_classes(names, prompt_names)

    def _split_ids(self, labelled: dict, bad: list[str]) -> list[str]:
        lists = resolve_path(self.opts["lists_dir"], self.root) or self.root
        path = lists / f"{self.split}.txt"
        if not path.is_file():
            if self.split in ("train", "all"):
                return list(labelled)
            raise DataError(f"{path}: list file of split {self.split!r} is missing (splits without a list file: "
                            f"train, all)")

        def parse(line: str) -> str:
            rel = safe_relative_path(line)
            if rel is None:
                raise ValueError(f"entry {line!r} leaves the image folder")
            rel = strip_image_extension(rel)
            if rel not in labelled:
                raise ValueError(f"image {line!r} has no entry in {self.labels_file.name}")
            return rel

        lst = read_id_list(path, parse)
        self.warnings.extend(lst.duplicates)
        bad.extend(lst.invalid)
        return lst.ids

    def image_path(self, index: int) -> Path:
        return self._image_paths[self.ids[index]]

    def mask_path(self, index: int) -> Path | None:
        return self.mask_dir / f"{self.ids[index]}.png" if self.mask_dir is not None else None


def build_folder(cfg, split: str) -> FolderDataset:
    """`DATASETS` entry: a folder dataset from a `DataConfig`."""
    if not cfg.root:
        raise DataError("data.root is not set: point it at the folder holding your images and labels file")
    return FolderDataset(cfg.root, split, cfg.prompt_names, cfg.options, skip_bad=cfg.skip_bad)
