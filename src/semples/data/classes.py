"""Class tables of the built-in datasets and the names CLIP reads for them.

Label order is the mask order: foreground class k (0-based) has mask value k + 1; 0 is background, 255 ignore.

Prompt-name variants (`DataConfig.prompt_names`):
    "plain"  human-readable names ("dining table", "potted plant", "tv monitor"); the default.
    "clims"  the CLIMS / SemPLeS reference names: as "plain" but "person" is read as "player".
    a path   a text file with one prompt name per line, in label order (any dataset).

COCO: the official annotation files number the 80 categories with ids 1..90 (ten ids unused). This package uses
contiguous labels 1..80 in official-id order; `COCO_OFFICIAL_IDS[k]` is the official id of class k, and
`coco_official_to_contiguous_lut()` converts masks written with official ids (docs/datasets.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semples.data.base import IGNORE_INDEX, ClassTable, DataError

# PASCAL VOC 2012, standard order (mask values 1..20).
VOC_NAMES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

_VOC_PLAIN: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv monitor",
)

# MS COCO: (official category id, official name), in official-id order. Contiguous label k + 1 <-> entry k.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"),
    (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)
COCO_OFFICIAL_IDS: tuple[int, ...] = tuple(cid for cid, _ in COCO_CATEGORIES)
COCO_NAMES: tuple[str, ...] = tuple(name for _, name in COCO_CATEGORIES)
COCO_OFFICIAL_TO_CONTIGUOUS: dict[int, int] = {cid: k + 1 for k, cid in enumerate(COCO_OFFICIAL_IDS)}

_VARIANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "voc": {
        "plain": _VOC_PLAIN,
        "clims": tuple("player" if n == "person" else n for n in _VOC_PLAIN),
    },
    "coco": {
        "plain": COCO_NAMES,
        "clims": tuple("player" if n == "person" else n for n in COCO_NAMES),
    },
}


def prompt_variants(dataset: str) -> list[str]:
    """Names of the built-in prompt-name variants of `dataset` ("voc" or "coco")."""
    return list(_VARIANTS.get(dataset, {"plain": ()}))


def read_prompt_names_file(path: str | Path, count: int) -> tuple[str, ...]:
    """Prompt names from a text file (one per line, blank lines ignored); must hold exactly `count` names."""
    p = Path(path)
    try:
        names = tuple(line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError as e:
        raise DataError(f"{p}: cannot read prompt names ({e.strerror or e})") from None
    if len(names) != count:
        raise DataError(f"{p}: has {len(names)} prompt names, the dataset has {count} classes")
    return names


def _resolve_prompt_names(dataset: str, names: tuple[str, ...], variant: str,
                          plain: tuple[str, ...]) -> tuple[str, ...]:
    variants = _VARIANTS.get(dataset, {"plain": plain})
    if variant in variants:
        return variants[variant]
    if Path(variant).is_file():
        return read_prompt_names_file(variant, len(names))
    raise DataError(f"unknown prompt_names {variant!r} for dataset {dataset!r}; valid: "
                    f"{', '.join(variants)} or a path to a text file with one name per line")


def voc_classes(prompt_names: str = "plain") -> ClassTable:
    """The 20 PASCAL VOC classes; `prompt_names` = "plain", "clims" or a names file."""
    return ClassTable(VOC_NAMES, _resolve_prompt_names("voc", VOC_NAMES, prompt_names, _VOC_PLAIN))


def coco_classes(prompt_names: str = "plain") -> ClassTable:
    """The 80 MS COCO classes (contiguous order = official-id order); `prompt_names` as for `voc_classes`."""
    return ClassTable(COCO_NAMES, _resolve_prompt_names("coco", COCO_NAMES, prompt_names, COCO_NAMES))


def custom_classes(names: list[str] | tuple[str, ...], prompt_names: str = "plain") -> ClassTable:
    """A table for a user's classes. "plain" prompt names replace '_' by spaces ("traffic_cone" -> "traffic cone")."""
    names = tuple(names)
    if not names:
        raise DataError("the class list is empty")
    plain = tuple(n.replace("_", " ") for n in names)
    if prompt_names == "plain":
        return ClassTable(names, plain)
    if Path(prompt_names).is_file():
        return ClassTable(names, read_prompt_names_file(prompt_names, len(names)))
    raise DataError(f"unknown prompt_names {prompt_names!r} for a folder dataset; valid: plain or a path to a "
                    f"text file with one name per line")


def coco_official_to_contiguous_lut() -> np.ndarray:
    """(256,) uint8 lookup: official COCO id -> contiguous label (0 -> 0, 255 -> 255, unused ids -> 255).

    Use as ``lut[mask]`` on a mask written with official ids (the WeakTr / PMM convention, 0..90).
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[0] = 0
    for cid, label in COCO_OFFICIAL_TO_CONTIGUOUS.items():
        lut[cid] = label
    return lut


def coco_contiguous_to_official_lut() -> np.ndarray:
    """(256,) uint8 lookup: contiguous label 1..80 -> official COCO id (0 -> 0, 255 -> 255)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[0] = 0
    for cid, label in COCO_OFFICIAL_TO_CONTIGUOUS.items():
        lut[label] = cid
    return lut


def class_matcher(table: ClassTable, extra: dict[str, tuple[str, ...]] | None = None) -> dict[str, int]:
    """Map of normalised name -> 0-based class index, accepting canonical, prompt and `extra` variant names.

    Normalisation: lower case, spaces / underscores / hyphens removed ("Dining_Table" == "diningtable").
    """
    out: dict[str, int] = {}
    tables = [table.names, table.prompt_names, *(extra or {}).values()]
    for names in tables:
        for k, name in enumerate(names):
            out.setdefault(normalise_class_name(name), k)
    return out


def normalise_class_name(name: str) -> str:
    """Lower case without spaces, underscores or hyphens."""
    return "".join(ch for ch in name.lower() if ch not in " _-")
