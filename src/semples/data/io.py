"""Reading files safely: images in any common mode, index masks, id lists and image-level label files.

Every failure is a `DataError` whose message is one line: ``<file>: <problem>``.

Images come back as 8-bit RGB whatever they are stored as (grayscale, palette, RGBA/LA: alpha dropped, CMYK,
16-bit and 32-bit integer or float grayscale: rescaled to 8 bits), with their EXIF orientation applied. Masks are
taken to be in the frame of the image file's stored pixels, so `orient_mask` applies the same EXIF transpose to
them; a mask that already has the displayed (rotated) size is used as it is.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from semples.data.base import IGNORE_INDEX, DataError
from semples.utils.checkpoint_io import atomic_write_bytes, parse_json

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

# EXIF orientation tag -> PIL transpose method (the same table as PIL.ImageOps.exif_transpose).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112


def voc_colormap(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: the PASCAL VOC palette (bit-interleaved), used for index masks of every dataset."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


_PALETTE = voc_colormap()
_PALETTE_LOOKUP = {int(r) << 16 | int(g) << 8 | int(b): i for i, (r, g, b) in enumerate(_PALETTE)}


# --------------------------------------------------------------------------------------------------- images
def check_pixel_count(path: Path, size: tuple[int, int]) -> None:
    """Raises DataError when an image of `size` (w, h) has more pixels than PIL's decompression-bomb bound.

    PIL only *warns* between 1× and 2× ``Image.MAX_IMAGE_PIXELS``; turning that warning into an error needs
    ``warnings.catch_warnings``, which is not thread-safe (the readers run on threads), so whether a 144-Mpx PNG
    was refused depended on thread timing. The bound is checked here instead, the same way on every thread.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise DataError(f"{path}: image too large to decode safely ({size[0]}x{size[1]} = {size[0] * size[1]:,} "
                        f"pixels, more than PIL's bound of {limit:,}; raise PIL.Image.MAX_IMAGE_PIXELS if the file "
                        "is trusted)")


def _open(path: Path, what: str) -> Image.Image:
    """Opens and fully decodes an image file; every failure becomes a one-line DataError."""
    if not path.is_file():
        raise DataError(f"{path}: {what} file is missing" if not path.exists() else f"{path}: {what} is not a file")
    try:
        img = Image.open(path)
        check_pixel_count(path, img.size)  # before decoding a single pixel
        img.load()
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: image too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(f"{path}: truncated or corrupt {what} ({e})") from None
    return img


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of an opened image (1 = upright; 1..8)."""
    try:
        value = int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # malformed EXIF blocks: treat as upright rather than failing the image
        return 1
    return value if value in _ORIENTATION_TRANSPOSE else 1


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. High-bit-depth grayscale is rescaled (not clipped); alpha is dropped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(image)
        if mode == "F":
            arr = arr.astype(np.float64)
            finite = arr[np.isfinite(arr)]
            hi = float(finite.max()) if finite.size else 1.0
            if hi <= 1.0:  # float images in [0, 1]
                scale = 255.0
            elif hi > 255.0:  # larger ranges are rescaled to their maximum
                scale = 255.0 / hi
            else:
                scale = 1.0
            arr8 = np.clip(np.nan_to_num(arr) * scale, 0, 255).round().astype(np.uint8)
        else:
            arr = arr.astype(np.int64)
            # 16-bit files (I;16*, or 16-bit PNGs opened as "I"): full range is 0..65535.
            hi = 255 if mode == "I" and arr.max(initial=0) <= 255 else 65535
            arr8 = (np.clip(arr, 0, hi) * (255.0 / hi)).round().astype(np.uint8)
        return Image.fromarray(np.repeat(arr8[:, :, None], 3, axis=2), "RGB")
    if mode in ("P", "PA") and "transparency" in image.info:
        return image.convert("RGBA").convert("RGB")
    return image.convert("RGB")


def read_image(path: str | Path, exif_transpose: bool = True) -> tuple[Image.Image, int]:
    """An image file as (RGB image, EXIF orientation that was applied).

    Args:
        path: image file.
        exif_transpose: rotate/flip by the EXIF orientation tag (what every viewer shows). If False the
            returned orientation is 1.

    Raises:
        DataError: missing, not an image, truncated/corrupt, or too large.
    """
    path = Path(path)
    img = _open(path, "image")
    orientation = exif_orientation(img) if exif_transpose else 1
    rgb = to_rgb(img)
    if orientation != 1:
        rgb = rgb.transpose(_ORIENTATION_TRANSPOSE[orientation])
    return rgb, orientation


def image_header(path: str | Path, exif_transpose: bool = True) -> tuple[tuple[int, int], int]:
    """((width, height) as displayed, orientation) from the file header only (no pixel decoding)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file is missing")
    try:
        with Image.open(path) as img:
            size = img.size
            check_pixel_count(path, size)  # what decoding it would refuse, refused from the header too
            orientation = exif_orientation(img) if exif_transpose else 1
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: image too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable image header ({e})") from None
    if orientation in (5, 6, 7, 8):
        size = (size[1], size[0])
    return size, orientation


