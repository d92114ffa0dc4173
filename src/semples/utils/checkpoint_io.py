"""Reading and atomically writing checkpoints and run-folder files (shared by engine, stages and commands).

A checkpoint is a plain dict saved with torch.save and read with ``weights_only=True``:
``{"format": "semples-checkpoint", "version": 1, "stage": str, "config": dict, "modules": {name: state_dict},
"progress": {...}, "finished": bool, ...}`` — optimiser state and RNG state ride along for resuming.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semples.errors import CheckpointError  # re-exported: raised by this module

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: worker processes that only write files start without it

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "semples-checkpoint"


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, then rename: readers never see half a file."""
    import torch

    _atomic(Path(path), lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    _atomic(Path(path), lambda f: f.write(text.encode("utf-8")))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic(Path(path), lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder -> its checkpoint.pt; a file -> itself. Raises CheckpointError if missing."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise CheckpointError(f"{p}: no checkpoint there (hand in a finished run folder or its {CHECKPOINT_NAME})")
    return p


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Loads a semples checkpoint (weights_only=True) from a file or run folder."""
    import torch

    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{p}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a semples checkpoint")
    ckpt["path"] = str(p)
    return ckpt
