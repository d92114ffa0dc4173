"""Step export: a folder of label PNGs (pseudo masks, eval-seg or predict outputs) in the formats others read
(`semples export`).

    run(cfg, masks, "coco", out.json)   COCO json with one RLE annotation per (image, class): the dataset's category
                                        ids (COCO: the official 1..90 ids; others: label k -> id k), images, categories;
                                        ignore (255) pixels as each image's ``ignore_rle``
    run(cfg, masks, "voc-rgb", dir)     RGB PNGs in the VOC palette (what the VOC test server's colour results look
                                        like; put them under results/VOC2012/Segmentation/comp6_test_cls/)
    run(cfg, masks, "index", dir)       index PNGs (uint8 labels, VOC palette) from RGB palette PNGs — or from a COCO
                                        json this step wrote (the way back)

Every format reads back to the identical label map (`read_coco`, `semples.data.io.read_mask`); the tests check
the round trips. Class names come from the masks folder's manifest (`semples.runs`), else from the experiment's
dataset.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from semples.config import Config
from semples.data.io import IGNORE_INDEX, atomic_write_bytes, read_mask, voc_colormap, write_mask_png
from semples.errors import DataError, UsageError
from semples.runs import read_folder_manifest
from semples.utils.checkpoint_io import atomic_write_json

log = logging.getLogger(__name__)

FORMATS = ("coco", "voc-rgb", "index")


@dataclass
class ExportResult:
    """What `run` wrote: the format, the output path, the number of images and of annotations (COCO)."""

    to: str
    out: Path
    images: int
    annotations: int = 0


def _mask_utils():
    from semples.utils.extras import require

    require(["pycocotools"], "semples export --to coco")
    from pycocotools import mask as mask_utils

    return mask_utils


def mask_files(folder: str | Path) -> list[tuple[str, Path]]:
    """(id, path) of every ``*.png`` under `folder` (ids: relative paths without .png), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder of label PNGs")
    files = sorted(p for p in folder.rglob("*.png") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"{folder}: holds no .png label maps")
    return [(p.relative_to(folder).with_suffix("").as_posix(), p) for p in files]


def class_names_for(cfg: Config, masks: Path) -> tuple[list[str], str]:
    """(foreground class names, dataset name) of a masks folder: its manifest's, else the experiment's dataset."""
    manifest = read_folder_manifest(masks) if masks.is_dir() else None
    if manifest and manifest.get("classes"):
        return list(manifest["classes"]), (manifest.get("data") or {}).get("dataset") or cfg.data.dataset
    from semples.data import build_dataset

    return list(build_dataset(cfg.data, cfg.data.train_split).classes.names), cfg.data.dataset


def category_ids(names: list[str], dataset: str) -> list[int]:
    """The category id of each label 1..K: COCO's official ids for the COCO dataset, k elsewhere."""
    if dataset == "coco":
        from semples.data.classes import COCO_OFFICIAL_IDS

        if len(names) != len(COCO_OFFICIAL_IDS):
            raise DataError(f"COCO export needs the 80 COCO classes, the masks have {len(names)}")
        return list(COCO_OFFICIAL_IDS)
    return list(range(1, len(names) + 1))


def _image_id(mask_id: str, index: int, numeric: bool) -> int:
    return int(re.findall(r"\d+", mask_id)[-1]) if numeric else index + 1