def orient_mask(mask: np.ndarray, orientation: int, image_size: tuple[int, int]) -> np.ndarray:
    """Brings a mask stored in the image file's pixel frame into the displayed frame.

    Args:
        mask: (H, W) uint8.
        orientation: the EXIF orientation applied to the image (1..8).
        image_size: (width, height) of the displayed image.

    A mask that already has the displayed size while the stored size differs (a 90-degree orientation) was drawn
    on the displayed image and is returned unchanged.
    """
    if orientation == 1:
        return mask
    h, w = mask.shape
    if orientation in (5, 6, 7, 8) and (w, h) == tuple(image_size) and w != h:
        return mask
    return np.asarray(Image.fromarray(mask).transpose(_ORIENTATION_TRANSPOSE[orientation]))


# ---------------------------------------------------------------------------------------------------- masks
def read_mask(path: str | Path, num_classes: int, lut: np.ndarray | None = None) -> np.ndarray:
    """An index mask (0 background, 1..num_classes, 255 ignore) as (H, W) uint8.

    Palette ("P") and grayscale PNGs are read as indices; RGB masks are decoded with the VOC palette; 16-bit masks
    are accepted when their values fit. `lut` (256,) remaps values first (e.g. official COCO ids -> 1..80).

    Raises:
        DataError: missing/corrupt file, colours outside the palette, or values outside 0..K and 255.
    """
    path = Path(path)
    img = _open(path, "mask")
    mode = img.mode
    if mode in ("P", "L"):
        arr = np.asarray(img, dtype=np.uint8)
    elif mode == "1":
        arr = np.asarray(img, dtype=np.uint8)
    elif mode.startswith("I") or mode == "F":
        raw = np.asarray(img)
        if raw.size and (raw.min() < 0 or raw.max() > 255):
            raise DataError(f"{path}: {mode} mask has values outside 0..255 (min {raw.min()}, max {raw.max()})")
        arr = raw.astype(np.uint8)
    elif mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint32)
        packed = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]
        colours, inverse = np.unique(packed, return_inverse=True)
        idx = np.empty(len(colours), dtype=np.uint8)
        for i, c in enumerate(colours):
            c = int(c)
            if c not in _PALETTE_LOOKUP:
                raise DataError(f"{path}: RGB mask has colour {((c >> 16) & 255, (c >> 8) & 255, c & 255)} "
                                f"that is not in the VOC palette; save masks as index (palette/grayscale) PNGs")
            idx[i] = _PALETTE_LOOKUP[c]
        arr = idx[inverse.reshape(packed.shape)]
    else:
        raise DataError(f"{path}: unsupported mask mode {mode!r}; save masks as index (palette/grayscale) PNGs")
    if lut is not None:
        arr = lut[arr]
    check_mask_values(arr, num_classes, path)
    return np.ascontiguousarray(arr)


def mask_histogram(mask: np.ndarray) -> np.ndarray:
    """(256,) int64 pixel count per value of a uint8 mask."""
    return np.bincount(mask.ravel(), minlength=256)


def check_mask_values(mask: np.ndarray, num_classes: int, path: str | Path) -> None:
    """Raises DataError when `mask` holds values other than 0..num_classes and 255."""
    hist = mask_histogram(mask)
    hist[: num_classes + 1] = 0
    hist[IGNORE_INDEX] = 0
    if hist.any():
        bad = np.flatnonzero(hist)[:6].tolist()
        raise DataError(f"{path}: mask has values {bad} outside 0..{num_classes} and {IGNORE_INDEX}")


