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


# two-sided 95% quantiles of Student's t, by degrees of freedom (scipy is not a dependency)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042}


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (nearest tabulated df at or below)."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two paired values")
    return _T975[max(k for k in _T975 if k <= df)]


def paired(differences: list[float] | np.ndarray) -> dict:
    """Mean, sample std and 95% confidence interval (Student's t) of paired differences, with n.

    An empty or single-value list has no interval (``ci`` None).
    """
    d = np.asarray([x for x in differences if x is not None and np.isfinite(x)], dtype=np.float64)
    n = len(d)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci": None, "values": []}
    mean = float(d.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci": None, "values": d.tolist()}
    std = float(d.std(ddof=1))
    half = t975(n - 1) * std / np.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci": [float(mean - half), float(mean + half)], "values": d.tolist()}
