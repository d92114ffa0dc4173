"""benchmarks/cam_forward.py runs its four variants at a toy size, and leaves the row-maxima switch as it found it."""

from __future__ import annotations

from semples.models.mask_generators import weaktr
from tests.benchmarks.modules import benchmark_module


def test_tiny_run_prints_every_variant(capsys):
    with benchmark_module("cam_forward") as bench:
        bench.main(["--size", "48", "64", "--scales", "1.0", "--rounds", "1", "--no-memory"])
    out = capsys.readouterr().out
    for name in bench.VARIANTS:
        assert f"  {name} " in out
    assert "lean / lean_fused_max" in out and "materialised / lean" in out
    assert weaktr.BF16_ROW_MAXIMA is None
