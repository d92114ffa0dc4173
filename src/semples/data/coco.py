"""MS COCO 2014 / 2017 from the official instance annotations: images, semantic masks and image-level labels.

Layout (`data.root`; file names are the official ones, both the 2014 ``COCO_train2014_<id>.jpg`` and the 2017
``<id>.jpg`` naming work)::

    <root>/annotations/instances_{train2014,val2014,train2017,val2017}.json
    <root>/images/<split>/*.jpg      or      <root>/<split>/*.jpg

Splits: ``train2014``, ``val2014``, ``train2017``, ``val2017``; ``train`` / ``val`` mean the 2014 ones when
present (``data.options.year`` picks). ``data.options.list_file`` restricts a split to the ids in a list.

Semantic masks are built from the instances (pycocotools decodes polygons and RLE):
    * the 80 categories map to labels 1..80 in official-id order (`semples.data.classes.COCO_CATEGORIES`);
      0 is background, 255 ignore;
    * crowd regions (``iscrowd: 1``) are 255;
    * overlaps: instances are painted from the largest area to the smallest, so a smaller object lying on a larger
      one stays visible; every non-crowd instance is painted over crowd regions (an individually annotated object
      wins over a crowd); ties in area keep annotation-id order;
    * polygons with fewer than three points have no area and are skipped.
Image-level labels are the categories of all of an image's annotations, crowd ones included. Images without any
annotation are left out by default (``empty_labels: drop``), which gives the COCO-WSSS counts train2014 82,081 /
val2014 40,137; the number left out is reported.

``data.options.mask_dir`` holds PNG masks (one ``<id>.png`` per image) read instead of rasterising;
``export_masks`` writes them once (`export_masks` / `semples data export-masks`). PNGs that use the official ids
(0..90, the WeakTr / PMM convention) are read with ``mask_ids: official``. See docs/datasets.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from semples.data.base import IGNORE_INDEX, DataError
from semples.data.cache import JsonCache, cache_key, cache_root, file_stamp
from semples.data.classes import (
    COCO_CATEGORIES,
    COCO_OFFICIAL_TO_CONTIGUOUS,
    coco_classes,
    coco_official_to_contiguous_lut,
)
from semples.data.file_dataset import FileDataset, parse_options, resolve_path
from semples.data.io import labels_from_mask, read_id_list, read_mask, safe_relative_path, write_mask_png

log = logging.getLogger(__name__)

OPTIONS: dict[str, object] = {
    "year": None,  # 2014 | 2017: what the splits "train" / "val" mean (default: 2014 when present)
    "annotations": None,  # instances JSON (default <root>/annotations/instances_<split>.json)
    "images_dir": None,  # image folder (default <root>/images/<split> or <root>/<split>)
    "list_file": None,  # restrict the split to these ids (file stems or numeric image ids)
    "mask_dir": None,  # PNG masks <id>.png read instead of rasterising (written by export_masks)
    "mask_ids": "contiguous",  # values in mask_dir PNGs: contiguous (1..80) | official (1..90)
    "export_masks": False,  # write missing PNG masks to mask_dir (default: a folder in the user cache) once
    "empty_labels": "drop",  # images without annotations: drop (COCO-WSSS convention) | keep | error
    "exif_transpose": True,
    "label_cache": True,
    "cache_dir": None,
}

_OFFICIAL_NAMES = dict(COCO_CATEGORIES)
_SPLITS = ("train2014", "val2014", "train2017", "val2017")


def _import_mask_utils():
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise DataError("COCO needs pycocotools: pip install pycocotools (or pip install 'semples[data]')") from None
    return mask_utils


def looks_like_coco(path: str | Path) -> bool:
    """True when `path` holds COCO annotations (annotations/instances_*.json)."""
    return any((Path(path) / "annotations").glob("instances_*.json"))


def background_names() -> tuple[str, ...]:
    """FMA-WSSS's background classes on COCO: the VOC list without "keyboard", a COCO class (our choice)."""
    from semples.data.voc import VOC_BACKGROUND_NAMES

    return tuple(n for n in VOC_BACKGROUND_NAMES if n != "keyboard")


