"""Reading and atomically writing checkpoints and run-folder files (shared by engine, stages and commands).

A checkpoint is a plain dict saved with torch.save and read with ``weights_only=True``:
``{"format": "semples-checkpoint", "version": 1, "stage": str, "config": dict, "modules": {name: state_dict},
"progress": {...}, "finished": bool, ...}`` — optimiser state and RNG state ride along for resuming.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semples.errors import CheckpointError, OutputError  # re-exported: raised by this module

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: worker processes that only write files start without it

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "semples-checkpoint"


_UMASK: int | None = None


def file_mode() -> int:
    """The mode a plain new file gets under this process's umask (what `open` would give; mkstemp gives 0600)."""
    global _UMASK
    if _UMASK is None:
        try:  # Linux: read it without changing it (os.umask sets it; threads may be creating files)
            status = Path("/proc/self/status").read_text()
            _UMASK = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
        except (OSError, StopIteration, ValueError, IndexError):
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
    return 0o666 & ~_UMASK


_DEFERRED = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def signals_deferred():
    """Holds SIGTERM and Ctrl-C back while a file is written and renamed, then acts on them as usual.

    A handler that raises (Ctrl-C, the CLI's SIGTERM) could otherwise fire inside a Python ``write`` that torch's
    C++ stream writer calls back into: the exception crosses C++, the writer's destructor writes the end of the
    archive to the now-closed file, and the process aborts (SIGABRT) instead of winding down. Python runs signal
    handlers in the main thread only, so swapping them there is enough; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for sig in _DEFERRED:
        handler = signal.getsignal(sig)
        if callable(handler):  # a Python handler (not SIG_DFL / SIG_IGN / one installed from C)
            previous[sig] = handler
            signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in caught[:1]:  # the first one acts, as it would have
            previous[signum](signum, None)


def _atomic(path: Path, write) -> None:
    """Writes `path` through a temp file in the same folder, fsync and a rename: readers see the old file or the
    new one, never half of one; a failed write (disk full, ...) leaves the old file and raises `OutputError`.
    SIGTERM and Ctrl-C arriving meanwhile act once the file is complete (`signals_deferred`)."""
    with signals_deferred():
        _atomic_write(Path(path), write)


def _atomic_write(path: Path, write) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        full = _disk_full(path.parent)  # measured before the temp file is removed (that frees the space again)
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) or (isinstance(e, RuntimeError) and _torch_writer_failure(e)):
            old = " (the previous file is kept)" if path.exists() else ""
            if isinstance(e, OSError) and e.strerror:
                reason = e.strerror
            elif full:  # torch's C++ writer turns a short write on a full disk into "unexpected pos N vs M"
                reason = f"No space left on device; torch: {str(e).splitlines()[0][:120]}"
            else:
                reason = str(e).splitlines()[0][:200]
            raise OutputError(f"{path}: cannot write ({reason}){old}") from e
        raise


def _torch_writer_failure(e: RuntimeError) -> bool:
    """A RuntimeError of torch's C++ stream writer (PytorchStreamWriter: "file write failed", "unexpected pos")."""
    text = str(e)
    return "writ" in text or "inline_container" in text or "unexpected pos" in text


def _disk_full(folder: Path, below: int = 1 << 20) -> bool:
    """Whether the file system of `folder` has less than `below` bytes left for this process (root may use the
    blocks reserved for it)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize < below


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


def parse_json(text: str, path: str | os.PathLike, what: str = "file", error: type[Exception] = CheckpointError
               ) -> Any:
    """JSON text read from `path`, or `error` with one line naming the file: invalid JSON, or nesting too deep for
    the parser (a RecursionError, not a JSONDecodeError)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: {what} is not valid JSON ({e})") from None
    except RecursionError:
        raise error(f"{path}: {what} is nested too deeply to read (a damaged or hostile file)") from None


def read_json(path: str | os.PathLike, what: str = "file", error: type[Exception] = CheckpointError) -> Any:
    """A JSON file's content, or `error` (a `SemplesError` subclass) with one line naming the file and the problem:
    missing, unreadable, not UTF-8, invalid JSON, nested too deeply."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise error(f"{p}: {what} is missing") from None
    except UnicodeDecodeError:
        raise error(f"{p}: {what} is not UTF-8 text") from None
    except OSError as e:
        raise error(f"{p}: cannot read the {what} ({e.strerror or e})") from None
    return parse_json(text, p, what, error)


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


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *, mmap: bool = False
                    ) -> dict:
    """Loads a semples checkpoint (weights_only=True) from a file or run folder.

    `mmap`: map the tensors instead of reading them (a look at the checkpoint's records costs no reading of its
    weights).

    Raises:
        CheckpointError: missing, unreadable, not a semples checkpoint, or one whose records are malformed (the
            message names the file and the entry).
    """
    import torch

    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        if mmap:  # a legacy (non-zip) file cannot be mapped; read it
            return read_checkpoint(p, map_location)
        raise CheckpointError(f"{p}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a semples checkpoint")
    problem = _malformed(ckpt, torch.Tensor)
    if problem:
        raise CheckpointError(f"{p}: malformed semples checkpoint: {problem} (a damaged or hand-edited file; "
                              "retrain, or hand in another checkpoint)")
    ckpt["path"] = str(p)
    return ckpt


def _malformed(ckpt: dict, tensor_type: type) -> str | None:
    """What is wrong with the records of a semples checkpoint (None: nothing)."""
    modules = ckpt.get("modules", {})
    if not isinstance(modules, dict):
        return f"'modules' is a {type(modules).__name__}, not a mapping of module name -> state dict"
    for name, state in modules.items():
        if not isinstance(state, dict):
            return f"'modules.{name}' is a {type(state).__name__}, not a state dict"
        bad = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, tensor_type)), None)
        if bad is not None:
            return f"'modules.{name}.{bad}' is a {type(state[bad]).__name__}, not a tensor"
    for key in ("config", "progress", "inputs"):
        if key in ckpt and not isinstance(ckpt[key], dict):
            return f"'{key}' is a {type(ckpt[key]).__name__}, not a mapping"
    progress = ckpt.get("progress")
    if progress is not None:
        bad = next((k for k in ("epoch", "step_in_epoch", "global_step")
                    if k in progress and (not isinstance(progress[k], int) or progress[k] < 0)), None)
        if bad is not None:
            return f"'progress.{bad}' is {progress[bad]!r}, not a count"
    names = ckpt.get("classes", [])
    if not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
        return "'classes' is not a list of class names"
    return None
