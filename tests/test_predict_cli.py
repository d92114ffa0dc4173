"""`semples predict` on real photos of mixed modes and sizes (../shared/data, skipped when absent) and on a
synthetic image; skip-if-done, refusal of other settings, and seeds from a mask generator."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from semples.cli import main
from semples.config import load_config
from semples.data import build_dataset
from semples.data.io import read_mask
from tests.conftest import FIXTURES
from tests.seg_helpers import write_masks_from_ground_truth

CLASSES = ["background", "boat", "plane", "cow", "train", "bird", "car"]


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """A tiny DeepLabV3+ (SMP) trained for one epoch on the synthetic world's ground truth."""
    cfg = load_config("tiny")
    tmp = tmp_path_factory.mktemp("predict")
    masks = write_masks_from_ground_truth(build_dataset(cfg.data, cfg.data.train_split), tmp / "masks")
    assert main(["train-seg", "--config", "tiny", "--pseudo-masks", str(masks), "--set", f"output_dir={tmp}",
                 "--no-eval"]) == 0
    return tmp / "tiny" / "segment"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real COCO photos plus variants of them in every mode a user may have: grayscale, RGBA, CMYK, 16-bit,
    EXIF-rotated, palette, tiny and large."""
    src = FIXTURES / "coco128" / "images" / "train2017"
    if not src.is_dir():
        pytest.skip(f"real fixtures not found at {src} (set SEMPLES_FIXTURES)")
    folder = tmp_path_factory.mktemp("photos")
    files = sorted(src.glob("*.jpg"))
    gray = src / "000000000086.jpg"  # a grayscale ("L") JPEG of the set
    shutil.copy(gray, folder / "gray.jpg")
    base = Image.open(files[0]).convert("RGB")
    shutil.copy(files[0], folder / "plain.jpg")
    base.convert("RGBA").save(folder / "rgba.png")
    base.convert("CMYK").save(folder / "cmyk.jpg")
    base.convert("P").save(folder / "palette.png")
    Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257).save(folder / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view: the displayed image is portrait
    base.save(folder / "rotated.jpg", exif=exif.tobytes())
    (folder / "sub").mkdir()
    base.resize((17, 23)).save(folder / "sub" / "tiny.png")
    base.resize((1500, 1000)).save(folder / "large.jpg")
    return folder, base.size


def _areas(out, image_id):
    return json.loads((out / "areas" / f"{image_id}.json").read_text())


def test_predict_on_real_photos_of_every_mode_and_size(model_run, photos, tmp_path, capsys):
    folder, (w, h) = photos
    out = tmp_path / "preds"
    args = ["predict", "--model", str(model_run), "--images", str(folder), "--out", str(out), "--max-side", "320"]
    assert main(args) == 0
    ids = ["cmyk", "gray", "large", "palette", "plain", "rgba", "rotated", "sixteen", "sub/tiny"]
    assert sorted(p.relative_to(out / "areas").with_suffix("").as_posix() for p in (out / "areas").rglob("*.json")) \
        == ids
    for image_id in ids:
        rec = _areas(out, image_id)
        mask = read_mask(out / "masks" / f"{image_id}.png", len(CLASSES) - 1)
        ov = Image.open(out / "overlays" / f"{image_id}.png")
        assert mask.shape == (rec["height"], rec["width"]) and ov.size == (rec["width"], rec["height"])
        assert ov.mode == "RGB" and Image.open(out / "masks" / f"{image_id}.png").mode == "P"  # VOC palette
        assert sum(c["pixels"] for c in rec["classes"].values()) == mask.size
        assert set(rec["classes"]) <= set(CLASSES)
        assert all(rec["classes"][CLASSES[v]]["pixels"] == int((mask == v).sum()) for v in np.unique(mask))
    assert (_areas(out, "rotated")["width"], _areas(out, "rotated")["height"]) == (h, w)  # as a viewer shows it
    assert (_areas(out, "large")["width"], _areas(out, "large")["height"]) == (1500, 1000)  # back at full size
    assert (_areas(out, "sub/tiny")["width"], _areas(out, "sub/tiny")["height"]) == (17, 23)
    summary = json.loads((out / "areas.json").read_text())
    assert summary["classes"] == CLASSES and len(summary["images"]) == len(ids)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "semples-predictions" and manifest["counts"]["present"] == len(ids)
    assert manifest["inputs"]["model"]["sha256"] and manifest["settings"]["max_side"] == 320
    assert manifest["classes"] == CLASSES[1:]
    capsys.readouterr()
    # a re-run skips every image; other settings into the same folder are refused; --force redoes them
    assert main(args) == 0
    assert f"wrote 0, skipped {len(ids)}" in capsys.readouterr().out
    assert main([*args, "--flip"]) == 1
    assert "flip" in capsys.readouterr().err
    # files and globs too, and an input that names nothing is one clear error
    out2 = tmp_path / "some"
    assert main(["predict", "--model", str(model_run), "--images", str(folder / "plain.jpg"), str(folder / "g*.jpg"),
                 "--out", str(out2), "--scales", "0.75", "1", "--flip", "--max-side", "256"]) == 0
    assert sorted(p.stem for p in (out2 / "masks").glob("*.png")) == ["gray", "plain"]
    assert main(["predict", "--model", str(model_run), "--images", str(folder / "nothing*.jpg"), "--out",
                 str(out2)]) == 1
    assert "no file matches" in capsys.readouterr().err


def test_predict_on_a_synthetic_image_equals_eval_seg(model_run, tmp_path):
    """The same model on a val image of the world: predict's mask = eval-seg's single-scale prediction."""
    cfg = load_config("tiny")
    val = build_dataset(cfg.data, "val")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        val.load_image(i).save(images / f"{val.ids[i]}.png")
    assert main(["eval-seg", "--checkpoint", str(model_run), "--out", str(tmp_path / "eval"),
                 "--save-predictions"]) == 0
    assert main(["predict", "--model", str(model_run), "--images", str(images), "--out", str(tmp_path / "p"),
                 ]) == 0
    for i in range(2):
        a = read_mask(tmp_path / "p" / "masks" / f"{val.ids[i]}.png", 6)
        b = read_mask(tmp_path / "eval" / "predictions" / "single_scale" / f"{val.ids[i]}.png", 6)
        assert np.array_equal(a, b)


def test_predict_crf_option(model_run, tmp_path):
    pytest.importorskip("pydensecrf.densecrf")
    cfg = load_config("tiny")
    val = build_dataset(cfg.data, "val")
    val.load_image(0).save(tmp_path / "x.png")
    assert main(["predict", "--model", str(model_run), "--images", str(tmp_path / "x.png"), "--out",
                 str(tmp_path / "p"), "--crf"]) == 0
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["settings"]["crf"] is True


def test_predict_crf_without_pydensecrf_fails_before_any_work(model_run, tmp_path, monkeypatch, capsys):
    import semples.utils.extras as extras

    monkeypatch.setattr(extras, "_installed", lambda m: m != "pydensecrf.densecrf")
    Image.new("RGB", (40, 30)).save(tmp_path / "x.png")
    assert main(["predict", "--model", str(model_run), "--images", str(tmp_path / "x.png"), "--out",
                 str(tmp_path / "p"), "--crf"]) == 1
    assert "pip install 'semples[infer]'" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()  # refused before the model is loaded or a folder is made


def test_predict_seeds_of_a_mask_generator(tmp_path, capsys):
    assert main(["train", "--stage", "classify", "--config", "tiny", "--set", f"output_dir={tmp_path}"]) == 0
    cfg = load_config("tiny")
    val = build_dataset(cfg.data, "val")
    val.load_image(0).save(tmp_path / "x.png")
    run = tmp_path / "tiny" / "classify"
    out = tmp_path / "seeds"
    assert main(["predict", "--seeds", str(run), "--images", str(tmp_path / "x.png"), "--out", str(out),
                 "--classes", "boat", "car", "--threshold", "0.3"]) == 0
    mask = read_mask(out / "masks" / "x.png", 6)
    assert set(np.unique(mask)) <= {0, 1, 6} and mask.shape == np.asarray(val.load_image(0)).shape[:2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["classes"] == [0, 5] and manifest["settings"]["threshold"] == 0.3
    assert "generator" in manifest["inputs"]
    # without --classes: the classes the generator scores above 0.5
    assert main(["predict", "--seeds", str(run), "--images", str(tmp_path / "x.png"), "--out",
                 str(tmp_path / "seeds2")]) == 0
    assert main(["predict", "--seeds", str(run), "--images", str(tmp_path / "x.png"), "--out",
                 str(tmp_path / "seeds3"), "--classes", "unicorn"]) == 2
    assert "unknown class 'unicorn'" in capsys.readouterr().err


@pytest.mark.distributed
def test_two_processes_share_the_images(model_run, tmp_path):
    """torchrun with two CPU processes: the runner's groups are split between them, every image written once."""
    import subprocess
    import sys

    cfg = load_config("tiny")
    val = build_dataset(cfg.data, "val")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(len(val)):
        val.load_image(i).save(images / f"{val.ids[i]}.png")
    for i in range(12):  # more than one group of 8
        val.load_image(i % len(val)).save(images / f"copy_{i:02d}.png")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = subprocess.run([*torchrun, "-m", "semples", "predict", "--model", str(model_run), "--images", str(images),
                          "--out", str(tmp_path / "ddp"), "--no-progress"], capture_output=True, text=True,
                         timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    manifest = json.loads((tmp_path / "ddp" / "manifest.json").read_text())
    assert manifest["last_run"]["processes"] == 2 and manifest["counts"]["present"] == len(val) + 12
    assert main(["predict", "--model", str(model_run), "--images", str(images), "--out", str(tmp_path / "one")]) == 0
    for p in (tmp_path / "one" / "masks").glob("*.png"):
        assert np.array_equal(read_mask(p, 6), read_mask(tmp_path / "ddp" / "masks" / p.name, 6))


@pytest.mark.slow
def test_the_readme_command_works_on_the_demo_model(tmp_path, monkeypatch):
    """README: `semples predict --model semples-demo/runs/synth_demo/segment --images <a folder> --out preds/` after
    `semples demo` (here its reduced config under the full demo's experiment name, so the path is the README's)."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "semples predict --model semples-demo/runs/synth_demo/segment --images" in " ".join(readme.split())
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--config", "synth_demo_tiny", "--set", "experiment=synth_demo"]) == 0
    (tmp_path / "photos").mkdir()
    cfg = load_config("synth_demo_tiny")
    val = build_dataset(cfg.data, "val")
    for i in range(3):
        val.load_image(i).save(tmp_path / "photos" / f"{i}.png")
    Image.new("L", (50, 70), 128).save(tmp_path / "photos" / "gray.png")
    assert main(["predict", "--model", "semples-demo/runs/synth_demo/segment", "--images", "photos", "--out",
                 "preds/"]) == 0
    assert sorted(p.stem for p in (tmp_path / "preds" / "masks").glob("*.png")) == ["0", "1", "2", "gray"]
    assert json.loads((tmp_path / "preds" / "areas.json").read_text())["classes"] == CLASSES