def available_splits(root: str | Path, options: dict | None = None) -> list[str]:
    """Splits whose ``instances_<split>.json`` exists under ``<root>/annotations``."""
    root = Path(root).expanduser()
    opts = parse_options(options, OPTIONS, "coco")
    if opts["annotations"]:
        return [Path(str(opts["annotations"])).stem.replace("instances_", "")]
    ann = root / "annotations"
    found = [p.stem.replace("instances_", "") for p in sorted(ann.glob("instances_*.json"))] if ann.is_dir() else []
    return sorted(found, key=lambda s: (_SPLITS.index(s) if s in _SPLITS else 9, s))


def resolve_split(root: Path, split: str, year: object) -> str:
    """"train"/"val" -> "train2014"/"val2014" (or 2017 when only that exists, or `year` says so)."""
    if split not in ("train", "val"):
        return split
    if year is not None:
        return f"{split}{int(year)}"
    for y in (2014, 2017):
        if (root / "annotations" / f"instances_{split}{y}.json").is_file():
            return f"{split}{y}"
    return f"{split}2014"


def annotation_to_binary(mask_utils: Any, ann: dict, height: int, width: int) -> np.ndarray:
    """(H, W) uint8 0/1 mask of one instance annotation (polygons, RLE or uncompressed RLE)."""
    segm = ann.get("segmentation")
    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        if not polys:
            return np.zeros((height, width), dtype=np.uint8)
        # one polygon at a time: pycocotools reads a list whose first entry has 4 numbers as boxes
        rles = [mask_utils.frPyObjects([p], height, width)[0] for p in polys]
        rle = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, height, width)
    elif isinstance(segm, dict) and "counts" in segm:
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise ValueError("no polygon or RLE segmentation")
    m = mask_utils.decode(rle)
    if m.shape != (height, width):
        raise ValueError(f"segmentation decodes to {m.shape[1]}x{m.shape[0]}, image is {width}x{height}")
    return m


def instances_to_mask(anns: list[dict], height: int, width: int) -> np.ndarray:
    """Semantic (H, W) uint8 mask from an image's instance annotations (rule in the module docstring).

    Raises:
        ValueError: an annotation that cannot be decoded (the caller names the file).
    """
    mask_utils = _import_mask_utils()
    out = np.zeros((height, width), dtype=np.uint8)
    crowd = [a for a in anns if a.get("iscrowd")]
    things = [a for a in anns if not a.get("iscrowd")]
    for a in crowd:
        out[annotation_to_binary(mask_utils, a, height, width) > 0] = IGNORE_INDEX
    binaries = [(a, annotation_to_binary(mask_utils, a, height, width)) for a in things]
    binaries.sort(key=lambda ab: (-float(ab[0].get("area", ab[1].sum())), ab[0].get("id", 0)))
    for a, m in binaries:
        out[m > 0] = COCO_OFFICIAL_TO_CONTIGUOUS[a["category_id"]]
    return out


