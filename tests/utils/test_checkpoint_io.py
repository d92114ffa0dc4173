"""Checkpoints and run-folder files: malformed records are one line, failed writes keep the old file and say why,
written files follow the umask (issue 12)."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from semples.errors import CheckpointError, OutputError
from semples.utils.checkpoint_io import (
    FORMAT,
    _atomic,
    atomic_torch_save,
    atomic_write_text,
    read_checkpoint,
    read_json,
)


def ckpt(**changes):
    base = {"format": FORMAT, "version": 1, "stage": "classify", "config": {}, "finished": True,
            "modules": {"mask_generator": {"head.weight": torch.zeros(2, 2)}},
            "progress": {"epoch": 1, "step_in_epoch": 0, "global_step": 2}}
    base.update(changes)
    return base


@pytest.mark.parametrize("changes,problem", [
    ({"modules": [1, 2]}, "'modules' is a list, not a mapping"),
    ({"modules": {"mask_generator": "weights"}}, "'modules.mask_generator' is a str, not a state dict"),
    ({"modules": {"mask_generator": {"head.weight": [0.0]}}}, "'modules.mask_generator.head.weight' is a list"),
    ({"config": "yaml text"}, "'config' is a str, not a mapping"),
    ({"progress": {"epoch": -1, "step_in_epoch": 0, "global_step": 0}}, "'progress.epoch' is -1, not a count"),
    ({"classes": "cat"}, "'classes' is not a list of class names"),
])
def test_a_malformed_semples_checkpoint_is_one_line(tmp_path, changes, problem):
    path = tmp_path / "checkpoint.pt"
    torch.save(ckpt(**changes), path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: malformed semples checkpoint: {problem}")


def test_mapped_reading_gives_the_same_records(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save(ckpt(), path)
    assert read_checkpoint(path, mmap=True)["progress"] == read_checkpoint(path)["progress"]


def test_disk_full_during_a_checkpoint_write_keeps_the_old_one_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save(ckpt(), path)
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError) as info:
        atomic_torch_save(ckpt(stage="match"), path)
    msg = str(info.value)
    assert msg == f"{path}: cannot write (No space left on device) (the previous file is kept)"
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_torch_c_writer_failures_are_output_errors_too(tmp_path, monkeypatch):
    def failing_save(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OutputError, match="cannot write .*PytorchStreamWriter failed writing file"):
        atomic_torch_save({}, tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_real_full_disk_under_torch_save_is_named_as_such(tmp_path, monkeypatch):
    """On a full file system (a 1 MiB tmpfs, tried by hand) the OSError of the file's write() is swallowed by
    torch's C++ writer, which then says only "unexpected pos N vs M"; the message must still say what happened."""
    import io
    from types import SimpleNamespace

    path = tmp_path / "checkpoint.pt"
    atomic_torch_save(ckpt(), path)
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class Full(io.RawIOBase):  # the disk fills after 1000 bytes
        def __init__(self, fd):
            self.real, self.n = real_fdopen(fd, "wb"), 0

        def writable(self):
            return True

        def write(self, b):
            if self.n + len(b) > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.n += len(b)
            return self.real.write(b)

        def fileno(self):
            return self.real.fileno()

        def close(self):
            self.real.close()
            super().close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(fd))
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_bfree=0, f_bavail=0, f_frsize=4096))
    with pytest.raises(OutputError) as info:
        atomic_torch_save(ckpt(stage="match", big=torch.zeros(10_000)), path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: cannot write (No space left on device; torch: ") and "\n" not in msg, msg
    assert msg.endswith("(the previous file is kept)")
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_written_files_follow_the_umask_not_0600(tmp_path):
    import semples.utils.checkpoint_io as cio

    old = os.umask(0o022)
    try:
        cio._UMASK = None  # read again
        atomic_write_text(tmp_path / "a.json", "{}")
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o002)
        cio._UMASK = None
        atomic_write_text(tmp_path / "b.json", "{}")
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
        cio._UMASK = None


def test_read_json_names_the_file_and_the_problem(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "latin.json").write_bytes(b'{"a": "\xe9"}')
    for name, problem in (("deep.json", "nested too deeply"), ("bad.json", "is not valid JSON"),
                          ("latin.json", "is not UTF-8 text"), ("missing.json", "is missing")):
        with pytest.raises(CheckpointError) as info:
            read_json(tmp_path / name, "run manifest")
        assert str(info.value).startswith(f"{tmp_path / name}: ") and problem in str(info.value)


def test_sigterm_during_a_torch_save_acts_after_the_file_is_complete(tmp_path):
    """CI saw `semples train` abort (SIGABRT, "write to closed file") when SIGTERM came in the middle of a
    checkpoint: the handler raised inside torch's C++ writer. The signal now waits for the file, then acts."""
    import signal

    class Terminated(KeyboardInterrupt):
        pass

    def raise_terminated(signum, frame):
        raise Terminated

    class SignalsMidWrite:  # a file whose 3rd write call receives SIGTERM, as a real one may at any moment
        def __init__(self, f):
            self.f, self.calls = f, 0

        def write(self, b):
            self.calls += 1
            if self.calls == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return self.f.write(b)  # the handler, were it active, would raise on this line

        def flush(self):
            self.f.flush()

    obj = {f"w{i}": torch.randn(64, 64) for i in range(8)}
    path = tmp_path / "checkpoint.pt"
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        with pytest.raises(Terminated):
            _atomic(path, lambda f: torch.save(obj, SignalsMidWrite(f)))
        assert signal.getsignal(signal.SIGTERM) is raise_terminated  # the handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)
    back = torch.load(path, weights_only=True)  # complete, not half a file
    assert all(torch.equal(back[k], v) for k, v in obj.items())
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left
