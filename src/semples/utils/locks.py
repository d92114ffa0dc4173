"""One writer per folder: an OS-level lock held for the whole of a training run or an inference write.

`FolderLock(folder)` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<folder>/.semples.lock``. The operating system
drops the lock when the holder exits in any way (kill -9 included), so a lock is never left stuck; the file itself
stays (it is empty of meaning once unlocked) and records who holds it — pid, host, command line, start time —
for the message the second process gets (`RunLockError`). A process may take the lock of a folder it already
holds (the steps of one `semples run` nest); only the outermost release unlocks.

While the lock is held nothing else of semples writes into the folder, so it is also the moment to clear what a
killed writer left behind: `remove_orphan_temp_files` deletes the ``.<name>.<random>.tmp`` files of interrupted
atomic writes (`semples.utils.checkpoint_io`).

Where ``fcntl`` does not exist (Windows), folders are not locked (a debug message says so).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path

from semples.errors import OutputError, RunLockError

log = logging.getLogger(__name__)

LOCK_NAME = ".semples.lock"
# the temp files of `checkpoint_io._atomic` (tempfile.mkstemp(prefix=".<name>.", suffix=".tmp")): 8 random chars
ORPHAN_PATTERN = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_HELD: dict[str, list] = {}  # real path of a locked folder -> [fd, depth] (this process)


def launched_rank() -> int:
    """This process's rank in a run started by torchrun / accelerate launch (0 when started alone): only rank 0
    takes the locks of what the whole run writes."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def make_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Creates `folder` (and its parents) or raises `OutputError` naming it and the problem."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: cannot be used as the {what}: a file of that name is in the way") from None
    except OSError as e:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise OutputError(f"{folder}: cannot create the {what}: {blocker} is a file, not a folder") from None
        raise OutputError(f"{folder}: cannot create the {what} ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: the {what} is not writable")
    return folder


def holder_info(folder: str | Path) -> dict:
    """What the lock file of `folder` says about its holder ({} when nothing readable)."""
    try:
        data = json.loads((Path(folder) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe_holder(info: dict) -> str:
    if not info.get("pid"):
        return "another process"
    host = f" on {info['host']}" if info.get("host") and info["host"] != socket.gethostname() else ""
    cmd = f", `{info['command']}`" if info.get("command") else ""
    since = f", since {info['since']}" if info.get("since") else ""
    return f"process {info['pid']}{host}{cmd}{since}"


class FolderLock:
    """The exclusive lock of one folder (see the module docstring); a context manager.

    Args:
        folder: the folder (created when missing).
        what: how messages name it ("run folder", "CAM folder" ...).
        enabled: False: a no-op (the non-main processes of a multi-process run, whose main process holds it).

    Raises (on enter):
        RunLockError: another process holds the folder's lock (the message names the folder and the holder).
        OutputError: the folder cannot be created or written.
    """

    def __init__(self, folder: str | Path, what: str = "run folder", enabled: bool = True) -> None:
        self.folder = Path(folder)
        self.what = what
        self.enabled = enabled and fcntl is not None
        self._key: str | None = None
        self._created = False

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if not self.enabled:
            if fcntl is None:
                log.debug("%s: not locked (no fcntl on this platform)", self.folder)
            return
        self._created = not self.folder.exists()
        make_folder(self.folder, self.what)
        key = os.path.realpath(self.folder)
        if key in _HELD:  # this process holds it already (nested steps)
            _HELD[key][1] += 1
            self._key = key
            return
        path = self.folder / LOCK_NAME
        for _ in range(5):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise OutputError(f"{path}: cannot create the lock file of the {self.what} ({e.strerror or e})"
                                  ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunLockError(
                    f"{self.folder}: {_describe_holder(holder_info(self.folder))} is writing into this {self.what}; "
                    f"one run per folder at a time: wait for it to end, or write elsewhere (another --run-dir / "
                    f"--out / experiment)") from None
            try:  # the file we locked is still the one at the path (not unlinked by a releasing holder)
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise RunLockError(f"{self.folder}: could not take the lock of this {self.what} (its lock file keeps "
                               "being replaced)")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300],
                "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(info) + "\n").encode())
        except OSError:
            pass  # the lock holds without the note
        _HELD[key] = [fd, 1]
        self._key = key

    def release(self) -> None:
        if self._key is None:
            return
        entry = _HELD[self._key]
        entry[1] -= 1
        key, self._key = self._key, None
        if entry[1] > 0:
            return
        del _HELD[key]
        fd = entry[0]
        path = self.folder / LOCK_NAME
        # a folder this lock created and nothing was written into: leave no trace (unlink before unlocking, so a
        # process that opens the path afterwards gets a new file, and one that opened the old one re-checks)
        if self._created:
            try:
                if {p.name for p in self.folder.iterdir()} == {LOCK_NAME}:
                    path.unlink()
                    self.folder.rmdir()
            except OSError:
                pass
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def remove_orphan_temp_files(folder: str | Path, recursive: bool = False) -> int:
    """Deletes the temp files interrupted atomic writes left in `folder` (call it holding the folder's lock).

    Returns:
        How many were removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    walker = os.walk(folder) if recursive else [(str(folder), [], [e.name for e in os.scandir(folder)])]
    for dirpath, _, names in walker:
        for name in names:
            if ORPHAN_PATTERN.match(name):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except OSError:
                    pass
    if removed:
        log.info("%s: removed %d temp file(s) left by an interrupted write", folder, removed)
    return removed


__all__ = ["LOCK_NAME", "FolderLock", "holder_info", "launched_rank", "make_folder", "remove_orphan_temp_files"]