class COCODataset(FileDataset):
    """MS COCO instances as a semantic segmentation dataset (80 classes + background).

    Args:
        root: dataset root (see the module docstring).
        split: "train2014", "val2014", "train2017", "val2017", or "train" / "val".
        prompt_names: "plain", "clims" or a names file.
        options: ``data.options`` (keys in `OPTIONS`).
        skip_bad: record unusable list entries instead of raising.
    """

    name = "coco"

    def __init__(self, root: str | Path, split: str, prompt_names: str = "plain", options: dict | None = None,
                 skip_bad: bool = False) -> None:
        super().__init__()
        self.opts = parse_options(options, OPTIONS, "coco")
        if self.opts["mask_ids"] not in ("contiguous", "official"):
            raise DataError(f"data.options.mask_ids must be contiguous or official, got {self.opts['mask_ids']!r}")
        if self.opts["export_masks"] and self.opts["mask_ids"] == "official":
            raise DataError("data.options.export_masks writes contiguous ids (1..80); it cannot be combined with "
                            "mask_ids: official")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: COCO root folder does not exist")
        self.split = resolve_split(self.root, split, self.opts["year"])
        self.classes = coco_classes(prompt_names)
        self.exif_transpose = bool(self.opts["exif_transpose"])
        self.has_masks = True
        self.annotation_file = (resolve_path(self.opts["annotations"], self.root)
                                or self.root / "annotations" / f"instances_{self.split}.json")
        if not self.annotation_file.is_file():
            found = available_splits(self.root)
            raise DataError(f"{self.annotation_file}: annotation file of split {self.split!r} is missing; "
                            f"splits found: {', '.join(found) or 'none'}")
        self.image_dir = self._find_image_dir()
        self._lut = coco_official_to_contiguous_lut() if self.opts["mask_ids"] == "official" else None
        self._anns: dict[int, list[dict]] | None = None

        index = self._load_index()
        self._records: dict[str, tuple[int, str, int, int]] = {
            r["stem"]: (r["id"], r["file_name"], r["width"], r["height"]) for r in index["images"]}
        ids = [r["stem"] for r in index["images"]]
        bad = list(index["bad_entries"])
        ids = self._restrict_to_list(ids, bad)
        self._handle_bad_entries(bad, skip_bad, f"coco {self.split}")
        self.warnings.extend(index["warnings"])
        k = len(self.classes)
        labels, errors = {}, {}
        for r in index["images"]:
            if r.get("error"):
                errors[r["stem"]] = r["error"]
            else:
                vec = np.zeros(k, dtype=np.float32)
                vec[r["labels"]] = 1.0
                labels[r["stem"]] = vec
        where = {i: f"{self.annotation_file} (image {self._records[i][1]})" for i in ids}
        dropped = self._set_items(ids, labels, errors, where, str(self.opts["empty_labels"]))
        if dropped:
            msg = (f"{len(dropped)} of {len(ids)} images have no annotation and are left out (COCO-WSSS convention; "
                   f"data.options.empty_labels: keep to use them)")
            log.info("coco %s: %s", self.split, msg)
            self.notes.append(msg)

        self.mask_dir = resolve_path(self.opts["mask_dir"], self.root)
        if self.opts["export_masks"]:
            if self.mask_dir is None:
                self.mask_dir = self.default_mask_dir()
            export_masks(self, self.mask_dir)
        if self._anns is None and not self._all_masks_exported():
            self._ensure_annotations()  # load once here so DataLoader workers share it instead of re-reading

    # ------------------------------------------------------------------ index
    def _find_image_dir(self) -> Path:
        given = resolve_path(self.opts["images_dir"], self.root)
        if given is not None:
            if not given.is_dir():
                raise DataError(f"{given}: data.options.images_dir does not exist")
            return given
        candidates = [self.root / "images" / self.split, self.root / self.split]
        for c in candidates:
            if c.is_dir():
                return c
        raise DataError(f"{self.root}: no image folder for split {self.split!r} (looked for "
                        f"{', '.join(str(c) for c in candidates)}); set data.options.images_dir")

    def _read_json(self) -> dict:
        log.info("coco: reading %s", self.annotation_file)
        try:
            with open(self.annotation_file, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{self.annotation_file}: not valid JSON ({e})") from None
        except OSError as e:
            raise DataError(f"{self.annotation_file}: cannot read ({e.strerror or e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
                or not isinstance(data.get("annotations"), list):
            raise DataError(f"{self.annotation_file}: not a COCO instances file (needs 'images' and 'annotations')")
        for cat in data.get("categories", []):
            cid, name = cat.get("id"), cat.get("name")
            if _OFFICIAL_NAMES.get(cid) != name:
                expected = _OFFICIAL_NAMES.get(cid, "no category")
                raise DataError(f"{self.annotation_file}: category id {cid} is {name!r} but official COCO id {cid} "
                                f"is {expected!r}; only the official 80-category instances files are supported")
        return data

    def _ensure_annotations(self) -> dict[int, list[dict]]:
        if self._anns is None:
            data = self._read_json()
            anns: dict[int, list[dict]] = {}
            for a in data["annotations"]:
                anns.setdefault(a.get("image_id"), []).append(a)
            self._anns = anns
        return self._anns

    def _load_index(self) -> dict:
        """Images, their labels and the annotation problems: from the cache, or from the JSON (then cached)."""
        cache = JsonCache("labels", self.opts["cache_dir"], bool(self.opts["label_cache"]))
        key = cache_key("coco-index", [file_stamp(self.annotation_file), self.split])
        cached = cache.get(key)
        if cached is not None:
            return cached
        data = self._read_json()
        anns: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            anns.setdefault(a.get("image_id"), []).append(a)
        self._anns = anns
        images, bad, warnings = [], [], []
        known_ids = set()
        for img in sorted(data["images"], key=lambda r: r.get("id", 0)):
            file_name = safe_relative_path(str(img.get("file_name", "")))
            if file_name is None:
                bad.append(f"{self.annotation_file}: image id {img.get('id')} has file_name "
                           f"{img.get('file_name')!r}, which leaves the image folder")
                continue
            known_ids.add(img["id"])
            rec: dict[str, Any] = {"id": img["id"], "file_name": file_name, "stem": Path(file_name).stem,
                                   "width": int(img["width"]), "height": int(img["height"])}
            labels, problems = set(), []
            for a in anns.get(img["id"], []):
                label = COCO_OFFICIAL_TO_CONTIGUOUS.get(a.get("category_id"))
                if label is None:
                    problems.append(f"annotation {a.get('id')} has category id {a.get('category_id')}, "
                                    f"not one of the 80 COCO categories")
                else:
                    labels.add(label - 1)
            rec["labels"] = sorted(labels)
            if problems:
                rec["error"] = f"{self.annotation_file}: image {file_name}: {problems[0]}"
            images.append(rec)
        orphans = sum(len(v) for k, v in anns.items() if k not in known_ids)
        if orphans:
            warnings.append(f"{self.annotation_file}: {orphans} annotations refer to image ids that are not listed")
        index = {"images": images, "bad_entries": bad, "warnings": warnings}
        cache.put(key, index)
        return index

    def _restrict_to_list(self, ids: list[str], bad: list[str]) -> list[str]:
        path = resolve_path(self.opts["list_file"], self.root)
        if path is None:
            return ids
        by_number = {str(rec[0]): stem for stem, rec in self._records.items()}

        def parse(line: str) -> str:
            token = line.split()[0]
            if safe_relative_path(token) is None or "/" in token:
                raise ValueError(f"entry {token!r} is not a COCO image id or file stem")
            stem = Path(token).stem
            if stem in self._records:
                return stem
            if stem.isdigit() and str(int(stem)) in by_number:
                return by_number[str(int(stem))]
            raise ValueError(f"image {token!r} is not in {self.annotation_file.name}")

        lst = read_id_list(path, parse)
        self.warnings.extend(lst.duplicates)
        bad.extend(lst.invalid)
        return lst.ids

    # ------------------------------------------------------------------ files
    def default_mask_dir(self) -> Path:
        """Where `export_masks` writes when no mask_dir is given: a folder in the user cache."""
        key = cache_key("coco-masks", [file_stamp(self.annotation_file), self.split])[:12]
        return cache_root(self.opts["cache_dir"]) / "coco_masks" / f"{self.split}-{key}"

    def image_path(self, index: int) -> Path:
        return self.image_dir / self._records[self.ids[index]][1]

    def png_mask_path(self, index: int) -> Path | None:
        return self.mask_dir / f"{self.ids[index]}.png" if self.mask_dir is not None else None

    def mask_path(self, index: int) -> Path | None:
        p = self.png_mask_path(index)
        return p if p is not None and p.is_file() else None

    def has_mask_file(self, index: int) -> bool:
        return True  # rasterised from the annotations when there is no PNG

    def _all_masks_exported(self) -> bool:
        return self.mask_dir is not None and all(self.mask_path(i) is not None for i in range(len(self.ids)))

    def mask_source(self, index: int) -> str:
        p = self.mask_path(index)
        if p is not None:
            return str(p)
        return f"{self.annotation_file} (image {self._records[self.ids[index]][1]})"

    def rasterize(self, index: int) -> np.ndarray:
        """The mask of item `index` built from its instances (H, W as in the annotation file)."""
        image_id, file_name, width, height = self._records[self.ids[index]]
        anns = self._ensure_annotations().get(image_id, [])
        try:
            return instances_to_mask(anns, height, width)
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{self.annotation_file}: image {file_name}: cannot rasterise an annotation "
                            f"({e})") from None

    def read_stored_mask(self, index: int) -> np.ndarray:
        p = self.mask_path(index)
        if p is None:
            return self.rasterize(index)
        mask = read_mask(p, len(self.classes), self._lut)
        # A PNG whose classes the annotations do not name is from another convention (official ids read as
        # contiguous, or the other way round) or another image: refuse rather than train on wrong classes.
        extra = np.flatnonzero(labels_from_mask(mask, len(self.classes)) > self._labels[index])
        if extra.size:
            values = [int(k) + 1 for k in extra[:5]]
            raise DataError(f"{p}: mask has classes {values} that the annotations of this image do not name; if "
                            f"the PNGs use official COCO ids (1..90) set data.options.mask_ids: official")
        return mask

    def check_mask_header(self, index: int, image_size: tuple[int, int] | None, orientation: int) -> None:
        if self.mask_path(index) is not None:
            return super().check_mask_header(index, image_size, orientation)
        if image_size is None:
            return
        _, file_name, width, height = self._records[self.ids[index]]
        stored = (image_size[1], image_size[0]) if orientation in (5, 6, 7, 8) else tuple(image_size)
        if (width, height) not in (tuple(image_size), stored):
            raise DataError(f"{self.mask_source(index)}: annotations are for {width}x{height} but image "
                            f"{self.image_path(index)} is {image_size[0]}x{image_size[1]}")


def export_masks(dataset: COCODataset, out_dir: str | Path | None = None, overwrite: bool = False,
                 progress: bool = True) -> tuple[int, int]:
    """Writes every item's rasterised mask as ``<out_dir>/<id>.png`` (palette PNG, atomic); skips existing ones.

    Afterwards `dataset` reads the PNGs. Returns (written, already there). Items whose annotations cannot be
    rasterised are logged and left without a PNG (they keep raising their DataError when read).
    """
    from tqdm.auto import tqdm

    out = Path(out_dir) if out_dir is not None else (dataset.mask_dir or dataset.default_mask_dir())
    out.mkdir(parents=True, exist_ok=True)
    written = existing = 0
    failures = []
    for i in tqdm(range(len(dataset)), desc=f"COCO {dataset.split}: writing masks", disable=not progress):
        target = out / f"{dataset.ids[i]}.png"
        if target.is_file() and not overwrite:
            existing += 1
            continue
        try:
            write_mask_png(target, dataset.rasterize(i))
            written += 1
        except DataError as e:
            failures.append(str(e))
    dataset.mask_dir = out
    if failures:
        log.warning("coco: %d masks could not be written, e.g. %s", len(failures), failures[0])
    log.info("coco %s: %d masks written, %d already in %s", dataset.split, written, existing, out)
    return written, existing


def build_coco(cfg, split: str) -> COCODataset:
    """`DATASETS` entry: COCO from a `DataConfig`."""
    if not cfg.root:
        raise DataError("data.root is not set: point it at your COCO folder (the one holding annotations/)")
    return COCODataset(cfg.root, split, cfg.prompt_names, cfg.options, skip_bad=cfg.skip_bad)


def export_split_masks(cfg, split: str, out_dir: str | Path | None = None, overwrite: bool = False
                       ) -> tuple[COCODataset, int, int]:
    """`export_masks` of split `split` of a COCO `DataConfig`: (the dataset, masks written, masks already there)."""
    ds = COCODataset(cfg.root, split, cfg.prompt_names, cfg.options, skip_bad=True)
    written, existing = export_masks(ds, out_dir, overwrite=overwrite)
    return ds, written, existing
