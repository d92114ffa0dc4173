"""Folder datasets: a user's images + labels file (CSV / JSON), class list, optional masks and split lists."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semples.data import DataConfig, DataError, build_dataset
from semples.data.folder import FolderDataset, available_splits
from semples.data.io import write_mask_png


def make_folder(root, gen, names=("a.jpg", "sub/b.png", "c.jpg"), size=(30, 20)):
    for n, name in enumerate(names):
        p = root / "images" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        gen.random_image(*size, seed=n).save(p)
    return root


def test_csv_labels_classes_from_labels(tmp_path, gen):
    make_folder(tmp_path, gen)
    (tmp_path / "labels.csv").write_text("image,labels\na.jpg,cat;traffic_cone\nsub/b,dog\nc.jpg,cat\nc.jpg,dog\n")
    ds = build_dataset(DataConfig(dataset="folder", root=str(tmp_path)), "train")
    assert ds.classes.names == ("cat", "dog", "traffic_cone")  # sorted, from the labels
    assert ds.classes.prompt_names[2] == "traffic cone"
    assert ds.ids == ["a", "sub/b", "c"] and not ds.has_masks
    assert ds.known_labels().tolist() == [[1, 0, 1], [0, 1, 0], [1, 1, 0]]  # rows of c merged
    item = ds[1]
    assert item.image.size == (30, 20) and item.mask is None


def test_json_labels_class_file_masks_and_lists(tmp_path, gen):
    make_folder(tmp_path, gen)
    (tmp_path / "classes.txt").write_text("dog\ncat\n\n")
    (tmp_path / "labels.json").write_text(json.dumps([{"image": "a.jpg", "labels": ["cat"]},
                                                      {"image": "sub/b.png", "labels": "dog;cat"},
                                                      {"image": "c.jpg", "labels": ["dog"]}]))
    for name, label in (("a", 2), ("sub/b", 1), ("c", 1)):
        write_mask_png(tmp_path / "masks" / f"{name}.png", gen.box_mask(30, 20, label))
    (tmp_path / "val.txt").write_text("c.jpg\n\nsub/b\n")
    assert available_splits(tmp_path) == ["all", "val"]
    ds = FolderDataset(tmp_path, "val")
    assert ds.classes.names == ("dog", "cat") and ds.ids == ["c", "sub/b"] and ds.has_masks
    assert ds.known_labels().tolist() == [[1, 0], [1, 1]]
    assert ds[0].mask[10, 15] == 1 and ds[0].mask[0, 0] == 0
    with pytest.raises(DataError, match=r"test.txt: list file of split 'test' is missing"):
        FolderDataset(tmp_path, "test")


def test_unlabelled_images_are_reported_not_silently_dropped(tmp_path, gen):
    make_folder(tmp_path, gen)
    (tmp_path / "labels.csv").write_text("a.jpg,cat\n")
    ds = FolderDataset(tmp_path)
    assert ds.ids == ["a"]
    assert any("2 images have no entry in labels.csv" in w for w in ds.warnings)


def test_no_labels_file_is_a_clear_error(tmp_path, gen):
    make_folder(tmp_path, gen)
    with pytest.raises(DataError, match="no labels file .*set data.options.labels_file"):
        FolderDataset(tmp_path)


def test_options_rename_everything(tmp_path, gen):
    for n in range(2):
        gen.random_image(16, 16, seed=n).save(tmp_path / f"img{n}.jpg")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "tags.tsv").write_text("img0.jpg\tbird\nimg1.jpg\tboat|bird\n")
    ds = FolderDataset(tmp_path, "all", options={"labels_file": "meta/tags.tsv", "classes": ["boat", "bird"]})
    assert ds.image_dir == tmp_path and np.array_equal(ds.known_labels(), [[0, 1], [1, 1]])
