"""Bad input, generated: each case loads correctly or raises a one-line DataError naming the file and the problem;
with skip_bad the training path skips bad items and reports them at the end."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from semples.data import (
    DataConfig,
    DataError,
    SkipBadItems,
    TransformedDataset,
    bad_items_report,
    build_dataset,
    collate,
    find_bad_items,
)
from semples.data.folder import FolderDataset
from semples.data.io import read_image, read_mask, write_mask_png
from semples.data.transforms import EvalTransform
from semples.data.voc import VOCDataset


def folder(tmp_path, gen, n=3, labels=None, masks=True, size=(30, 20)):
    """images/i{k}.jpg with labels.csv (class 'cat'/'dog') and masks/i{k}.png."""
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(n):
        gen.random_image(*size, seed=k).save(tmp_path / "images" / f"i{k}.jpg")
        rows.append(f"i{k}.jpg,{(labels or {}).get(k, 'cat' if k % 2 == 0 else 'dog')}")
        if masks:
            write_mask_png(tmp_path / "masks" / f"i{k}.png", gen.box_mask(*size, 1 if k % 2 == 0 else 2))
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def one_line_error(fn, *path_parts):
    with pytest.raises(DataError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for part in path_parts:
        assert part in msg, msg
    return msg


# ------------------------------------------------------------------------------------------- broken files
def test_truncated_image(tmp_path, gen):
    root = folder(tmp_path, gen)
    data = (root / "images" / "i1.jpg").read_bytes()
    (root / "images" / "i1.jpg").write_bytes(data[: len(data) // 2])
    ds = FolderDataset(root)
    msg = one_line_error(lambda: ds[1], str(root / "images" / "i1.jpg"), "truncated or corrupt image")
    assert ds.check_item(1) == [msg]
    assert ds[0].image.size == (30, 20)  # the others still load


def test_non_image_file(tmp_path, gen):
    root = folder(tmp_path, gen)
    (root / "images" / "i2.jpg").write_text("this is not a picture")
    one_line_error(lambda: FolderDataset(root)[2], "i2.jpg", "not an image file")


def test_missing_image_listed_in_labels(tmp_path, gen):
    root = folder(tmp_path, gen)
    (root / "images" / "i0.jpg").unlink()
    ds = FolderDataset(root)
    one_line_error(lambda: ds[0], str(root / "images" / "i0.jpg"), "image file is missing", "labels.csv:1")


def test_missing_mask(tmp_path, gen):
    root = folder(tmp_path, gen)
    (root / "masks" / "i1.png").unlink()
    one_line_error(lambda: FolderDataset(root)[1], str(root / "masks" / "i1.png"), "mask file is missing")


def test_mask_size_mismatch(tmp_path, gen):
    root = folder(tmp_path, gen)
    write_mask_png(root / "masks" / "i1.png", gen.box_mask(31, 20, 2))
    one_line_error(lambda: FolderDataset(root)[1], str(root / "masks" / "i1.png"), "mask is 31x20 but image",
                   "is 30x20")
    assert FolderDataset(root).check_item(1, decode=False)  # the header-only check sees it too


def test_mask_values_out_of_range(tmp_path, gen):
    root = folder(tmp_path, gen)
    write_mask_png(root / "masks" / "i1.png", gen.box_mask(30, 20, 7))
    one_line_error(lambda: FolderDataset(root)[1], "i1.png", "mask has values [7] outside 0..2 and 255")


def test_unknown_class_label(tmp_path, gen):
    root = folder(tmp_path, gen, labels={1: "dgo"})
    ds = FolderDataset(root)
    one_line_error(lambda: ds.labels(1), "labels.csv:2", "unknown class 'dgo'", "valid classes are: cat, dog")
    assert ds.labels(0).tolist() == [1, 0]


def test_image_with_no_labels_policies(tmp_path, gen):
    root = folder(tmp_path, gen, labels={1: ""})
    one_line_error(lambda: FolderDataset(root)[1], "labels.csv:2", "image has no foreground class label")
    assert FolderDataset(root, options={"empty_labels": "keep"}).labels(1).tolist() == [0, 0]
    dropped = FolderDataset(root, options={"empty_labels": "drop"})
    assert dropped.ids == ["i0", "i2"] and dropped.notes  # left out, and said so


def test_voc_mask_with_only_background_is_an_image_without_labels(tmp_path, gen):
    voc = gen.make_voc(tmp_path, {"train": ["a1", "a2"]})
    write_mask_png(voc / "SegmentationClass" / "a2.png", np.zeros((24, 32), np.uint8))
    ds = VOCDataset(tmp_path, "train")
    one_line_error(lambda: ds[1], str(voc / "SegmentationClass" / "a2.png"), "no foreground class label")


# ---------------------------------------------------------------------------------------- image modes
def _png16_rgb(path, arr):
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_modes_load_as_rgb_with_the_right_values(tmp_path):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (4, 1))
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    img, _ = read_image(tmp_path / "gray.png")
    assert img.mode == "RGB" and np.array_equal(np.asarray(img)[..., 1], gray)

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: colour kept, alpha dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png")[0].getpixel((0, 0)) == (200, 0, 0)

    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    r, g, b = read_image(tmp_path / "cmyk.jpg")[0].getpixel((2, 2))
    assert r > 230 and g < 25 and b < 25  # pure red

    g16 = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
    Image.fromarray(g16).save(tmp_path / "g16.png")  # I;16
    img = read_image(tmp_path / "g16.png")[0]
    assert np.array_equal(np.asarray(img)[..., 0], np.round(g16 * (255 / 65535)).astype(np.uint8))  # rescaled

    rgb16 = np.zeros((3, 4, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1] = 65535, 257 * 100
    _png16_rgb(tmp_path / "rgb16.png", rgb16)
    assert read_image(tmp_path / "rgb16.png")[0].getpixel((1, 1))[:2] == (255, 100)

    f32 = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    Image.fromarray(f32, "F").save(tmp_path / "f32.tif")  # float in [0, 1]
    assert np.array_equal(np.asarray(read_image(tmp_path / "f32.tif")[0])[..., 2], np.round(f32 * 255))

    Image.new("LA", (3, 3), (77, 0)).save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png")[0].getpixel((1, 1)) == (77, 77, 77)

    pal = Image.new("P", (4, 4), 3)
    pal.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 0, 128, 0] + [0] * 756)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    assert read_image(tmp_path / "pal.png")[0].getpixel((0, 0)) == (0, 128, 0)


def test_rgb_colour_masks_are_decoded_with_the_voc_palette(tmp_path):
    from semples.data.io import voc_colormap

    idx = np.array([[0, 1, 15], [255, 15, 0]], np.uint8)
    Image.fromarray(voc_colormap()[idx], "RGB").save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png", 20), idx)
    bad = voc_colormap()[idx].copy()
    bad[0, 0] = (1, 2, 3)
    Image.fromarray(bad, "RGB").save(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"bad.png: RGB mask has colour \(1, 2, 3\) that is not in the VOC palette"):
        read_mask(tmp_path / "bad.png", 20)


# ----------------------------------------------------------------------------------------------- EXIF
@pytest.mark.parametrize("mask_frame", ["stored", "displayed"])
def test_exif_rotated_jpeg_mask_stays_aligned(tmp_path, gen, mask_frame):
    root = folder(tmp_path, gen, n=1)
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[2:8, 3:13] = 255  # a white box near the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stored).save(root / "images" / "i0.jpg", exif=exif.tobytes(), quality=100)
    mask = np.zeros((20, 40), np.uint8)
    mask[2:8, 3:13] = 1
    if mask_frame == "displayed":  # drawn on the upright picture (e.g. by an annotation tool)
        mask = np.asarray(Image.fromarray(mask).transpose(Image.Transpose.ROTATE_270))
    write_mask_png(root / "masks" / "i0.png", mask)
    item = FolderDataset(root)[0]
    assert item.image.size == (20, 40)  # displayed upright: portrait
    white = np.asarray(item.image).mean(2) > 128
    assert item.mask.shape == (40, 20)
    assert np.array_equal(white, item.mask == 1)


# ------------------------------------------------------------------------------------------ list files
def test_list_file_blank_lines_duplicates_and_escapes(tmp_path, gen):
    voc = gen.make_voc(tmp_path, {"train": ["a1", "a2", "a3"]})
    lst = voc / "ImageSets" / "Segmentation" / "train.txt"
    lst.write_text("a1\n\n   \na2\r\na1\n../../etc/passwd\na3\n")
    msg = one_line_error(lambda: VOCDataset(tmp_path, "train"), f"{lst}:6", "'../../etc/passwd'",
                         "may not leave the dataset folder")
    assert msg
    ds = VOCDataset(tmp_path, "train", skip_bad=True)
    assert ds.ids == ["a1", "a2", "a3"]  # blank lines ignored, duplicate used once, escape left out
    assert ds.warnings == [f"{lst}:5: duplicate id 'a1' (first on line 1); using it once"]
    assert ds.bad_entries and bad_items_report(ds) == ds.bad_entries


def test_folder_labels_entry_escaping_the_root(tmp_path, gen):
    root = folder(tmp_path, gen)
    with open(root / "labels.csv", "a") as f:
        f.write("../outside.jpg,cat\n")
    one_line_error(lambda: FolderDataset(root), "labels.csv:4", "'../outside.jpg' leaves the image folder")


# ------------------------------------------------------------------------------------------- skip_bad
def test_skip_bad_substitutes_and_reports_across_workers(tmp_path, gen):
    root = folder(tmp_path, gen, n=6, labels={4: "dgo"})
    (root / "images" / "i1.jpg").write_bytes(b"garbage")
    cfg = DataConfig(dataset="folder", root=str(root), skip_bad=True)
    ds = build_dataset(cfg, "train", bad_items_dir=tmp_path / "run")
    assert isinstance(ds, SkipBadItems) and len(ds) == 6
    tds = TransformedDataset(ds, EvalTransform(size=16), with_mask=True)
    loader = torch.utils.data.DataLoader(tds, batch_size=2, num_workers=2, collate_fn=collate)
    ids = [i for batch in loader for i in batch["id"]]
    assert ids == ["i0", "i2", "i2", "i3", "i5", "i5"]  # 1 -> 2 and 4 -> 5: the next readable item
    report = bad_items_report(tds)
    assert len(report) == 2
    assert any("i1.jpg: not an image file" in line for line in report)
    assert any("unknown class 'dgo'" in line for line in report)
    assert (tmp_path / "run" / "bad_items.txt").is_file()


def test_without_skip_bad_training_stops_with_the_message(tmp_path, gen):
    root = folder(tmp_path, gen, n=2)
    (root / "images" / "i1.jpg").write_bytes(b"garbage")
    ds = build_dataset(DataConfig(dataset="folder", root=str(root)), "train")
    assert not isinstance(ds, SkipBadItems) and bad_items_report(ds) == []
    one_line_error(lambda: TransformedDataset(ds, EvalTransform())[1], "i1.jpg", "not an image file")
    assert find_bad_items(ds) == {1: [f"{root / 'images' / 'i1.jpg'}: not an image file (unrecognised format)"]}


# ------------------------------------------------------------------------------------------ issue 12 cases
def _png_header_only(path, width, height):
    """A PNG whose header says width x height (no pixel data: nothing decodes it before the size check)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_144_megapixel_png_is_refused_on_every_thread(tmp_path, gen):
    """Issue 12, item 4: between 1x and 2x PIL's bound PIL only warns; the refusal no longer depends on
    warnings.catch_warnings, which is not thread-safe."""
    from semples.data.check import check_split

    root = folder(tmp_path, gen, n=6, masks=False)
    _png_header_only(root / "images" / "i3.jpg", 12000, 12000)  # 144 Mpx: PIL only warns
    one_line_error(lambda: read_image(root / "images" / "i3.jpg"), "i3.jpg", "image too large to decode safely",
                   "144,000,000 pixels")
    cfg = DataConfig(dataset="folder", root=str(root))
    for decode in (True, False, True, False):  # threads, with and without decoding
        report, _ = check_split(cfg, "all", decode=decode, workers=4, progress=False)
        assert report.bad == 1 and "image too large to decode safely" in report.problems[0]


