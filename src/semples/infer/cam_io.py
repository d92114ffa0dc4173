"""One file per image of class activation maps ("seeds"): the format every inference step reads and writes.

``<cams_dir>/<image id>.npz`` (compressed) holds
    cams     (P, H, W) float16 in [0, 1], one map per class present in the image label, full image resolution
    classes  (P,) int16, 0-based foreground class indices of those maps
Written atomically (temp file + rename), so a file that exists is complete.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from semples.errors import DataError
from semples.utils.checkpoint_io import atomic_write_bytes


def cam_path(cams_dir: str | os.PathLike, image_id: str) -> Path:
    """Where the CAM file of `image_id` lives (ids may contain '/', kept as sub-folders)."""
    return Path(cams_dir) / f"{image_id}.npz"


def save_cam(path: str | os.PathLike, cams: np.ndarray, classes: np.ndarray | list[int]) -> None:
    """Writes cams (P, H, W) for 0-based classes (P,) as float16, atomically."""
    cams = np.asarray(cams, dtype=np.float16)
    classes = np.asarray(classes, dtype=np.int16)
    if cams.ndim != 3 or cams.shape[0] != classes.shape[0]:
        raise ValueError(f"cams must be (P, H, W) with one map per class; got {cams.shape} for {classes.shape[0]}")
    buf = io.BytesIO()
    np.savez_compressed(buf, cams=cams, classes=classes)
    atomic_write_bytes(path, buf.getvalue())


def load_cam(path: str | os.PathLike, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cams (P, H, W) float32, classes (P,) int64) from a CAM file.

    Args:
        path: the file.
        num_classes: K foreground classes of the dataset: class indices outside 0..K-1 are an error.

    Raises:
        DataError: the file is missing, truncated, not a CAM file (no ``cams`` / ``classes``), holds object arrays
            (never unpickled), arrays of the wrong shape, or classes of another dataset — one line naming the file
            and the problem.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise DataError(f"{path}: not a CAM file (a single array, not an .npz with cams and classes)")
            absent = [k for k in ("cams", "classes") if k not in f.files]
            if absent:
                raise DataError(f"{path}: not a CAM file (no {' or '.join(absent)}; holds "
                                f"{', '.join(f.files) or 'nothing'})")
            cams, classes = f["cams"], f["classes"]
    except FileNotFoundError:
        raise DataError(f"{path}: CAM file is missing") from None
    except DataError:
        raise
    except ValueError as e:  # object arrays, pickles (allow_pickle=False), bad headers
        text = str(e)
        if "Object arrays" in text:
            reason = "it holds object arrays, which semples never unpickles"
        elif "pickled" in text:
            reason = "not an .npz archive (semples never unpickles files)"
        else:
            reason = text.splitlines()[0][:160]
        raise DataError(f"{path}: unreadable CAM file ({reason})") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: truncated or corrupt CAM file ({type(e).__name__}: {str(e)[:160]})") from None
    if cams.dtype.kind not in "fiu" or classes.dtype.kind not in "iu":
        raise DataError(f"{path}: CAM file holds {cams.dtype} maps and {classes.dtype} classes (expected float maps "
                        "and integer class indices)")
    if cams.ndim != 3 or classes.ndim != 1 or cams.shape[0] != classes.shape[0]:
        raise DataError(f"{path}: CAM file holds maps of shape {cams.shape} for classes of shape {classes.shape} "
                        "(expected (P, H, W) and (P,))")
    if num_classes is not None and classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        bad = int(classes.max()) if classes.max() >= num_classes else int(classes.min())
        raise DataError(f"{path}: CAM file has class index {bad}, outside 0..{num_classes - 1} (CAMs made for "
                        "another dataset?)")
    return cams.astype(np.float32), classes.astype(np.int64)


def dense_cams(cams: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, H, W) with zeros for the classes not in the file."""
    out = np.zeros((num_classes, *cams.shape[1:]), dtype=np.float32)
    out[classes] = cams
    return out
