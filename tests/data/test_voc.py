"""VOC 2012: the real fixture end to end, label derivation vs masks, splits (train_aug, SBD), labels files, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from semples.data import DataConfig, DataError, TrainTransformConfig, TransformedDataset, build_dataset, collate
from semples.data.transforms import TrainTransform
from semples.data.voc import VOCDataset, parse_list_line


def test_voc128_end_to_end(voc128):
    train = build_dataset(DataConfig(dataset="voc", root=str(voc128)), "train")
    val = build_dataset(DataConfig(dataset="voc", root=str(voc128)), "val")
    assert (len(train), len(val)) == (73, 24)  # DATA.md
    assert train.has_masks and train.num_classes == 20
    tds = TransformedDataset(train, TrainTransform(TrainTransformConfig(crop_size=64)), seed=0, with_mask=True)
    batch = collate([tds[(i, 1)] for i in range(4)])
    assert batch["image"].shape == (4, 3, 64, 64) and batch["mask"].shape == (4, 64, 64)
    assert batch["labels"].shape == (4, 20) and (batch["labels"].sum(1) >= 1).all()
    vals = torch.unique(batch["mask"]).tolist()
    assert set(vals) <= set(range(21)) | {255}
    clims = build_dataset(DataConfig(dataset="voc", root=str(voc128), prompt_names="clims"), "val")
    assert clims.classes.prompt_names[14] == "player" and train.classes.prompt_names[14] == "person"


def test_voc128_labels_equal_mask_classes(voc128):
    ds = VOCDataset(voc128, "train")
    mask_dir = voc128 / "VOC2012" / "SegmentationClass"
    for i, image_id in enumerate(ds.ids):
        raw = np.asarray(Image.open(mask_dir / f"{image_id}.png"))  # palette indices, read independently
        present = sorted(int(v) for v in np.unique(raw) if 0 < v < 255)
        assert np.flatnonzero(ds.labels(i)).tolist() == [v - 1 for v in present], image_id
        item = ds[i]
        assert item.mask.shape == (item.image.height, item.image.width)
        assert np.array_equal(item.mask, raw)


@pytest.mark.parametrize("sub", ["", "VOC2012", "VOCdevkit"])
def test_root_may_be_devkit_parent_or_voc2012(tmp_path, gen, sub):
    base = tmp_path / "VOCdevkit" if sub == "VOCdevkit" else tmp_path
    gen.make_voc(base, {"train": ["a1", "a2"]})
    root = {"": tmp_path, "VOC2012": base / "VOC2012", "VOCdevkit": tmp_path}[sub]
    assert VOCDataset(root, "train").ids == ["a1", "a2"]


def test_missing_split_lists_available_ones(tmp_path, gen):
    gen.make_voc(tmp_path, {"train": ["a1"], "val": ["b1"]})
    with pytest.raises(DataError, match=r"seg\.txt: list file of split 'seg' is missing; available splits: train, "
                                        r"val"):
        VOCDataset(tmp_path, "seg")
    with pytest.raises(DataError, match="no VOC2012 layout found"):
        VOCDataset(tmp_path / "VOC2012" / "JPEGImages", "train")


def test_train_aug_derived_from_segmentation_class_aug(tmp_path, gen):
    voc = gen.make_voc(tmp_path, {"train": ["t1", "t2"], "val": ["v1"]})
    gen.make_voc(tmp_path, {"unused": ["t1", "s1", "s2", "v1"]}, mask_dir="SegmentationClassAug")
    ds = VOCDataset(tmp_path, "train_aug")
    assert ds.ids == ["s1", "s2", "t1", "t2"]  # (aug masks + train) - val
    assert any("train_aug derived" in n for n in ds.notes)
    # train_aug prefers SegmentationClassAug, train/val read SegmentationClass
    assert ds.mask_path(ds.ids.index("t1")).parent.name == "SegmentationClassAug"
    assert ds.mask_path(ds.ids.index("t2")).parent.name == "SegmentationClass"
    # an explicit list wins, in DeepLab "image mask" format too
    lst = voc / "my_aug.txt"
    lst.write_text("/JPEGImages/s2.jpg /SegmentationClassAug/s2.png\nt1\n")
    assert VOCDataset(tmp_path, "train_aug", options={"train_aug_list": str(lst)}).ids == ["s2", "t1"]


def test_train_aug_from_sbd_mat_masks(tmp_path, gen):
    scipy_io = pytest.importorskip("scipy.io")
    gen.make_voc(tmp_path, {"train": ["t1"], "val": ["v1"]})
    sbd = tmp_path / "sbd"
    (sbd / "cls").mkdir(parents=True)
    (sbd / "train.txt").write_text("s1\nv1\n")
    (sbd / "val.txt").write_text("")
    gen.random_image(32, 24).save(tmp_path / "VOC2012" / "JPEGImages" / "s1.jpg")
    seg = gen.box_mask(32, 24, 7)
    scipy_io.savemat(sbd / "cls" / "s1.mat", {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros(1)}})
    ds = VOCDataset(tmp_path, "train_aug", options={"sbd_root": str(sbd)})
    assert ds.ids == ["s1", "t1"]
    i = ds.ids.index("s1")
    assert np.flatnonzero(ds.labels(i)).tolist() == [6]
    assert np.array_equal(ds[i].mask, seg)


def test_labels_file_instead_of_masks(tmp_path, gen):
    gen.make_voc(tmp_path, {"train": ["a1", "a2"]}, labels={"a1": 1, "a2": 2})
    f = tmp_path / "labels.csv"
    f.write_text("image,labels\na1.jpg,dog;Dining Table\na2,person\n")
    ds = VOCDataset(tmp_path, "train", options={"labels_file": str(f)})
    names = [[ds.classes.names[k] for k in np.flatnonzero(ds.labels(i))] for i in range(2)]
    assert names == [["diningtable", "dog"], ["person"]]


def test_derived_labels_are_cached_outside_the_dataset(tmp_path, gen, monkeypatch):
    gen.make_voc(tmp_path / "data", {"train": ["a1", "a2"]}, labels={"a1": 3, "a2": 5})
    first = VOCDataset(tmp_path / "data", "train")
    import semples.data.voc as voc_module

    def fail(*args, **kwargs):
        raise AssertionError("masks read again although the labels are cached")

    monkeypatch.setattr(voc_module, "read_mask", fail)
    second = VOCDataset(tmp_path / "data", "train")
    assert np.array_equal(first.known_labels(), second.known_labels())
    assert np.flatnonzero(second.labels(1)).tolist() == [4]
    assert not list((tmp_path / "data").rglob("*.json"))  # nothing written next to the data
    # a changed mask misses the cache
    monkeypatch.undo()
    from semples.data.io import write_mask_png

    write_mask_png(tmp_path / "data" / "VOC2012" / "SegmentationClass" / "a2.png", gen.box_mask(32, 24, 9))
    assert np.flatnonzero(VOCDataset(tmp_path / "data", "train").labels(1)).tolist() == [8]


def test_list_line_parsing():
    assert parse_list_line("2007_000032") == "2007_000032"
    assert parse_list_line("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png") == "2007_000032"
    for bad in ("../2007_000032", "/etc/passwd", "JPEGImages/../../x.jpg", ".."):
        with pytest.raises(ValueError):
            parse_list_line(bad)


def test_unknown_option_is_an_error_listing_valid_ones(tmp_path, gen):
    gen.make_voc(tmp_path, {"train": ["a1"]})
    with pytest.raises(DataError, match="unknown data.options 'label_file'.*valid options are: labels_file"):
        build_dataset(DataConfig(dataset="voc", root=str(tmp_path), options={"label_file": "x"}), "train")
