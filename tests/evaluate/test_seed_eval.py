"""Seed evaluation from a CAM folder: perfect seeds, missing files, size mismatches, the written report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semples.data.base import DataError
from semples.evaluate.seeds import ORACLE_NOTE, evaluate_seeds, write_seed_report
from semples.infer.cam_io import cam_path, save_cam
from semples.metrics.sweep import threshold_grid
from tests.conftest import ToyDataset


def write_seeds(ds, folder, fg=0.8, bg=0.2, skip=()):
    """Seeds that are `fg` on each labelled object and `bg` elsewhere."""
    for i, image_id in enumerate(ds.ids):
        if i in skip:
            continue
        mask = ds.load_mask(i)
        classes = np.flatnonzero(ds.labels(i))
        cams = np.stack([np.where(mask == c + 1, fg, bg) for c in classes]).astype(np.float32)
        save_cam(cam_path(folder, image_id), cams, classes)


def test_perfect_seeds_reach_miou_one_between_bg_and_fg_scores(tmp_path):
    ds = ToyDataset(n=6)
    write_seeds(ds, tmp_path / "cams")
    ev = evaluate_seeds(tmp_path / "cams", ds, threshold_grid(0.0, 0.95, 0.05), num_workers=3, progress=False)
    assert ev.result.images == 6 and ev.selection == ORACLE_NOTE
    assert ev.threshold == pytest.approx(0.2)  # lowest t of the perfect plateau [0.2, 0.8)
    assert ev.scores.miou == pytest.approx(1.0)
    curve = {round(r["threshold"], 2): r["miou"] for r in ev.result.curve()}
    assert curve[0.15] < 1.0 and curve[0.75] == pytest.approx(1.0) and curve[0.8] < 1.0


def test_a_given_threshold_is_reported_and_labelled(tmp_path):
    ds = ToyDataset(n=4)
    write_seeds(ds, tmp_path / "cams")
    ev = evaluate_seeds(tmp_path / "cams", ds, threshold_grid(0.0, 0.95, 0.05), threshold=0.85, progress=False)
    assert ev.threshold == pytest.approx(0.85) and "given" in ev.selection
    assert ev.scores.miou < 1.0 and ev.result.best.miou == pytest.approx(1.0)
    off_grid = evaluate_seeds(tmp_path / "cams", ds, threshold_grid(0.0, 0.9, 0.1), threshold=0.33, progress=False)
    assert off_grid.threshold == pytest.approx(0.33)  # added to the grid


def test_missing_cams_are_an_error_unless_allowed(tmp_path):
    ds = ToyDataset(n=4)
    write_seeds(ds, tmp_path / "cams", skip={1})
    with pytest.raises(DataError, match="1 of 4 images"):
        evaluate_seeds(tmp_path / "cams", ds, threshold_grid(0, 0.9, 0.1), progress=False)
    ev = evaluate_seeds(tmp_path / "cams", ds, threshold_grid(0, 0.9, 0.1), allow_missing=True, progress=False)
    assert ev.missing == [ds.ids[1]] and ev.result.images == 3


def test_cams_of_another_size_are_refused(tmp_path):
    ds = ToyDataset(n=2)
    save_cam(cam_path(tmp_path, ds.ids[0]), np.zeros((1, 5, 5)), [0])
    save_cam(cam_path(tmp_path, ds.ids[1]), np.zeros((1, 5, 5)), [0])
    with pytest.raises(DataError, match="another dataset"):
        evaluate_seeds(tmp_path, ds, threshold_grid(0, 0.9, 0.1), progress=False)


def test_report_files(tmp_path):
    ds = ToyDataset(n=4)
    write_seeds(ds, tmp_path / "cams", fg=0.75, bg=0.25)  # exact in float16
    ev = evaluate_seeds(tmp_path / "cams", ds, threshold_grid(0.0, 0.95, 0.01), progress=False)
    manifest = {"inputs": {"generator": {"path": "runs/x/refine/checkpoint.pt", "sha256": "ab" * 32}},
                "settings": {"scales": [1]}}
    metrics = write_seed_report(tmp_path / "eval", ev, cams_dir=tmp_path / "cams", split="val", dataset_name="toy",
                                cams_manifest=manifest)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["threshold"] == pytest.approx(0.25) and saved["miou"] == pytest.approx(1.0)
    assert saved["threshold_selection"] == "threshold chosen on this split's ground truth (oracle, as in the paper)"
    assert len(saved["curve"]) == 96 and saved["grid"]["count"] == 96
    assert set(saved["per_class"]) == {"background", "cat", "dog", "boat"}
    assert saved["cams"]["inputs"]["generator"]["sha256"] == "ab" * 32
    assert np.asarray(saved["confusion_matrix"]).shape == (4, 4)
    md = (tmp_path / "eval" / "metrics.md").read_text()
    assert "threshold chosen on this split's ground truth" in md and "| background |" in md
    assert md.count("\n| 0.") >= 95  # the whole curve
    assert (tmp_path / "eval" / "threshold_curve.png").stat().st_size > 1000
    assert metrics["bg_false_positive_rate"] == pytest.approx(0.0)


def test_the_leak_rate_is_reported_for_datasets_that_know_their_backgrounds(tmp_path):
    from semples.config import load_config
    from semples.data import build_dataset
    from semples.metrics import LeakRate
    from semples.metrics.sweep import seed_labels

    ds = build_dataset(load_config("tiny").data, "train")
    rng = np.random.default_rng(1)
    for i, image_id in enumerate(ds.ids):  # noisy seeds that spill onto the background
        classes = np.flatnonzero(ds.labels(i))
        mask = ds.load_mask(i)
        cams = np.stack([0.6 * (mask == c + 1) + 0.5 * rng.random(mask.shape) for c in classes])
        save_cam(cam_path(tmp_path / "cams", image_id), cams.astype(np.float32), classes)
    ev = evaluate_seeds(tmp_path / "cams", ds, threshold_grid(0.0, 0.95, 0.05), progress=False)
    metrics = write_seed_report(tmp_path / "eval", ev, cams_dir=tmp_path / "cams", split="train",
                                dataset_name=ds.name)
    by_hand = LeakRate(ds.class_background)
    for i, image_id in enumerate(ds.ids):
        from semples.infer.cam_io import load_cam

        cams, classes = load_cam(cam_path(tmp_path / "cams", image_id))
        by_hand.update(seed_labels(cams, ev.threshold, classes), ds.load_mask(i), ds.background_map(i), ds.labels(i))
    assert metrics["leak"]["threshold"] == pytest.approx(ev.threshold)
    assert metrics["leak"]["per_class"] == by_hand.to_dict(list(ds.classes.names))["per_class"]
    assert "leak rate at t" in (tmp_path / "eval" / "metrics.md").read_text()
    # datasets without background types have no leak entry
    toy = ToyDataset(n=3)
    write_seeds(toy, tmp_path / "toy")
    assert evaluate_seeds(tmp_path / "toy", toy, threshold_grid(0, 0.9, 0.1), progress=False).leak is None
