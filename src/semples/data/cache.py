"""A small on-disk cache for derived dataset facts (image-level labels), kept out of the dataset folder.

Dataset folders are often read-only or shared, so nothing is ever written next to the data. Cached files live in
the first of: ``data.options.cache_dir``, ``$SEMPLES_CACHE_DIR``, ``$XDG_CACHE_HOME/semples``,
``~/.cache/semples``; under ``labels/``. An entry's name is the hash of everything it was derived from (file
paths, sizes and modification times), so a changed mask simply misses the cache. When the folder cannot be
written the facts stay in memory for the run (a debug message says so); ``data.options.label_cache: false`` turns
the disk cache off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from semples.data.io import atomic_write_bytes

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_root(cache_dir: str | None = None) -> Path:
    """The cache folder (not created here)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SEMPLES_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "semples"


def file_stamp(path: Path) -> tuple[str, int, int]:
    """(path, size, mtime_ns) of a file; (path, -1, -1) when it is missing."""
    try:
        st = path.stat()
    except OSError:
        return str(path), -1, -1
    return str(path), st.st_size, st.st_mtime_ns


def cache_key(kind: str, parts: Any) -> str:
    """A stable hash of `kind` and a JSON-serialisable description of the inputs."""
    blob = json.dumps({"kind": kind, "version": CACHE_VERSION, "parts": parts}, sort_keys=True,
                      separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


class JsonCache:
    """Get/put JSON values by key under ``<root>/<namespace>/``; silently memory-only when disabled/unwritable."""

    def __init__(self, namespace: str, cache_dir: str | None = None, enabled: bool = True) -> None:
        self.dir = cache_root(cache_dir) / namespace
        self.enabled = enabled

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str) -> Any | None:
        if not self.enabled:
            return None
        p = self.path(key)
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as e:
            log.debug("ignoring unreadable cache file %s (%s)", p, type(e).__name__)
            return None

    def put(self, key: str, value: Any) -> None:
        if not self.enabled:
            return
        p = self.path(key)
        try:
            atomic_write_bytes(p, json.dumps(value, separators=(",", ":")).encode())
        except OSError as e:
            log.debug("cannot write cache file %s (%s); keeping the result in memory only", p, e)