def labels_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) float32 multi-hot of the foreground classes present in a mask (0 and 255 do not count)."""
    hist = mask_histogram(mask)
    return (hist[1: num_classes + 1] > 0).astype(np.float32)


def write_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Writes an (H, W) uint8 index mask as a VOC-palette PNG, atomically (temp file + rename)."""
    path = Path(path)
    img = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), "P")
    img.putpalette(_PALETTE.reshape(-1).tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------------------------- id lists
def safe_relative_path(entry: str) -> str | None:
    """`entry` as a normalised relative POSIX path, or None when it is absolute or leaves its root (``..``)."""
    text = entry.replace("\\", "/")
    if not text or "\x00" in text or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return None
    parts = PurePosixPath(text).parts
    if any(p == ".." for p in parts):
        return None
    clean = [p for p in parts if p not in ("", ".")]
    return "/".join(clean) if clean else None


@dataclass
class IdList:
    """Ids read from a list file, with what was wrong with the rest (each message names file and line)."""

    ids: list[str]
    duplicates: list[str] = field(default_factory=list)  # warnings: later copies dropped
    invalid: list[str] = field(default_factory=list)  # errors: entries that cannot be used


def read_id_list(path: str | Path, parse=None) -> IdList:
    """Reads a list file: one id per line; blank lines are skipped; duplicates keep the first occurrence.

    Args:
        path: the list file.
        parse: optional ``str -> str`` turning a stripped line into an id; raises ValueError for a bad line.

    Raises:
        DataError: the file is missing or unreadable.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: list file is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read list file ({e})") from None
    out = IdList(ids=[])
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            item = parse(line) if parse is not None else line
        except ValueError as e:
            out.invalid.append(f"{path}:{lineno}: {e}")
            continue
        if item in first_line:
            out.duplicates.append(f"{path}:{lineno}: duplicate id {item!r} (first on line {first_line[item]}); "
                                  f"using it once")
            continue
        first_line[item] = lineno
        out.ids.append(item)
    return out


# ------------------------------------------------------------------------------------------ label files
@dataclass
class LabelEntry:
    """Class names of one image in a labels file and where they were read (``file:line``).

    `where` is the image's first row; `name_where` says where each name was read (an image may span rows).
    """

    names: list[str]
    where: str
    name_where: dict[str, str] = field(default_factory=dict)

    def where_of(self, name: str) -> str:
        """``file:line`` of the row that named `name`."""
        return self.name_where.get(name, self.where)


def _split_names(cell: str) -> list[str]:
    for sep in (";", "|"):
        if sep in cell:
            return [n.strip() for n in cell.split(sep) if n.strip()]
    return [cell.strip()] if cell.strip() else []


_HEADER_WORDS = {"image", "images", "id", "file", "filename", "file_name", "path", "name", "img"}


def read_labels_file(path: str | Path) -> dict[str, LabelEntry]:
    """Image -> class names, from a CSV or JSON labels file.

    CSV: ``image,labels`` rows (optional header); the names may share one cell separated by ';' or '|', or fill
    further columns; several rows of one image are merged (so one row per image-class pair works too).
    JSON: ``{"img.jpg": ["cat", "dog"], ...}`` or ``[{"image": "img.jpg", "labels": [...]}, ...]``
    (keys ``image``/``file_name``/``id`` and ``labels``/``classes``); a string value may be ';'-separated.

    Raises:
        DataError: missing, unreadable or malformed file (the message names the line or entry).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: labels file is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read labels file ({e})") from None
    out: dict[str, LabelEntry] = {}

    def add(key: str, names: Iterable[str], where: str) -> None:
        key = key.strip()
        if not key:
            raise DataError(f"{where}: empty image name")
        entry = out.setdefault(key, LabelEntry([], where))
        for n in names:
            if n not in entry.names:
                entry.names.append(n)
                entry.name_where[n] = where

    if path.suffix.lower() == ".json":
        data = parse_json(text, path, "labels file", DataError)
        if isinstance(data, dict):
            items = [(str(k), v, f"{path}: entry {k!r}") for k, v in data.items()]
        elif isinstance(data, list):
            items = []
            for i, row in enumerate(data):
                if not isinstance(row, dict):
                    raise DataError(f"{path}: entry {i} is not an object with 'image' and 'labels'")
                key = next((row[k] for k in ("image", "file_name", "id") if k in row), None)
                value = next((row[k] for k in ("labels", "classes") if k in row), None)
                if key is None or value is None:
                    raise DataError(f"{path}: entry {i} needs 'image' (or 'file_name'/'id') and 'labels'")
                items.append((str(key), value, f"{path}: entry {i}"))
        else:
            raise DataError(f"{path}: expected a JSON object or list")
        for key, value, where in items:
            if isinstance(value, str):
                names = _split_names(value)
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                names = [v.strip() for v in value if v.strip()]
            else:
                raise DataError(f"{where}: labels must be a list of class names or a ';'-separated string")
            add(key, names, where)
        return out
    if path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        raise DataError(f"{path}: labels file must be .csv, .tsv or .json")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as e:  # a field over csv's size limit, a NUL byte, an unclosed quote at the end ...
            raise DataError(f"{path}:{rows.line_num}: malformed CSV row ({e})") from None
        lineno = rows.line_num  # the line the row ends on (a quoted field may span lines)
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if rows.line_num == 1 and cells[0].lower() in _HEADER_WORDS:
            continue
        names = [n for c in cells[1:] for n in _split_names(c)]
        add(cells[0], names, f"{path}:{lineno}")
    return out


def strip_image_extension(name: str) -> str:
    """'a/b.jpg' -> 'a/b' for known image extensions; other names unchanged."""
    p = PurePosixPath(name)
    return str(p.with_suffix("")) if p.suffix.lower() in IMAGE_EXTENSIONS else name
