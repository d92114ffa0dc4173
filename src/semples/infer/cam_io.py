"""One file per image of class activation maps ("seeds"): the format every inference step reads and writes.

``<cams_dir>/<image id>.npz`` (compressed) holds
    cams     (P, H, W) float16 in [0, 1], one map per class present in the image label, full image resolution
    classes  (P,) int16, 0-based foreground class indices of those maps
Written atomically (temp file + rename), so a file that exists is complete.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

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


def load_cam(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(cams (P, H, W) float32, classes (P,) int64) from a CAM file."""
    with np.load(path) as f:
        return f["cams"].astype(np.float32), f["classes"].astype(np.int64)


def dense_cams(cams: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, H, W) with zeros for the classes not in the file."""
    out = np.zeros((num_classes, *cams.shape[1:]), dtype=np.float32)
    out[classes] = cams
    return out
