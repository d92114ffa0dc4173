"""`semples pseudo-masks` and `semples eval-masks` end to end, from CAM files written here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from semples.cli import main
from semples.config import load_config
from semples.data import build_dataset
from semples.errors import ConfigError
from semples.infer.cam_io import cam_path, save_cam
from semples.infer.config import IgnoreBandConfig, PseudoMaskConfig
from semples.infer.pseudo_masks import PseudoMaskMaker, generate_pseudo_masks, read_threshold, top_two
from tests.conftest import FIXTURES

ndimage = pytest.importorskip("scipy.ndimage")
pytest.importorskip("pydensecrf.densecrf")
pytest.importorskip("skimage")


def write_seeds(dataset, cams_dir, limit=None, seed=0) -> None:
    """CAM-like seeds from the ground truth: blurred class masks plus noise, min-max per class."""
    rng = np.random.default_rng(seed)
    n = len(dataset) if limit is None else limit
    for i in range(n):
        gt = dataset.load_mask(i)
        classes = np.flatnonzero(dataset.labels(i))
        sigma = max(2.0, min(gt.shape) / 40)
        cams = np.stack([ndimage.gaussian_filter((gt == c + 1).astype(np.float32), sigma)
                         + 0.2 * rng.random(gt.shape, dtype=np.float32) for c in classes])
        lo, hi = cams.min((1, 2), keepdims=True), cams.max((1, 2), keepdims=True)
        save_cam(cam_path(cams_dir, dataset.ids[i]), (cams - lo) / (hi - lo + 1e-6), classes)


@pytest.fixture
def tiny_seeds(tmp_path):
    cfg = load_config("tiny")
    dataset = build_dataset(cfg.data, "train")
    write_seeds(dataset, tmp_path / "cams")
    return dataset, tmp_path / "cams"


def base_args(tmp_path, cams):
    return ["--config", "tiny", "--set", f"output_dir={tmp_path / 'runs'}", "--cams", str(cams), "--no-progress"]


def pngs(folder):
    return sorted(p for p in folder.glob("*.png"))


def test_read_threshold_layouts(tmp_path):
    f = tmp_path / "metrics.json"
    f.write_text(json.dumps({"threshold": 0.2, "best_on_curve": {"threshold": 0.37, "miou": 0.5}}))
    assert read_threshold(f) == (0.37, f"{f} (best_on_curve.threshold)")
    assert read_threshold(tmp_path)[0] == 0.37  # the folder works too
    f.write_text(json.dumps({"best_t": 0.3}))
    assert read_threshold(f)[0] == 0.3
    f.write_text(json.dumps({"miou": 0.5}))
    with pytest.raises(ConfigError, match="no best threshold"):
        read_threshold(f)
    with pytest.raises(FileNotFoundError):
        read_threshold(tmp_path / "nope.json")


def test_maker_threshold_classes_and_ignore_band():
    cams = np.zeros((2, 4, 5), np.float32)
    cams[0, :, :2] = 0.9  # class 3
    cams[1, :, 3:] = 0.5  # class 0 (just above t = 0.45: a thin margin)
    image = np.zeros((4, 5, 3), np.uint8)
    classes = np.array([3, 0])
    out = PseudoMaskMaker(PseudoMaskConfig(method="threshold"), 0.45)(image, cams, classes)
    assert out.mask.dtype == np.uint8
    assert (out.mask[:, :2] == 4).all() and (out.mask[:, 2] == 0).all() and (out.mask[:, 3:] == 1).all()
    assert (out.background, out.foreground, out.ignored) == (4, 16, 0)
    banded = PseudoMaskConfig(method="threshold", ignore=IgnoreBandConfig(margin=0.1))
    out = PseudoMaskMaker(banded, 0.45)(image, cams, classes)
    assert (out.mask[:, 3:] == 255).all() and (out.mask[:, :2] == 4).all() and out.ignored == 8
    low = PseudoMaskConfig(method="threshold", ignore=IgnoreBandConfig(min_confidence=0.6))
    out = PseudoMaskMaker(low, 0.45)(image, cams, classes)
    assert (out.mask[:, 2:] == 255).all() and (out.mask[:, :2] == 4).all()
    # CAMs of another size are resized to the image
    out = PseudoMaskMaker(PseudoMaskConfig(method="threshold"), 0.45)(np.zeros((8, 10, 3), np.uint8), cams, classes)
    assert out.mask.shape == (8, 10)
    with pytest.raises(ConfigError, match="needs a background threshold"):
        PseudoMaskMaker(PseudoMaskConfig(method="crf"))
    top, second = top_two(np.stack([np.full((2, 2), 0.3), np.full((2, 2), 0.7), np.full((2, 2), 0.5)]))
    assert (top == 0.7).all() and (second == 0.5).all()


def test_cli_end_to_end_all_methods_then_eval_masks(tmp_path, tiny_seeds, capsys):
    dataset, cams = tiny_seeds
    metrics = {}
    for method in ("threshold", "crf", "region-vote"):
        assert main(["pseudo-masks", *base_args(tmp_path, cams), "--method", method, "--threshold", "0.4",
                     "--workers", "0"]) == 0
        out = tmp_path / "runs" / "tiny" / "pseudo_masks" / method / "train"
        files = pngs(out)
        assert [p.stem for p in files] == sorted(dataset.ids)
        for i, image_id in enumerate(dataset.ids):
            mask = np.asarray(Image.open(out / f"{image_id}.png"))
            assert mask.shape == dataset.load_mask(i).shape and mask.dtype == np.uint8
            allowed = {0, *(np.flatnonzero(dataset.labels(i)) + 1).tolist()}
            assert set(np.unique(mask).tolist()) <= allowed  # only classes of the image label
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "finished" and manifest["method"] == method
        counts = manifest["counts"]
        assert (counts["split_images"], counts["present"], counts["written_this_run"], counts["skipped_this_run"]) \
            == (len(dataset), len(dataset), len(dataset), 0) and manifest["missing_cams"] == []
        assert manifest["cams_dir"] == str(cams) and manifest["data"]["split"] == "train"
        assert manifest["inputs"]["cams"]["path"] == str(cams) and manifest["complete"]
        assert manifest["threshold"] == (None if method == "region-vote" else 0.4)
        assert manifest["region_source"] == ("slic" if method == "region-vote" else None)
        assert main(["eval-masks", "--config", "tiny", "--masks", str(out), "--no-progress"]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert set(m["all_pixels"]["per_class"]) == {"background", *dataset.classes.names}
        assert m["num_images"] == len(dataset) and m["split"] == "train" and m["method"] == method
        assert "| background |" in (out / "metrics.md").read_text()
        metrics[method] = m["miou"]
    assert all(v > 0.5 for v in metrics.values()), metrics  # seeds are blurred ground truth
    assert "mIoU" in capsys.readouterr().out


def test_rerun_skips_and_other_parameters_are_refused(tmp_path, tiny_seeds, capsys):
    dataset, cams = tiny_seeds
    args = ["pseudo-masks", *base_args(tmp_path, cams), "--method", "threshold", "--threshold", "0.4",
            "--out", str(tmp_path / "pm")]
    assert main(args) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in pngs(tmp_path / "pm")}
    (tmp_path / "pm" / f"{dataset.ids[0]}.png").unlink()  # as if interrupted before the last image
    capsys.readouterr()
    assert main(args) == 0
    assert f"1 written, {len(dataset) - 1} already there" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in pngs(tmp_path / "pm")}
    assert all(after[k] == v for k, v in stamps.items() if k != f"{dataset.ids[0]}.png")
    other = [a if a != "0.4" else "0.6" for a in args]
    assert main(other) == 1
    assert "made from other inputs or settings (threshold: 0.4 -> 0.6)" in capsys.readouterr().err
    assert main([*other, "--force"]) == 0
    assert json.loads((tmp_path / "pm" / "manifest.json").read_text())["threshold"] == 0.6


def test_threshold_from_eval_seeds_and_missing_cams(tmp_path, tiny_seeds, capsys):
    dataset, cams = tiny_seeds
    ev = tmp_path / "eval_seeds"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"threshold": 0.1, "best_on_curve": {"threshold": 0.35}}))
    cam_path(cams, dataset.ids[2]).unlink()
    args = ["pseudo-masks", *base_args(tmp_path, cams), "--method", "crf", "--threshold-from", str(ev),
            "--out", str(tmp_path / "pm"), "--workers", "0"]
    assert main(args) == 1
    assert "no CAM file for 1 of 8" in capsys.readouterr().err
    assert main([*args, "--skip-missing"]) == 0
    manifest = json.loads((tmp_path / "pm" / "manifest.json").read_text())
    assert manifest["threshold"] == 0.35 and "best_on_curve" in manifest["threshold_source"]
    assert manifest["missing_cams"] == [dataset.ids[2]] and manifest["counts"]["written_this_run"] == 7
    assert main(["eval-masks", "--config", "tiny", "--masks", str(tmp_path / "pm"), "--no-progress"]) == 1
    assert main(["eval-masks", "--config", "tiny", "--masks", str(tmp_path / "pm"), "--skip-missing",
                 "--out", str(tmp_path / "ev"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["num_missing"] == 1


def test_ignore_band_in_eval_masks(tmp_path, tiny_seeds):
    dataset, cams = tiny_seeds
    out = tmp_path / "pm"
    assert main(["pseudo-masks", *base_args(tmp_path, cams), "--method", "threshold", "--threshold", "0.4",
                 "--ignore-margin", "0.1", "--out", str(out)]) == 0
    assert main(["eval-masks", "--config", "tiny", "--masks", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert 0 < m["ignored_prediction_fraction"] < 0.5
    # the pixels that keep a label are cleaner than all pixels with ignore counted as misses
    assert m["labelled_pixels_only"]["miou"] > m["all_pixels"]["miou"]


def test_worker_processes_give_the_same_masks(tmp_path, tiny_seeds):
    dataset, cams = tiny_seeds
    cfg = PseudoMaskConfig(method="crf", workers=2)
    run = generate_pseudo_masks(dataset, cams, tmp_path / "two", cfg, 0.4, progress=False)
    assert run.written == len(dataset) and run.total == len(dataset)
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["last_run"]["compute_processes"] == 2
    generate_pseudo_masks(dataset, cams, tmp_path / "one", PseudoMaskConfig(method="crf", workers=0), 0.4,
                          progress=False)
    for a, b in zip(pngs(tmp_path / "one"), pngs(tmp_path / "two")):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_crf_pseudo_masks_run_without_importing_torch(tmp_path, tiny_seeds):
    """The CRF path needs no torch: the command starts ~2.5 s sooner, which is most of what two processes could not
    win back on a few dozen images (benchmarks/pseudo_parallel.py). One process and two give the same bytes."""
    import subprocess
    import sys

    dataset, cams = tiny_seeds
    code = ("import sys\nfrom semples.cli import main\nrc = main(sys.argv[1:])\n"
            "print(rc, 'torch' in sys.modules)")
    written = {}
    for workers in (1, 2):
        out = tmp_path / f"masks{workers}"
        args = [*base_args(tmp_path, cams), "--out", str(out), "--method", "crf", "--threshold", "0.4",
                "--workers", str(workers)]
        done = subprocess.run([sys.executable, "-c", code, "pseudo-masks", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == "0 False"
        assert json.loads((out / "manifest.json").read_text())["last_run"]["compute_processes"] == workers
        written[workers] = [p.read_bytes() for p in pngs(out)]
    assert len(written[1]) == len(dataset) and written[1] == written[2]


def test_voc128_fixtures_through_pseudo_masks(tmp_path, monkeypatch, capsys):
    root = FIXTURES / "voc128"
    if not (root / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"real fixtures not found at {root}")
    monkeypatch.setenv("SEMPLES_CACHE_DIR", str(tmp_path / "cache"))
    data = ["--set", "data.dataset=voc", "--set", f"data.root={root}", "--set", "data.num_workers=0"]
    cfg = load_config(None, [a for a in data if a != "--set"])
    dataset = build_dataset(cfg.data, "train")
    write_seeds(dataset, tmp_path / "cams", limit=2)
    for method, extra in (("crf", ["--threshold", "0.3"]), ("region-vote", ["--superpixels", "slic"])):
        out = tmp_path / method
        assert main(["pseudo-masks", *data, "--set", f"output_dir={tmp_path}", "--cams", str(tmp_path / "cams"),
                     "--method", method, *extra, "--limit", "2", "--out", str(out), "--workers", "0",
                     "--no-progress"]) == 0
        for i in range(2):
            mask = np.asarray(Image.open(out / f"{dataset.ids[i]}.png"))
            w, h = dataset.load_image(i).size
            assert mask.shape == (h, w)
        assert main(["eval-masks", *data, "--masks", str(out), "--skip-missing", "--no-progress"]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["num_images"] == 2 and len(m["all_pixels"]["per_class"]) == 21
        assert m["miou"] > 0.2  # blurred ground truth as seeds: plumbing, not quality


def test_missing_sam_checkpoint_fails_before_writing(tmp_path, tiny_seeds, capsys):
    _, cams = tiny_seeds
    out = tmp_path / "pm"
    assert main(["pseudo-masks", *base_args(tmp_path, cams), "--method", "region-vote", "--sam-checkpoint",
                 str(tmp_path / "sam_vit_h_4b8939.pth"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "SAM checkpoint file not found" in err and "segment-anything#model-checkpoints" in err
    assert not out.exists()


class GroundTruthBoxes:
    """A SAM-like region source for tests: overlapping masks (each object's box, its halves, the whole image)."""

    name = "gt-boxes"

    def __init__(self, dataset) -> None:
        self.masks = {}
        for i in range(len(dataset)):
            gt = dataset.load_mask(i)
            regions = [np.ones(gt.shape, bool)]
            for k in np.unique(gt):
                if 0 < k < 255:
                    ys, xs = np.nonzero(gt == k)
                    m = np.zeros(gt.shape, bool)
                    m[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
                    top = m.copy()
                    top[(ys.min() + ys.max()) // 2:] = False
                    regions += [m, top]
            self.masks[np.asarray(dataset.load_image(i)).tobytes()] = np.stack(regions)

    def __call__(self, image):
        from semples.models.regions import Regions

        return Regions.from_masks(self.masks[np.asarray(image).tobytes()])


def test_region_vote_over_overlapping_masks_from_any_source(tmp_path, tiny_seeds):
    from semples.infer.config import RegionVoteConfig
    from semples.metrics import ConfusionMatrix

    dataset, cams = tiny_seeds
    source = GroundTruthBoxes(dataset)
    cfg = PseudoMaskConfig(method="region-vote", workers=2, region_vote=RegionVoteConfig(background_first=True))
    run = generate_pseudo_masks(dataset, cams, tmp_path / "pm", cfg, region_source=source, progress=False)
    assert run.written == len(dataset)
    manifest = json.loads((tmp_path / "pm" / "manifest.json").read_text())
    # a given source: in-process
    assert manifest["region_source"] == "gt-boxes" and manifest["last_run"]["compute_processes"] == 1
    cm = ConfusionMatrix(dataset.num_classes + 1)
    for i, image_id in enumerate(dataset.ids):
        cm.update(np.asarray(Image.open(tmp_path / "pm" / f"{image_id}.png")), dataset.load_mask(i))
    assert cm.scores().miou > 0.5  # object boxes win over their halves and over the whole-image mask
    # METHOD.md's order (the default) paints by area alone: the whole-image mask (voted background) comes last
    # and erases every object
    flat = PseudoMaskConfig(method="region-vote")
    generate_pseudo_masks(dataset, cams, tmp_path / "flat", flat, region_source=source, progress=False)
    assert all((np.asarray(Image.open(p)) == 0).all() for p in pngs(tmp_path / "flat"))
