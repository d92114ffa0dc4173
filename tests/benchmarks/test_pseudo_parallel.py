"""benchmarks/pseudo_parallel.py: its synthetic VOC folder and seeds are what the readers expect (fast), and a tiny
end-to-end run through the `semples pseudo-masks` command (slow: four fresh processes) finds the same bytes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmarks.modules import benchmark_module


@pytest.fixture(scope="module")
def bench():
    with benchmark_module("pseudo_parallel") as module:
        yield module


def test_synthetic_voc_and_seeds_read_back(bench, tmp_path, monkeypatch):
    from semples.data import DataConfig, build_dataset
    from semples.infer.cam_io import cam_path, load_cam

    monkeypatch.setenv("SEMPLES_CACHE_DIR", str(tmp_path / "cache"))
    root = bench.make_synthetic_voc(tmp_path / "voc", 4, (32, 40))
    dataset = build_dataset(DataConfig(dataset="voc", root=str(root), num_workers=0), "train")
    assert len(dataset) == 4 and dataset.load_image(0).size == (40, 32)
    bench.write_seeds(dataset, tmp_path / "cams", 4)
    for i in range(4):
        maps, classes = load_cam(cam_path(tmp_path / "cams", dataset.ids[i]))
        assert list(classes) == list(np.flatnonzero(dataset.labels(i))) and len(classes) >= 1
        assert maps.shape == (len(classes), 32, 40) and 0.0 <= maps.min() and maps.max() <= 1.0


def test_parse_args_needs_enough_images_for_the_pool(bench):
    assert bench.parse_args(["--tiny"]).images == 12
    with pytest.raises(SystemExit):
        bench.parse_args(["--images", "6", "--workers", "2"])


@pytest.mark.slow
def test_tiny_run_gives_identical_masks(bench, tmp_path):
    result = bench.main(["--tiny", "--out", str(tmp_path / "r.json")])
    assert result["identical"] and result["images"] == 12
    assert all(r["compute_processes"] == 2 for r in result["runs"][2])
    assert all(r["compute_processes"] == 1 for r in result["runs"][1])
