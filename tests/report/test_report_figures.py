"""Palette, threshold curve and sample grids (every optional column)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from semples.data.io import write_mask_png
from semples.infer.cam_io import cam_path, save_cam
from semples.report.figures import (
    colorize_labels,
    heatmap_overlay,
    label_palette,
    pick_samples,
    plot_threshold_curve,
    sample_rows,
    write_sample_grid,
)
from tests.conftest import ToyDataset


def test_voc_palette_colours():
    pal = label_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0] and pal[15].tolist() == [192, 128, 128]
    assert pal[255].tolist() == [224, 224, 192]
    rgb = colorize_labels(np.array([[0, 1], [15, 255]]))
    assert rgb.shape == (2, 2, 3) and rgb[1, 1].tolist() == [224, 224, 192]


def test_heatmap_overlay_blends():
    img = np.zeros((4, 5, 3), np.uint8)
    out = heatmap_overlay(img, np.linspace(0, 1, 20).reshape(4, 5), alpha=1.0)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and not np.array_equal(out[0, 0], out[-1, -1])


def test_threshold_curve_png(tmp_path):
    t = np.round(np.arange(0, 0.96, 0.01), 2)
    miou = list(np.exp(-((t - 0.4) ** 2) / 0.02) * 0.6)
    miou[3] = None  # undefined points are allowed
    p = plot_threshold_curve(tmp_path / "c.png", t, miou, chosen=0.4, bg_false_positive_rate=list(1 - t),
                             title="test", note="threshold chosen on this split's ground truth")
    with Image.open(p) as im:
        assert im.format == "PNG" and im.width > 300


def _cams_for(ds, folder):
    for i, image_id in enumerate(ds.ids):
        mask = ds.load_mask(i)
        classes = np.flatnonzero(ds.labels(i))
        save_cam(cam_path(folder, image_id), np.stack([(mask == c + 1).astype(np.float32) for c in classes]),
                 classes)


def test_sample_grid_with_all_columns_and_missing_files(tmp_path):
    ds = ToyDataset(n=5)
    _cams_for(ds, tmp_path / "cams")
    (tmp_path / "pseudo").mkdir()
    for i in (0, 2):  # the other pseudo masks are missing: their panels say so
        write_mask_png(tmp_path / "pseudo" / f"{ds.ids[i]}.png", ds.load_mask(i))
    rows, columns = sample_rows(ds, [0, 1, 2], cams_dir=tmp_path / "cams", threshold=0.5,
                                pseudo_dir=tmp_path / "pseudo", pred_dir=tmp_path / "nothing", heatmaps="per-class")
    assert columns == ["image", "ground truth", "seed heat maps", "seed mask (t = 0.50)", "pseudo mask", "prediction"]
    assert rows[1].cells["pseudo mask"].image is None and rows[1].cells["pseudo mask"].caption == "missing"
    assert rows[0].cells["pseudo mask"].image is not None
    # perfect seeds: the seed mask equals the coloured ground truth
    np.testing.assert_array_equal(rows[0].cells["seed mask (t = 0.50)"].image, rows[0].cells["ground truth"].image)
    assert len(rows[0].cells["seed heat maps"]) == int(ds.labels(0).sum())
    p = write_sample_grid(tmp_path / "grid.png", ds, [0, 1, 2, 3], cams_dir=tmp_path / "cams", threshold=0.3,
                          pseudo_dir=tmp_path / "pseudo", title="toy")
    with Image.open(p) as im:
        assert im.format == "PNG" and im.width > im.height / 2


def test_grid_without_optional_columns(tmp_path):
    ds = ToyDataset(n=3)
    rows, columns = sample_rows(ds, [0, 1])
    assert columns == ["image", "ground truth"]
    write_sample_grid(tmp_path / "g.png", ds, [2])
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_pick_samples_is_reproducible():
    assert pick_samples(100, 5, seed=3) == pick_samples(100, 5, seed=3)
    assert pick_samples(3, 10) == [0, 1, 2]
