"""One writer per folder (issue 12, item 3): an OS-level lock that a second process cannot take, that a killed
holder does not leave stuck, and temp files that a killed writer leaves are cleared by the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from semples.errors import OutputError, RunLockError
from semples.utils.locks import LOCK_NAME, FolderLock, holder_info, remove_orphan_temp_files

HOLDER = """
import sys, time
from pathlib import Path
from semples.utils.locks import FolderLock
FolderLock(sys.argv[1]).acquire()
Path(sys.argv[2]).write_text("held")
time.sleep(300)
"""

WRITER = """
import sys, time
from semples.utils.checkpoint_io import _atomic
def slow(f):
    f.write(b"x" * 1000)
    f.flush()
    open(sys.argv[2], "w").write("writing")
    time.sleep(300)
_atomic(sys.argv[1], slow)
"""


def wait_for(path, proc, timeout=120.0):
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture
def holder(tmp_path):
    """A second process holding the lock of tmp_path / "run"."""
    folder, ready = tmp_path / "run", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(ready)], stderr=subprocess.PIPE)
    wait_for(ready, proc)
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_process_cannot_take_the_lock_and_is_told_who_holds_it(holder):
    folder, proc = holder
    with pytest.raises(RunLockError) as info:
        FolderLock(folder).acquire()
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{folder}: process {proc.pid}")
    assert "one run per folder at a time" in msg
    assert holder_info(folder)["pid"] == proc.pid


def test_a_killed_holder_leaves_no_stuck_lock(holder):
    folder, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with FolderLock(folder):  # taken at once: the OS dropped the dead process's lock
        assert holder_info(folder)["pid"] == os.getpid()


def test_the_lock_is_reentrant_in_one_process_and_released_by_the_outermost(tmp_path):
    folder = tmp_path / "run"
    with FolderLock(folder):
        with FolderLock(folder):
            pass
        # still held: another process could not take it
        out = subprocess.run([sys.executable, "-c", "import sys; from semples.utils.locks import FolderLock; "
                              f"FolderLock({str(folder)!r}).acquire()"], capture_output=True, text=True)
        assert out.returncode == 1 and "RunLockError" in out.stderr
    out = subprocess.run([sys.executable, "-c", "from semples.utils.locks import FolderLock; "
                          f"FolderLock({str(folder)!r}).acquire()"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_a_folder_the_lock_created_and_nothing_was_written_into_is_removed(tmp_path):
    folder = tmp_path / "a" / "run"
    with FolderLock(folder):
        assert (folder / LOCK_NAME).is_file()
    assert not folder.exists()
    with FolderLock(folder):
        (folder / "checkpoint.pt").write_bytes(b"x")
    assert (folder / "checkpoint.pt").is_file()


def test_a_file_where_the_folder_should_be_is_an_output_error(tmp_path):
    (tmp_path / "runs").write_text("a file")
    with pytest.raises(OutputError, match=r"runs is a file, not a folder"):
        FolderLock(tmp_path / "runs" / "tiny" / "classify").acquire()


def test_an_unwritable_output_folder_is_an_output_error_naming_it(tmp_path, monkeypatch):
    """chmod does not stop root (the test machine's user), so the refusal is what the OS says for a read-only
    place: EACCES from mkdir, and a folder that exists but cannot be written into."""
    import errno
    from pathlib import Path

    real = Path.mkdir

    def denied(self, *args, **kwargs):
        if self.name == "classify":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(OutputError, match=r"ro/tiny/classify: cannot create the run folder \(Permission denied\)"):
        FolderLock(tmp_path / "ro" / "tiny" / "classify").acquire()
    monkeypatch.undo()
    (tmp_path / "ro2").mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match=r"ro2: the run folder is not writable"):
        FolderLock(tmp_path / "ro2").acquire()


def test_a_killed_write_leaves_an_orphan_that_the_next_locked_run_removes(tmp_path):
    folder, started = tmp_path / "run", tmp_path / "started"
    folder.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder / "checkpoint.pt"), str(started)])
    wait_for(started, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    orphans = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(orphans) == 1 and orphans[0].startswith(".checkpoint.pt.")
    assert not (folder / "checkpoint.pt").exists()  # the reader never sees half a file
    (folder / ".keep.tmp").write_text("not ours: no random part")  # only semples' own temp names are removed
    with FolderLock(folder):
        assert remove_orphan_temp_files(folder) == 1
    assert sorted(p.name for p in folder.iterdir()) == [".keep.tmp", LOCK_NAME]
