"""The benchmark scripts are not a package: their tests import them with benchmarks/ on sys.path for the module."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@contextlib.contextmanager
def benchmark_module(name: str):
    """Yields benchmarks/<name>.py as a module (and its sibling helpers importable) while the block runs."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))
