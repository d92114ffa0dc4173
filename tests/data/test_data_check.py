"""`semples data check` / `export-masks` through `semples.cli.main`, on the real fixtures and on broken data."""

from __future__ import annotations

import re

import numpy as np
import pytest

from semples.cli import main
from semples.data import detect_layout
from semples.data.check import check_dataset
from semples.data.config import DataConfig
from semples.data.io import write_mask_png


def _row(out: str, name: str) -> list[str]:
    line = next(line for line in out.splitlines() if re.match(rf"^\s*{re.escape(name)}\s", line))
    return line.split()


def test_check_voc128_folder(voc128, capsys):
    assert main(["data", "check", str(voc128), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert _row(out, "train") == ["train", "73", "73", "73", "0"]
    assert _row(out, "val") == ["val", "24", "24", "24", "0"]
    person = _row(out, "15 person")
    assert int(person[2]) > 0 and "OK: the dataset can be used" in out


def test_check_coco128_via_yaml_config(coco128, tmp_path, capsys):
    cfg = tmp_path / "coco.yaml"
    cfg.write_text(f"data:\n  dataset: coco\n  root: {coco128}\n  train_split: train2017\n  eval_split: train2017\n")
    assert main(["data", "check", str(cfg), "--no-progress", "--quick"]) == 0
    out = capsys.readouterr().out
    assert _row(out, "train2017")[:5] == ["train2017", "126", "126", "126", "0"]
    assert "2 of 128 images have no annotation" in out


def test_check_counts_match_the_dataset(voc128):
    report = check_dataset(DataConfig(dataset="voc", root=str(voc128)), ["val"], progress=False)
    from semples.data.voc import VOCDataset

    ds = VOCDataset(voc128, "val")
    assert report.usable and report.splits[0].class_counts == ds.known_labels().sum(0).astype(int).tolist()


def test_check_lists_every_problem_with_its_path_and_fails(tmp_path, gen, capsys):
    voc = gen.make_voc(tmp_path, {"train": ["a1", "a2", "a3", "a4"], "val": ["b1"]})
    data = (voc / "JPEGImages" / "a1.jpg").read_bytes()
    (voc / "JPEGImages" / "a1.jpg").write_bytes(data[: len(data) // 2])
    write_mask_png(voc / "SegmentationClass" / "a2.png", np.zeros((5, 5), np.uint8))
    (voc / "SegmentationClass" / "a3.png").unlink()
    with open(voc / "ImageSets" / "Segmentation" / "train.txt", "a") as f:
        f.write("../x\na4\n")
    assert main(["data", "check", str(tmp_path), "--dataset", "voc", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert _row(out, "train")[:5] == ["train", "4", "3", "2", "3"]  # a1 and a4 labelled; a1, a2, a3 bad
    assert f"{voc / 'JPEGImages' / 'a1.jpg'}: truncated or corrupt image" in out
    assert f"{voc / 'SegmentationClass' / 'a2.png'}: " in out  # only background, and wrong size
    assert f"{voc / 'SegmentationClass' / 'a3.png'}: mask file is missing" in out
    assert "train.txt:5: entry '../x'" in out
    assert "train.txt:6: duplicate id 'a4'" in out
    assert "UNUSABLE" in out and "data.skip_bad" in out


def test_check_unbuildable_split_and_unknown_layout(tmp_path, gen, capsys):
    gen.make_voc(tmp_path, {"train": ["a1"]})
    assert main(["data", "check", str(tmp_path), "--split", "val", "--no-progress"]) == 1
    assert "val.txt: list file of split 'val' is missing" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "check", str(empty)]) == 1
    assert "pass --dataset voc|coco|folder" in capsys.readouterr().err
    assert detect_layout(tmp_path) == "voc"


def test_export_masks_verb(tmp_path, gen, capsys):
    pytest.importorskip("pycocotools")
    images = [{"id": 1, "file_name": "000000000001.jpg", "width": 20, "height": 10}]
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 50.0,
             "segmentation": [gen.polygon(0, 0, 10, 5)]}]
    gen.make_coco(tmp_path / "coco", "val2017", images, anns)
    out_dir = tmp_path / "masks"
    assert main(["data", "export-masks", str(tmp_path / "coco"), "--split", "val", "--out", str(out_dir)]) == 0
    assert "1 masks written" in capsys.readouterr().out
    from PIL import Image

    assert np.asarray(Image.open(out_dir / "000000000001.png"))[2, 2] == 3
    assert main(["data", "check", str(tmp_path / "coco"), "--no-progress",
                 "--set", f"data.options.mask_dir={out_dir}"]) == 0
