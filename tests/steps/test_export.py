"""`semples export`: COCO RLE json (the dataset's category ids), VOC test-server RGB PNGs and index PNGs, each
read back to the identical labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from semples.cli import main
from semples.data.io import read_mask, write_mask_png
from semples.runs import FolderRecord, write_folder_manifest

pytest.importorskip("pycocotools")


def label_folder(tmp_path, names, dataset="synthetic", count=3, ignore=True):
    """Random label maps with blobs of several classes, a 255 band, and a manifest naming the classes."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "masks"
    maps = {}
    for i in range(count):
        h, w = 30 + 7 * i, 41 - 3 * i
        m = np.zeros((h, w), np.uint8)
        for k in rng.choice(np.arange(1, len(names) + 1), size=min(3, len(names)), replace=False):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            m[y:y + rng.integers(4, 12), x:x + rng.integers(4, 12)] = k
        if ignore:
            m[0, :] = 255
        image_id = f"COCO_val2014_{i * 7 + 42:012d}" if dataset == "coco" else f"img_{i}"
        write_mask_png(folder / f"{image_id}.png", m)
        maps[image_id] = m
    write_folder_manifest(folder, FolderRecord(kind="pseudo-masks", producer="test", data={"dataset": dataset},
                                               classes=list(names), inputs={}, settings={}), complete=True)
    return folder, maps


def test_coco_export_round_trips_with_official_category_ids(tmp_path):
    from semples.data.classes import COCO_NAMES, COCO_OFFICIAL_IDS
    from semples.steps.export import read_coco

    folder, maps = label_folder(tmp_path, COCO_NAMES, dataset="coco")
    out = tmp_path / "coco.json"
    assert main(["export", "--masks", str(folder), "--to", "coco", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [c["id"] for c in data["categories"]] == list(COCO_OFFICIAL_IDS)  # 1..90 with gaps, not 1..80
    assert [img["id"] for img in data["images"]] == [42, 49, 56]  # the numbers of the COCO file names
    for ann in data["annotations"]:
        m = maps[next(i["file_name"] for i in data["images"] if i["id"] == ann["image_id"])]
        label = COCO_OFFICIAL_IDS.index(ann["category_id"]) + 1
        assert ann["area"] == int((m == label).sum()) and isinstance(ann["segmentation"]["counts"], str)
    # pycocotools reads the file as a dataset
    from pycocotools.coco import COCO

    coco = COCO(str(out))
    assert len(coco.getAnnIds()) == len(data["annotations"])
    back, names = read_coco(out)
    assert names == list(COCO_NAMES) and set(back) == set(maps)
    for image_id, m in maps.items():
        assert np.array_equal(back[image_id], m)  # identical labels, 255 included
    # and through the CLI: the json back to index PNGs
    assert main(["export", "--masks", str(out), "--to", "index", "--out", str(tmp_path / "back")]) == 0
    for image_id, m in maps.items():
        assert np.array_equal(read_mask(tmp_path / "back" / f"{image_id}.png", 80), m)


def test_other_datasets_use_label_k_as_category_k(tmp_path):
    folder, maps = label_folder(tmp_path, ["boat", "plane", "cow"], ignore=False)
    out = tmp_path / "c.json"
    assert main(["export", "--masks", str(folder), "--to", "coco", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(1, "boat"), (2, "plane"), (3, "cow")]
    assert [i["id"] for i in data["images"]] == [1, 2, 3] or [i["id"] for i in data["images"]] == [0, 1, 2]
    assert all("ignore_rle" not in i for i in data["images"])


def test_voc_rgb_and_index_round_trip(tmp_path):
    from semples.data.classes import VOC_NAMES
    from semples.data.io import voc_colormap

    folder, maps = label_folder(tmp_path, VOC_NAMES, dataset="voc")
    rgb = tmp_path / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert main(["export", "--masks", str(folder), "--to", "voc-rgb", "--out", str(rgb)]) == 0
    for image_id, m in maps.items():
        img = Image.open(rgb / f"{image_id}.png")
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), voc_colormap()[m])
    index = tmp_path / "index"
    assert main(["export", "--config", "tiny", "--masks", str(rgb), "--to", "index", "--out", str(index),
                 "--set", "data.dataset=voc", "--set", f"data.root={tmp_path}"]) == 1  # no manifest, no VOC here
    (rgb / "manifest.json").write_text((folder / "manifest.json").read_text())
    assert main(["export", "--masks", str(rgb), "--to", "index", "--out", str(index)]) == 0
    for image_id, m in maps.items():
        assert Image.open(index / f"{image_id}.png").mode == "P"
        assert np.array_equal(read_mask(index / f"{image_id}.png", 20), m)


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert main(["export", "--masks", str(tmp_path / "none"), "--to", "coco", "--out", str(tmp_path / "x.json"),
                 "--config", "tiny"]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main(["export", "--masks", str(tmp_path)]) == 2