def _rle(mask_utils, binary: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def to_coco(items: list[tuple[str, np.ndarray]], names: list[str], ids: list[int]) -> dict:
    """COCO json (images, categories, annotations with RLE) of (id, label map) pairs.

    Image ids are the number in each mask id (COCO file names) when those are unique, else 1..N.
    """
    mask_utils = _mask_utils()
    numbers = [re.findall(r"\d+", i) for i, _ in items]
    numeric = all(numbers) and len({int(n[-1]) for n in numbers}) == len(items)
    images, annotations = [], []
    for index, (mask_id, labels) in enumerate(items):
        image_id = _image_id(mask_id, index, numeric)
        h, w = labels.shape
        entry = {"id": image_id, "file_name": mask_id, "height": int(h), "width": int(w)}
        if (labels == IGNORE_INDEX).any():
            entry["ignore_rle"] = _rle(mask_utils, labels == IGNORE_INDEX)
        images.append(entry)
        for value in np.unique(labels):
            if value == 0 or value == IGNORE_INDEX:
                continue
            if value > len(names):
                raise DataError(f"{mask_id}: label {value} is outside 1..{len(names)} ({len(names)} classes)")
            binary = labels == value
            ys, xs = np.nonzero(binary)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": ids[value - 1],
                                "segmentation": _rle(mask_utils, binary), "area": int(binary.sum()), "bbox": bbox,
                                "iscrowd": 0})
    categories = [{"id": cid, "name": name, "supercategory": "object"} for cid, name in zip(ids, names)]
    return {"info": {"description": "semantic label maps exported by semples (one annotation per image and class)"},
            "images": images, "categories": categories, "annotations": annotations}


def read_coco(path: str | Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """A COCO json of `to_coco` back to label maps: ({file_name: (H, W) uint8}, class names in label order).

    Categories are numbered 1..K in the file's category order; ``ignore_rle`` becomes 255.
    """
    mask_utils = _mask_utils()
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a readable COCO json ({e})") from None
    label_of = {c["id"]: k + 1 for k, c in enumerate(data.get("categories", []))}
    maps: dict[int, np.ndarray] = {}
    names_of: dict[int, str] = {}
    for img in data.get("images", []):
        labels = np.zeros((img["height"], img["width"]), np.uint8)
        if img.get("ignore_rle"):
            labels[mask_utils.decode(img["ignore_rle"]).astype(bool)] = IGNORE_INDEX
        maps[img["id"]], names_of[img["id"]] = labels, img.get("file_name", str(img["id"]))
    for ann in data.get("annotations", []):
        seg = ann["segmentation"]
        if isinstance(seg, list):  # polygons (other tools' files)
            h, w = maps[ann["image_id"]].shape
            seg = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        maps[ann["image_id"]][mask_utils.decode(seg).astype(bool)] = label_of[ann["category_id"]]
    return {names_of[i]: m for i, m in maps.items()}, [c["name"] for c in data.get("categories", [])]


def run(cfg: Config, masks: str | Path, to: str, out: str | Path) -> ExportResult:
    """Exports a folder of label PNGs (or, for ``to="index"``, RGB palette PNGs or a COCO json) to `out`.

    Raises:
        UsageError: an unknown format.
        DataError: no masks, values outside the classes, colours outside the palette.
    """
    if to not in FORMATS:
        raise UsageError(f"unknown export format {to!r}; valid: {', '.join(FORMATS)}")
    masks, out = Path(masks), Path(out)
    if to == "index" and masks.suffix == ".json":
        maps, _ = read_coco(masks)
        for mask_id, labels in maps.items():
            write_mask_png(out / f"{mask_id}.png", labels)
        return ExportResult(to, out, len(maps))
    names, dataset = class_names_for(cfg, masks)
    files = mask_files(masks)
    k = len(names)
    if to == "coco":
        items = [(mask_id, read_mask(path, k)) for mask_id, path in files]
        data = to_coco(items, names, category_ids(names, dataset))
        atomic_write_json(out, data)
        return ExportResult(to, out, len(items), len(data["annotations"]))
    palette = voc_colormap()
    for mask_id, path in files:
        labels = read_mask(path, k)  # palette, grayscale or RGB palette colours
        if to == "index":
            write_mask_png(out / f"{mask_id}.png", labels)
        else:
            buf = io.BytesIO()
            Image.fromarray(palette[labels], "RGB").save(buf, format="PNG")
            atomic_write_bytes(out / f"{mask_id}.png", buf.getvalue())
    return ExportResult(to, out, len(files))


__all__ = ["FORMATS", "ExportResult", "category_ids", "class_names_for", "mask_files", "read_coco", "run",
           "to_coco"]
