"""PASCAL VOC 2012 (+ SBD "train_aug"): images, index masks and image-level labels.

Layout (`data.root` may be the folder holding ``VOCdevkit/``, ``VOCdevkit`` itself, the folder holding
``VOC2012/``, or ``VOC2012`` itself)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png          palette PNG: 0 background, 1..20 classes, 255 ignore
    VOC2012/SegmentationClassAug/<id>.png       optional (the 10,582 + 1,449 "aug" masks, grayscale PNGs)
    VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    VOC2012/ImageSets/SegmentationAug/train_aug.txt   optional

Splits: any ``ImageSets/Segmentation/<split>.txt`` (train 1,464; val 1,449), and ``train_aug`` (10,582) from
``data.options.train_aug_list``, ``ImageSets/SegmentationAug/train_aug.txt``, or derived: the ids with a
``SegmentationClassAug`` mask (or in the SBD lists of ``data.options.sbd_root``) plus ``train``, minus ``val``.
List lines may be bare ids or DeepLab-style ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`` pairs.

Image-level labels: derived from the masks (classes present, 0 and 255 ignored) and cached under the user cache
folder (`semples.data.cache`), or read from ``data.options.labels_file`` (CSV/JSON, see `semples.data.io`).
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from semples.data.base import DataError
from semples.data.cache import JsonCache, cache_key, file_stamp
from semples.data.classes import _VARIANTS, class_matcher, normalise_class_name, voc_classes
from semples.data.file_dataset import FileDataset, parse_options, resolve_path
from semples.data.io import (
    IMAGE_EXTENSIONS,
    check_mask_values,
    labels_from_mask,
    read_id_list,
    read_labels_file,
    read_mask,
)

log = logging.getLogger(__name__)

OPTIONS: dict[str, object] = {
    "labels_file": None,  # CSV/JSON image -> class names, instead of labels derived from masks
    "train_aug_list": None,  # list file of the train_aug split
    "sbd_root": None,  # SBD "dataset" folder (cls/*.mat, train.txt, val.txt): train_aug ids and masks
    "mask_dir": None,  # read masks from this folder only (absolute, or relative to VOC2012/)
    "empty_labels": "error",  # items whose mask has no foreground class: error | keep | drop
    "exif_transpose": True,  # apply EXIF orientation to images (masks follow)
    "label_cache": True,  # cache derived labels under the user cache folder
    "cache_dir": None,  # cache folder (default $SEMPLES_CACHE_DIR or ~/.cache/semples)
}

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_PATH_ID_RE = re.compile(r"^/?JPEGImages/([^/]+)\.jpe?g$", re.IGNORECASE)


def find_voc_root(root: str | Path) -> Path:
    """The ``VOC2012`` folder under `root` (see the module docstring for what `root` may be)."""
    root = Path(root).expanduser()
    candidates = [root / "VOC2012", root / "VOCdevkit" / "VOC2012", root]
    for c in candidates:
        if (c / "JPEGImages").is_dir():
            return c
    if not root.exists():
        raise DataError(f"{root}: VOC root folder does not exist")
    raise DataError(f"{root}: no VOC2012 layout found (looked for JPEGImages/ in "
                    f"{', '.join(str(c) for c in candidates)})")


def parse_list_line(line: str) -> str:
    """One list-file line -> VOC id. Raises ValueError for ids that are not plain file names (``../x``)."""
    first = line.split()[0]
    if "/" in first or "\\" in first:
        m = _PATH_ID_RE.match(first.replace("\\", "/"))
        if m is None or ".." in first:
            raise ValueError(f"entry {first!r} is not a VOC id or /JPEGImages/<id>.jpg path (it may not leave "
                             f"the dataset folder)")
        first = m.group(1)
    if not _ID_RE.match(first) or first in (".", ".."):
        raise ValueError(f"entry {first!r} is not a valid VOC id")
    return first


# FMA-WSSS's background classes on VOC: the 25 words CLIP-ES adds to the 20 object classes (METHOD.md §2)
VOC_BACKGROUND_NAMES: tuple[str, ...] = (
    "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea", "railway",
    "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock", "street", "valley",
    "bridge", "sign",
)


def looks_like_voc(path: str | Path) -> bool:
    """True when `path` holds a VOC2012 layout (JPEGImages under it, VOC2012/ or VOCdevkit/VOC2012/)."""
    p = Path(path)
    return any((c / "JPEGImages").is_dir() for c in (p, p / "VOC2012", p / "VOCdevkit" / "VOC2012"))


def available_splits(root: str | Path, options: dict | None = None) -> list[str]:
    """Splits that can be built under `root` (list files found, plus train_aug when derivable)."""
    voc = find_voc_root(root)
    opts = parse_options(options, OPTIONS, "voc")
    seg = voc / "ImageSets" / "Segmentation"
    splits = sorted(p.stem for p in seg.glob("*.txt")) if seg.is_dir() else []
    if "test" in splits:
        splits.remove("test")
    if opts["train_aug_list"] or (voc / "ImageSets" / "SegmentationAug" / "train_aug.txt").is_file() \
            or (voc / "SegmentationClassAug").is_dir() or opts["sbd_root"]:
        splits.append("train_aug")
    order = {"train": 0, "val": 1, "train_aug": 2}
    return sorted(splits, key=lambda s: (order.get(s, 3), s))


class VOCDataset(FileDataset):
    """PASCAL VOC 2012 segmentation split.

    Args:
        root: see `find_voc_root`.
        split: "train", "val", "train_aug", or any list under ``ImageSets/Segmentation``.
        prompt_names: "plain", "clims" or a names file (`semples.data.classes`).
        options: ``data.options`` (keys in `OPTIONS`).
        skip_bad: record unusable list entries instead of raising.
    """

    name = "voc"

    def __init__(self, root: str | Path, split: str, prompt_names: str = "plain", options: dict | None = None,
                 skip_bad: bool = False) -> None:
        super().__init__()
        self.opts = parse_options(options, OPTIONS, "voc")
        self._skip_bad = skip_bad
        self.root = find_voc_root(root)
        self.split = split
        self.classes = voc_classes(prompt_names)
        self.exif_transpose = bool(self.opts["exif_transpose"])
        self.image_dir = self.root / "JPEGImages"
        sbd = resolve_path(self.opts["sbd_root"], self.root)
        self.sbd_root = sbd
        if sbd is not None and not (sbd / "cls").is_dir():
            raise DataError(f"{sbd}: not an SBD dataset folder (no cls/ inside); data.options.sbd_root should "
                            f"point at benchmark_RELEASE/dataset")

        ids = self._read_ids()
        self._mask_dirs = self._mask_dirs_for_split()
        self.has_masks = bool(self._mask_dirs)
        self._mask_paths: dict[str, Path | None] = {i: self._find_mask(i) for i in ids}
        self._image_paths = {i: self._find_image(i) for i in ids}

        labels, errors, where = self._derive_labels(ids)
        dropped = self._set_items(ids, labels, errors, where, str(self.opts["empty_labels"]))
        if dropped:
            msg = f"{len(dropped)} images of {split} without a foreground class left out (empty_labels: drop)"
            log.info("voc: %s", msg)
            self.notes.append(msg)
        log.debug("voc %s: %d images from %s", split, len(self.ids), self.root)

    # ------------------------------------------------------------------ ids and files
    def _list_file(self) -> Path:
        if self.split == "train_aug":
            given = resolve_path(self.opts["train_aug_list"], self.root)
            if given is not None:
                return given
            return self.root / "ImageSets" / "SegmentationAug" / "train_aug.txt"
        return self.root / "ImageSets" / "Segmentation" / f"{self.split}.txt"

    def _read_ids(self) -> list[str]:
        path = self._list_file()
        if self.split == "train_aug" and not path.is_file() and not self.opts["train_aug_list"]:
            return self._derive_train_aug()
        if not path.is_file():
            splits = available_splits(self.root, self.opts)
            raise DataError(f"{path}: list file of split {self.split!r} is missing; available splits: "
                            f"{', '.join(splits) or 'none'}")
        lst = read_id_list(path, parse_list_line)
        self.warnings.extend(lst.duplicates)
        self._handle_bad_entries(lst.invalid, self._skip_bad, f"voc {self.split}")
        return lst.ids

    def _derive_train_aug(self) -> list[str]:
        seg = self.root / "ImageSets" / "Segmentation"
        train = read_id_list(seg / "train.txt", parse_list_line).ids if (seg / "train.txt").is_file() else []
        val = set(read_id_list(seg / "val.txt", parse_list_line).ids) if (seg / "val.txt").is_file() else set()
        pool: set[str] = set(train)
        aug = self.root / "SegmentationClassAug"
        if self.sbd_root is not None:
            for name in ("train.txt", "val.txt"):
                if (self.sbd_root / name).is_file():
                    pool.update(read_id_list(self.sbd_root / name, parse_list_line).ids)
            source = f"SBD lists in {self.sbd_root}"
        elif aug.is_dir():
            pool.update(p.stem for p in aug.glob("*.png"))
            source = str(aug)
        else:
            raise DataError(f"{self._list_file()}: no train_aug list; give data.options.train_aug_list, or "
                            f"data.options.sbd_root, or put the SegmentationClassAug masks under {self.root}")
        ids = sorted(pool - val)
        self.notes.append(f"train_aug derived from {source} + train - val: {len(ids)} ids (VOC 2012 + SBD: 10,582)")
        log.info("voc: train_aug derived from %s + train - val: %d ids", source, len(ids))
        return ids

    def _mask_dirs_for_split(self) -> list[Path]:
        given = resolve_path(self.opts["mask_dir"], self.root)
        if given is not None:
            if not given.is_dir():
                raise DataError(f"{given}: data.options.mask_dir does not exist")
            return [given]
        cls, aug = self.root / "SegmentationClass", self.root / "SegmentationClassAug"
        order = [aug, cls] if self.split == "train_aug" else [cls, aug]
        dirs = [d for d in order if d.is_dir()]
        if self.split == "train_aug" and self.sbd_root is not None:
            dirs.append(self.sbd_root / "cls")
        return dirs

    def _find_mask(self, image_id: str) -> Path | None:
        if not self._mask_dirs:
            return None
        for d in self._mask_dirs:
            p = d / (f"{image_id}.mat" if d.name == "cls" and d.parent == self.sbd_root else f"{image_id}.png")
            if p.is_file():
                return p
        return self._mask_dirs[0] / f"{image_id}.png"  # missing: reads raise "mask file is missing" naming it

    def _find_image(self, image_id: str) -> Path:
        p = self.image_dir / f"{image_id}.jpg"
        if p.is_file():
            return p
        for ext in IMAGE_EXTENSIONS:
            q = self.image_dir / f"{image_id}{ext}"
            if q.is_file():
                return q
        return p

    def image_path(self, index: int) -> Path:
        return self._image_paths[self.ids[index]]

    def mask_path(self, index: int) -> Path | None:
        return self._mask_paths.get(self.ids[index])

    def read_stored_mask(self, index: int) -> np.ndarray:
        p = self.mask_path(index)
        if p is not None and p.suffix == ".mat":
            return read_sbd_mat(p, len(self.classes))
        return super().read_stored_mask(index)

    # ------------------------------------------------------------------ labels
    def _derive_labels(self, ids: list[str]) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
        labels_file = resolve_path(self.opts["labels_file"], self.root)
        if labels_file is not None:
            return self._labels_from_file(ids, labels_file)
        if not self.has_masks:
            raise DataError(f"{self.root}: split {self.split!r} has no masks to derive image-level labels from; "
                            f"give data.options.labels_file")
        return self._labels_from_masks(ids)

    def _labels_from_file(self, ids: list[str], path: Path):
        entries = read_labels_file(path)
        by_id = {}
        for key, entry in entries.items():
            by_id[Path(key.replace("\\", "/")).stem if Path(key).suffix.lower() in IMAGE_EXTENSIONS
                  else key] = entry
        match = class_matcher(self.classes, _VARIANTS["voc"])
        labels, errors, where = {}, {}, {}
        k = len(self.classes)
        for i in ids:
            entry = by_id.get(i)
            where[i] = str(path)
            if entry is None:
                errors[i] = f"{path}: no entry for image {i!r}"
                continue
            where[i] = entry.where
            vec = np.zeros(k, dtype=np.float32)
            unknown = [n for n in entry.names if normalise_class_name(n) not in match]
            if unknown:
                errors[i] = (f"{entry.where}: unknown class {unknown[0]!r} for image {i!r}; valid classes are: "
                             f"{', '.join(self.classes.names)}")
                continue
            for n in entry.names:
                vec[match[normalise_class_name(n)]] = 1.0
            labels[i] = vec
        extra = len(set(by_id) - set(ids))
        if extra:
            self.notes.append(f"{path}: {extra} entries are not in split {self.split!r} (ignored)")
        return labels, errors, where

    def _labels_from_masks(self, ids: list[str]):
        k = len(self.classes)
        stamps = [(i, *file_stamp(self._mask_paths[i])) for i in ids]
        cache = JsonCache("labels", self.opts["cache_dir"], bool(self.opts["label_cache"]))
        key = cache_key("voc-mask-labels", stamps)
        cached = cache.get(key) or {}
        labels: dict[str, np.ndarray] = {}
        errors: dict[str, str] = {}
        where = {i: str(self._mask_paths[i]) for i in ids}
        todo = []
        for i in ids:
            if i in cached:
                vec = np.zeros(k, dtype=np.float32)
                vec[cached[i]] = 1.0
                labels[i] = vec
            else:
                todo.append(i)
        if todo:
            from tqdm.auto import tqdm

            def derive(i: str) -> tuple[str, np.ndarray | None, str | None]:
                try:
                    p = self._mask_paths[i]
                    mask = read_sbd_mat(p, k) if p.suffix == ".mat" else read_mask(p, k)
                    return i, labels_from_mask(mask, k), None
                except DataError as e:
                    return i, None, str(e)

            with ThreadPoolExecutor(max_workers=4) as pool:
                results = pool.map(derive, todo)
                for i, vec, err in tqdm(results, total=len(todo), desc=f"VOC {self.split}: labels from masks",
                                        disable=len(todo) < 500, leave=False):
                    if err is not None:
                        errors[i] = err
                    else:
                        labels[i] = vec
            cache.put(key, {i: np.flatnonzero(v).tolist() for i, v in labels.items()})
        return labels, errors, where


def read_sbd_mat(path: Path, num_classes: int) -> np.ndarray:
    """The class mask of an SBD ``cls/<id>.mat`` file (GTcls.Segmentation) as (H, W) uint8."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"{path}: reading SBD .mat masks needs scipy (pip install scipy)") from None
    if not path.is_file():
        raise DataError(f"{path}: mask file is missing")
    try:
        mat = loadmat(str(path), squeeze_me=False, struct_as_record=True)
        seg = np.asarray(mat["GTcls"]["Segmentation"][0][0])
    except Exception as e:  # scipy raises a zoo of types for bad files
        raise DataError(f"{path}: not a readable SBD cls .mat file ({type(e).__name__}: {e})") from None
    if seg.ndim != 2 or seg.min(initial=0) < 0 or seg.max(initial=0) > 255:
        raise DataError(f"{path}: SBD mask is not a 2-D array of labels")
    mask = seg.astype(np.uint8)
    check_mask_values(mask, num_classes, path)
    return mask


def build_voc(cfg, split: str) -> VOCDataset:
    """`DATASETS` entry: VOC from a `DataConfig`."""
    if not cfg.root:
        raise DataError("data.root is not set: point it at your VOCdevkit (or VOC2012) folder")
    return VOCDataset(cfg.root, split, cfg.prompt_names, cfg.options, skip_bad=cfg.skip_bad)
