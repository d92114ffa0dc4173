"""`semples cams` -> `semples eval-seeds` -> `semples figures` through main([...]): the synthetic world with a tiny
trained generator, and the real fixtures (voc128, coco128) with random weights (plumbing and sizes, not quality)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semples.cli import main
from semples.data.io import write_mask_png
from semples.infer.cam_io import load_cam
from semples.utils.checkpoint_io import sha256_file
from tests.conftest import FIXTURES


def test_train_cams_eval_seeds_figures_end_to_end(tmp_path, capsys):
    out = ["--set", f"output_dir={tmp_path}"]
    assert main(["train", "--stage", "classify", "--config", "tiny", *out]) == 0
    run_dir = tmp_path / "tiny" / "classify"
    capsys.readouterr()

    assert main(["cams", "--config", "tiny", "--generator", str(run_dir), "--no-progress", *out]) == 0
    cams = tmp_path / "tiny" / "cams" / "val"
    files = sorted(cams.glob("*.npz"))
    assert len(files) == 4 and "wrote 4" in capsys.readouterr().out
    manifest = json.loads((cams / "manifest.json").read_text())
    assert manifest["inputs"]["generator"]["sha256"] == sha256_file(run_dir / "checkpoint.pt")
    assert manifest["complete"] and manifest["settings"]["scales"] == [1.0, 1.2] and manifest["data"]["split"] == "val"
    from semples.config import load_config
    from semples.data import build_dataset

    ds = build_dataset(load_config("tiny").data, "val")
    for i, image_id in enumerate(ds.ids):
        maps, classes = load_cam(cams / f"{image_id}.npz")
        assert maps.shape[1:] == ds.load_mask(i).shape  # full resolution
        assert classes.tolist() == np.flatnonzero(ds.labels(i)).tolist()

    assert main(["cams", "--config", "tiny", "--generator", str(run_dir), "--no-progress", *out]) == 0
    assert "wrote 0, skipped 4" in capsys.readouterr().out

    assert main(["eval-seeds", "--config", "tiny", "--no-progress", *out]) == 0
    assert "threshold chosen on this split's ground truth" in capsys.readouterr().out
    ev = tmp_path / "tiny" / "eval_seeds" / "val"
    assert {p.name for p in ev.iterdir()} >= {"metrics.json", "metrics.md", "threshold_curve.png", "samples.png"}
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["images"] == 4 and len(metrics["curve"]) == 96 and 0 <= metrics["miou"] <= 1
    assert len(metrics["per_class"]) == 7  # background + 6 synthetic classes

    (tmp_path / "pseudo").mkdir()
    write_mask_png(tmp_path / "pseudo" / "val_000000.png", np.zeros((64, 80), np.uint8))
    grid = tmp_path / "grid.png"
    assert main(["figures", "--config", "tiny", "--cams", str(cams), "--eval", str(ev), "--pseudo-masks",
                 str(tmp_path / "pseudo"), "--num", "3", "--heatmaps", "per-class", "--out", str(grid), *out]) == 0
    assert grid.stat().st_size > 1000


def test_cams_needs_a_generator(tmp_path, capsys):
    assert main(["cams", "--config", "tiny", "--set", f"output_dir={tmp_path}"]) == 2
    assert "--generator" in capsys.readouterr().err


def test_eval_seeds_without_cams_says_what_to_run(tmp_path, capsys):
    assert main(["eval-seeds", "--config", "tiny", "--set", f"output_dir={tmp_path}"]) == 1
    assert "semples cams" in capsys.readouterr().err


@pytest.mark.parametrize("name,dataset,split", [("voc128", "voc", "val"), ("coco128", "coco", "train2017")])
def test_real_fixtures_through_cams_and_eval_seeds(tmp_path, monkeypatch, capsys, name, dataset, split):
    root = FIXTURES / name
    if not root.is_dir():
        pytest.skip(f"real fixtures not found at {root} (set SEMPLES_FIXTURES)")
    monkeypatch.setenv("SEMPLES_CACHE_DIR", str(tmp_path / "cache"))
    cfg = ["--config", "tiny", "--set", f"output_dir={tmp_path}", "--set", f"data.dataset={dataset}",
           "--set", f"data.root={root}", "--set", f"cams.split={split}", "--set", "cams.scales=[0.5, 0.6]"]
    # random weights; small scales keep the full-resolution attention cheap — outputs are still full resolution
    assert main(["cams", *cfg, "--generator", "random", "--limit", "2", "--no-progress"]) == 0
    cams = tmp_path / "tiny" / "cams" / split
    manifest = json.loads((cams / "manifest.json").read_text())
    assert manifest["counts"]["present"] == 2 and not manifest["complete"]
    assert len(manifest["classes"]) == (20 if dataset == "voc" else 80)
    assert main(["eval-seeds", *cfg, "--limit", "2", "--samples", "2", "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "tiny" / "eval_seeds" / split / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["split"] == split
    assert len(metrics["per_class"]) == len(manifest["classes"]) + 1
    from semples.config import load_config
    from semples.data import build_dataset

    ds = build_dataset(load_config("tiny", [f"data.dataset={dataset}", f"data.root={root}"]).data, split)
    for i in range(2):
        maps, classes = load_cam(cams / f"{ds.ids[i]}.npz")
        assert maps.shape[1:] == ds.load_mask(i).shape  # real image sizes, full resolution
        assert classes.tolist() == np.flatnonzero(ds.labels(i)).tolist()