def test_two_images_with_one_id_are_an_error_not_one_merged_item(tmp_path, gen):
    """Issue 12, item 5: a.jpg and a.png share the id "a" (masks, CAMs, pseudo masks are named by id)."""
    root = folder(tmp_path, gen, masks=False)
    gen.random_image(30, 20, seed=9).save(root / "images" / "i1.png")
    (root / "labels.csv").write_text("i0.jpg,cat\ni1.jpg,dog\ni1.png,cat\ni2.jpg,cat\n")
    msg = one_line_error(lambda: FolderDataset(root), "labels.csv:2", "'i1.jpg' and 'i1.png'", "share the id 'i1'")
    assert "labels.csv:3" in msg
    ds = FolderDataset(root, skip_bad=True)
    assert ds.ids == ["i0", "i2"] and len(ds.bad_entries) == 1
    (root / "labels.csv").write_text("i0,cat\ni1,dog\ni2,cat\n")  # without extensions: "i1" names neither
    one_line_error(lambda: FolderDataset(root), "labels.csv:2", "image 'i1' could be any of i1.jpg, i1.png")


def test_a_relative_root_with_a_classes_file_is_joined_once(tmp_path, gen, monkeypatch):
    root = folder(tmp_path / "data" / "mine", gen)
    (root / "classes.txt").write_text("dog\ncat\n")  # another order than the labels' sorted set
    monkeypatch.chdir(tmp_path)
    ds = FolderDataset("data/mine")
    assert ds.classes.names == ("dog", "cat") and ds.labels(0).tolist() == [0, 1]


def test_the_unknown_class_error_names_the_row_that_named_it(tmp_path, gen):
    root = folder(tmp_path, gen)
    (root / "labels.csv").write_text("image,labels\ni0.jpg,cat\ni1.jpg,dog\ni2.jpg,cat\ni1.jpg,zebra\n")
    one_line_error(lambda: FolderDataset(root).labels(1), "labels.csv:5", "unknown class 'zebra'")


def test_a_csv_field_over_the_csv_limit_is_one_line(tmp_path, gen):
    root = folder(tmp_path, gen)
    (root / "labels.csv").write_text("i0.jpg,cat\ni1.jpg," + "d" * 200_000 + "\ni2.jpg,cat\n")
    one_line_error(lambda: FolderDataset(root), "labels.csv:2", "malformed CSV row", "field larger than field limit")


def test_json_nested_thousands_deep_is_one_line(tmp_path, gen):
    root = folder(tmp_path, gen)
    (root / "labels.csv").unlink()
    (root / "labels.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(lambda: FolderDataset(root), "labels.json", "nested too deeply")
