"""COCO: the real fixture end to end, masks vs a direct pycocotools rasterisation, crowd/overlap rules, export."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from semples.data import DataConfig, DataError, build_dataset
from semples.data.classes import COCO_OFFICIAL_TO_CONTIGUOUS, coco_contiguous_to_official_lut
from semples.data.coco import COCODataset, export_masks
from semples.data.io import write_mask_png

pytest.importorskip("pycocotools")


def reference_mask(coco, image_id: int) -> np.ndarray:
    """The documented rule written directly with pycocotools' COCO API: crowd -> 255, then instances by
    decreasing area (smaller ones on top), label = contiguous id."""
    info = coco.loadImgs(image_id)[0]
    out = np.zeros((info["height"], info["width"]), np.uint8)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
    for a in anns:
        if a["iscrowd"]:
            out[coco.annToMask(a) > 0] = 255
    for a in sorted((a for a in anns if not a["iscrowd"]), key=lambda a: (-a["area"], a["id"])):
        out[coco.annToMask(a) > 0] = COCO_OFFICIAL_TO_CONTIGUOUS[a["category_id"]]
    return out


def test_coco128_end_to_end_and_masks_match_pycocotools(coco128, capsys):
    from pycocotools.coco import COCO

    ds = build_dataset(DataConfig(dataset="coco", root=str(coco128)), "train")
    assert ds.split == "train2017" and len(ds) == 126  # 128 images, 2 without annotations left out
    assert any("2 of 128 images have no annotation" in n for n in ds.notes)
    coco = COCO(str(coco128 / "annotations" / "instances_train2017.json"))
    capsys.readouterr()
    by_name = {img["file_name"]: img["id"] for img in coco.dataset["images"]}
    for i in range(0, len(ds), 5):
        item = ds[i]
        image_id = by_name[f"{item.id}.jpg"]
        assert np.array_equal(item.mask, reference_mask(coco, image_id)), item.id
        cats = {COCO_OFFICIAL_TO_CONTIGUOUS[a["category_id"]] - 1 for a in coco.imgToAnns[image_id]}
        assert set(np.flatnonzero(item.labels).tolist()) == cats
        assert item.mask.shape == (item.image.height, item.image.width)


def _two_boxes(gen, tmp_path, split="train2014", crowd=False):
    images = [{"id": 7, "file_name": f"COCO_{split}_000000000007.jpg", "width": 40, "height": 30},
              {"id": 8, "file_name": f"COCO_{split}_000000000008.jpg", "width": 40, "height": 30}]
    anns = [  # a big dining table (67) under a small cup (47); image 8 has no annotation
        {"id": 1, "image_id": 7, "category_id": 67, "iscrowd": 0, "area": 600.0,
         "segmentation": [gen.polygon(0, 0, 30, 20)]},
        {"id": 2, "image_id": 7, "category_id": 47, "iscrowd": 0, "area": 100.0,
         "segmentation": [gen.polygon(10, 5, 20, 15)]},
    ]
    if crowd:
        from pycocotools import mask as mask_utils

        m = np.zeros((30, 40), np.uint8, order="F")
        m[20:30, 0:40] = 1
        rle = mask_utils.encode(np.asfortranarray(m))
        counts = []  # uncompressed RLE, as crowd annotations are stored
        flat, prev, run = m.flatten(order="F"), 0, 0
        for v in flat:
            if v != prev:
                counts.append(run)
                run, prev = 0, v
            run += 1
        counts.append(run)
        assert mask_utils.area(rle) == 400
        anns.append({"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1, "area": 400.0,
                     "segmentation": {"size": [30, 40], "counts": counts}})
        anns.append({"id": 4, "image_id": 7, "category_id": 18, "iscrowd": 0, "area": 20.0,
                     "segmentation": [gen.polygon(35, 22, 39, 27)]})
    return gen.make_coco(tmp_path, split, images, anns)


def test_overlap_rule_smaller_on_top_and_crowd_is_ignore(tmp_path, gen):
    _two_boxes(gen, tmp_path, crowd=True)
    ds = COCODataset(tmp_path, "train")  # "train" -> train2014
    assert ds.split == "train2014" and ds.ids == ["COCO_train2014_000000000007"]
    mask = ds[0].mask
    table, cup, dog = (COCO_OFFICIAL_TO_CONTIGUOUS[c] for c in (67, 47, 18))
    assert mask[10, 15] == cup  # the small cup stays visible on the table
    assert mask[2, 2] == table
    assert mask[25, 5] == 255  # crowd region
    assert mask[24, 36] == dog  # an instance wins over the crowd
    assert np.flatnonzero(ds.labels(0)).tolist() == sorted(c - 1 for c in (1, table, cup, dog))  # crowd counts


def test_empty_image_policy_keep(tmp_path, gen):
    _two_boxes(gen, tmp_path)
    ds = COCODataset(tmp_path, "train2014", options={"empty_labels": "keep"})
    assert len(ds) == 2 and not ds.labels(1).any()
    assert set(np.unique(ds[1].mask).tolist()) == {0}


def test_export_masks_then_read_pngs(tmp_path, gen, monkeypatch):
    _two_boxes(gen, tmp_path / "coco", crowd=True)
    ds = COCODataset(tmp_path / "coco", "train2014")
    expected = ds[0].mask
    out = tmp_path / "masks"
    assert export_masks(ds, out, progress=False) == (1, 0)
    assert export_masks(ds, out, progress=False) == (0, 1)  # already there: skipped

    def no_json(self):
        raise AssertionError("annotation file read although labels are cached and masks exported")

    monkeypatch.setattr(COCODataset, "_read_json", no_json)
    again = COCODataset(tmp_path / "coco", "train2014", options={"mask_dir": str(out)})
    assert again.mask_path(0) == out / "COCO_train2014_000000000007.png"
    assert np.array_equal(again[0].mask, expected)
    assert np.flatnonzero(again.labels(0)).tolist() == np.flatnonzero(ds.labels(0)).tolist()


def test_official_id_pngs_are_converted(tmp_path, gen):
    _two_boxes(gen, tmp_path / "coco")
    ds = COCODataset(tmp_path / "coco", "train2014")
    contiguous = ds[0].mask
    official = coco_contiguous_to_official_lut()[contiguous]
    assert official.max() == 67
    write_mask_png(tmp_path / "official" / "COCO_train2014_000000000007.png", official)
    conv = COCODataset(tmp_path / "coco", "train2014", options={"mask_dir": str(tmp_path / "official"),
                                                                  "mask_ids": "official"})
    assert np.array_equal(conv[0].mask, contiguous)
    plain = COCODataset(tmp_path / "coco", "train2014", options={"mask_dir": str(tmp_path / "official")})
    # 67 and 47 are valid contiguous labels too: the mismatch with the annotations gives the convention away
    with pytest.raises(DataError, match=r"COCO_train2014_000000000007.png: mask has classes \[47, 67\] that the "
                                        r"annotations of this image do not name; .*mask_ids: official"):
        plain[0]


def test_2017_naming_and_year(tmp_path, gen):
    _two_boxes(gen, tmp_path, split="val2017")
    with pytest.raises(DataError, match="instances_val2014.json: annotation file of split 'val2014' is missing; "
                                        "splits found: val2017"):
        COCODataset(tmp_path, "val", options={"year": 2014})
    assert COCODataset(tmp_path, "val").split == "val2017"


def test_not_an_official_instances_file(tmp_path, gen):
    _two_boxes(gen, tmp_path)
    path = tmp_path / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    data["categories"][11] = {"id": 13, "name": "street sign"}
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="category id 13 is 'street sign' but official COCO id 13 is 'stop sign'"):
        COCODataset(tmp_path, "train2014")


def test_missing_pycocotools_is_a_clear_error(tmp_path, gen, monkeypatch):
    _two_boxes(gen, tmp_path)
    ds = COCODataset(tmp_path, "train2014")
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(DataError, match="COCO needs pycocotools: pip install pycocotools"):
        ds[0]


def test_an_image_entry_without_width_or_with_a_bad_id_is_one_line(tmp_path, gen):
    """Issue 12: a COCO image entry without `width` (or otherwise malformed) names the file and the entry."""
    _two_boxes(gen, tmp_path)
    path = tmp_path / "annotations" / "instances_train2014.json"
    data = json.loads(path.read_text())
    del data["images"][1]["width"]
    data["images"].append("not an object")
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as info:
        COCODataset(tmp_path, "train2014")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: images[1] (id 8): has no 'width'") and "1 more" in msg
    ds = COCODataset(tmp_path, "train2014", skip_bad=True)
    assert ds.ids == ["COCO_train2014_000000000007"] and len(ds.bad_entries) == 2
    data["images"] = "nope"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="not a COCO instances file"):
        COCODataset(tmp_path, "train2014")
    path.write_text('{"a":' * 50_000 + "1" + "}" * 50_000)
    with pytest.raises(DataError, match=r"instances_train2014\.json: annotation file is nested too deeply"):
        COCODataset(tmp_path, "train2014")
