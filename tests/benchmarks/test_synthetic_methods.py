"""benchmarks/synthetic_methods.py --merge: rows run in separate processes join one table and one set of paired
comparisons; a file of another world is refused (fast: no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.modules import benchmark_module


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("synthetic_methods") as module:
        yield module


def _row(miou: float, leak: float) -> dict:
    return {"miou": miou, "leak": leak, "cam_on_bg": 0.5, "bg_fp": 1.0, "threshold": 0.5, "iou": {"boat": miou},
            "leak_per_class": {"boat": leak}}


def _earlier(bench, tmp_path, **meta) -> Path:
    path = tmp_path / "earlier.json"
    json.dump({"meta": {"preset": bench.PRESET, "quick": False, "overrides": [], "command": "earlier", **meta},
               "rows": {"semples": {"0": _row(20.0, 40.0), "1": _row(22.0, 44.0), "7": _row(0.0, 0.0)}},
               "context": {}, "clip_es_variants": {}, "failures": []}, path.open("w"))
    return path


def test_merged_rows_pair_with_this_invocations_rows(bench, tmp_path):
    res = {"rows": {"fma": {0: _row(15.0, 50.0), 1: _row(16.0, 50.0)}, "semples": {1: _row(30.0, 10.0)}},
           "context": {}, "clip_es_variants": {}, "failures": []}
    info = bench.merge_rows(res, _earlier(bench, tmp_path), [0, 1], False, [])
    assert sorted(res["rows"]["semples"]) == [0, 1]  # seed 7 is not of this table
    assert res["rows"]["semples"][1]["miou"] == 30.0  # this invocation's value stands
    assert res["rows"]["semples"][0]["miou"] == 20.0 and info["added"] == ["rows/semples/seed0"]
    comp = bench.comparisons(res["rows"])["fma"]
    assert comp["miou"]["n"] == 2 and comp["miou"]["mean"] == pytest.approx((5.0 + 14.0) / 2)


@pytest.mark.parametrize("meta", [{"preset": "voc"}, {"quick": True}, {"overrides": ["data.synthetic.p_cooc=0.5"]}])
def test_rows_of_another_world_are_refused(bench, tmp_path, meta):
    res = {"rows": {}, "context": {}, "clip_es_variants": {}, "failures": []}
    with pytest.raises(SystemExit, match="cannot join"):
        bench.merge_rows(res, _earlier(bench, tmp_path, **meta), [0, 1], False, [])
    assert res["rows"] == {}
