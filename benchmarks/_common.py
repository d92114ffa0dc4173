"""Plumbing shared by the long benchmark scripts (run as ``python benchmarks/<script>.py``, so this folder is on
``sys.path``): atomic JSON, the machine's load average, and wall-time bookkeeping that survives interruptions."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def write_json(path: Path, obj: Any) -> None:
    """Writes `obj` to `path` atomically (a per-process temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False))
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_load() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    a, b, c = Path("/proc/loadavg").read_text().split()[:3]
    return float(a), float(b), float(c)


class LoadSampler(threading.Thread):
    """Samples the 1-minute load average every `every` seconds (other jobs may share this machine)."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.samples: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append(read_load()[0])
            except OSError:
                return
            self._halt.wait(self.every)

    def stop(self) -> dict:
        self._halt.set()
        s = np.asarray(self.samples or [float("nan")])
        return {"samples": len(self.samples), "every_s": self.every, "min": float(np.min(s)),
                "median": float(np.median(s)), "mean": float(np.mean(s)), "max": float(np.max(s))}


class Timings:
    """Wall seconds of every step that did work, kept in a JSON file across invocations."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.data: dict[str, float] = read_json(self.path) if self.path.exists() else {}

    def add(self, key: str, seconds: float) -> None:
        # re-read first: another invocation (other seeds in a second process) may have added its own keys
        if self.path.exists():
            self.data = {**self.data, **read_json(self.path)}
        self.data[key] = round(self.data.get(key, 0.0) + seconds, 1)
        write_json(self.path, self.data)

    def total(self) -> float:
        return float(sum(self.data.values()))


def timed_call(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call of `fn`.

    On a shared machine the CPU time is the steadier figure: other jobs' load stretches the wall time (threads
    wait to be scheduled, OpenMP barriers stall) but not the work this process does. With one torch thread
    the two agree when the machine is quiet.
    """
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def ratio_stats(num: list[float], den: list[float]) -> str:
    """'median M (range LO-HI)' of num[i] / den[i]."""
    r = [a / b for a, b in zip(num, den)]
    return f"median {float(np.median(r)):.2f} (range {min(r):.2f}-{max(r):.2f})"
