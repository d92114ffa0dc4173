"""`semples train-seg` / `eval-seg` end to end on the synthetic world with the tiny preset."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from semples.cli import main
from semples.config import load_config
from semples.data import build_dataset
from semples.data.io import read_mask
from semples.utils.checkpoint_io import read_checkpoint
from tests.seg_helpers import write_masks_from_ground_truth


@pytest.fixture(scope="module")
def pseudo_masks(tmp_path_factory):
    """The synthetic world's ground-truth train masks, written as a pseudo-mask folder."""
    cfg = load_config("tiny")
    folder = tmp_path_factory.mktemp("pseudo")
    return write_masks_from_ground_truth(build_dataset(cfg.data, cfg.data.train_split), folder)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pseudo_masks):
    out = tmp_path_factory.mktemp("runs")
    code = main(["train-seg", "--config", "tiny", "--pseudo-masks", str(pseudo_masks), "--set", f"output_dir={out}"])
    assert code == 0
    return out / "tiny" / "segment"


def test_train_seg_end_to_end(trained, pseudo_masks):
    ckpt = read_checkpoint(trained)
    assert ckpt["finished"] and ckpt["stage"] == "segment" and set(ckpt["modules"]) == {"segmenter"}
    assert ckpt["progress"]["global_step"] == 2  # 8 images, batch 4, 1 epoch
    assert ckpt["config"]["pseudo_masks"] == str(pseudo_masks.resolve())
    assert "eval" not in ckpt["config"]["segment"]  # evaluation settings never block a finished run
    manifest = json.loads((trained / "manifest.json").read_text())
    assert manifest["inputs"]["pseudo_masks"]["images"] == 8 and manifest["inputs"]["pseudo_masks"]["missing"] == 0
    assert manifest["trainable_parameters"]["segmenter"] > 0 and manifest["segmenter"]["weights"] == "random"
    assert manifest["model_selection"].startswith("last checkpoint")
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["ce_loss"]) for r in records if "ce_loss" in r)

    report = json.loads((trained / "eval" / "val" / "metrics.json").read_text())
    assert report["split"] == "val" and report["num_images"] == 4
    assert set(report["results"]) == {"single_scale", "multi_scale"}
    assert report["settings"]["runs"]["multi_scale"] == {"scales": [0.75, 1.0], "flip": True, "crf": False}
    assert report["checkpoint"]["sha256"] and report["model_selection"].startswith("last checkpoint")
    for res in report["results"].values():
        assert 0.0 <= res["miou"] <= 1.0
        assert list(res["per_class"]) == ["background", "boat", "plane", "cow", "train", "bird", "car"]
    md = (trained / "eval" / "val" / "metrics.md").read_text()
    assert "| single_scale | 1 | no | no |" in md and "| multi_scale | 0.75, 1 | yes | no |" in md
    assert "| **mean** |" in md


def test_rerun_skips_training_and_evaluation(trained, pseudo_masks, capsys):
    metrics = trained / "eval" / "val" / "metrics.json"
    before = metrics.read_text()
    out_dir = trained.parent.parent
    args = ["train-seg", "--config", "tiny", "--pseudo-masks", str(pseudo_masks), "--set", f"output_dir={out_dir}"]
    assert main(args) == 0
    assert "segment: skipped" in capsys.readouterr().out
    assert metrics.read_text() == before
    # other pseudo masks for a finished run: refused, not silently mixed
    other = pseudo_masks.parent / "other_masks"
    other.mkdir(exist_ok=True)
    for p in pseudo_masks.glob("*.png"):
        (other / p.name).write_bytes(p.read_bytes())
    assert main(["train-seg", "--config", "tiny", "--pseudo-masks", str(other), "--set", f"output_dir={out_dir}",
                 "--no-eval"]) == 1
    assert "pseudo_masks" in capsys.readouterr().err


def test_multi_scale_equals_single_scale_at_scale_one_without_flip(trained, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval-seg", "--checkpoint", str(trained), "--set", "segment.eval.scales=[1.0]",
                 "--set", "segment.eval.flip=false", "--out", str(out), "--save-predictions"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["results"]["multi_scale"] == report["results"]["single_scale"]
    for p in (out / "predictions" / "single_scale").glob("*.png"):
        assert np.array_equal(read_mask(p, 6), read_mask(out / "predictions" / "multi_scale" / p.name, 6))


def test_predictions_are_label_pngs_that_eval_masks_scores_alike(trained, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval-seg", "--checkpoint", str(trained), "--out", str(out), "--save-predictions"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    cfg = load_config("tiny")
    val = build_dataset(cfg.data, "val")
    folder = out / "predictions" / "multi_scale"
    for i, image_id in enumerate(val.ids):
        pred = read_mask(folder / f"{image_id}.png", val.num_classes)  # index PNG, values 0..K
        assert pred.shape == val.load_mask(i).shape
    assert json.loads((folder / "manifest.json").read_text())["data"]["split"] == "val"
    # the colleague's `eval-masks` reads the same folder and finds the same mIoU
    assert main(["eval-masks", "--config", "tiny", "--masks", str(folder), "--out", str(tmp_path / "em")]) == 0
    em = json.loads((tmp_path / "em" / "metrics.json").read_text())
    assert em["miou"] == pytest.approx(report["results"]["multi_scale"]["miou"], abs=1e-9)


def test_eval_seg_with_crf(trained, tmp_path):
    pytest.importorskip("pydensecrf.densecrf")
    out = tmp_path / "eval"
    assert main(["eval-seg", "--checkpoint", str(trained), "--out", str(out), "--crf",
                 "--set", "segment.eval.crf_params={iterations: 2}"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["results"]) == {"single_scale", "multi_scale", "multi_scale_crf"}
    assert report["settings"]["runs"]["multi_scale_crf"]["crf_params"] == {"iterations": 2}


def test_eval_crf_in_worker_processes_gives_the_same_bytes(trained, tmp_path):
    pytest.importorskip("pydensecrf.densecrf")
    common = ["--checkpoint", str(trained), "--split", "train", "--crf", "--save-predictions", "--set",
              "segment.eval.crf_params={iterations: 2}", "--set", "segment.eval.scales=[1.0]"]
    assert main(["eval-seg", *common, "--out", str(tmp_path / "one"), "--set", "segment.eval.crf_workers=1"]) == 0
    assert main(["eval-seg", *common, "--out", str(tmp_path / "two")]) == 0  # the default: 2 processes
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert (one["crf_processes"], two["crf_processes"], two["num_images"]) == (1, 2, 8)
    assert one["results"] == two["results"]
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "predictions").rglob("*.png"))
    assert len(files) == 3 * 8
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in files)


def test_missing_pseudo_mask_is_a_one_line_error(tmp_path, pseudo_masks, capsys):
    partial = tmp_path / "partial"
    partial.mkdir()
    for p in sorted(pseudo_masks.glob("*.png"))[1:]:
        (partial / p.name).write_bytes(p.read_bytes())
    args = ["train-seg", "--config", "tiny", "--pseudo-masks", str(partial), "--set", f"output_dir={tmp_path}",
            "--no-eval"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train_000000.png: pseudo mask of image 'train_000000' is missing" in err
    assert main([*args, "--skip-missing"]) == 0
    manifest = json.loads((tmp_path / "tiny" / "segment" / "manifest.json").read_text())
    assert manifest["inputs"]["pseudo_masks"]["missing"] == 1 and manifest["dataset_size"] == 7
    assert main(["train-seg", "--config", "tiny"]) == 2  # --pseudo-masks is required
    assert "pass --pseudo-masks DIR" in capsys.readouterr().err


class Interrupted(RuntimeError):
    pass


def test_resume_through_the_engine_equals_an_uninterrupted_run(tmp_path, pseudo_masks, monkeypatch, capsys):
    from semples.stages.train_segmenter import SegmentStage

    def args(folder, *extra):
        return ["train-seg", "--config", "tiny", "--pseudo-masks", str(pseudo_masks), "--no-eval",
                "--set", f"output_dir={tmp_path / folder}", "--set", "segment.epochs=2", *extra]

    assert main(args("straight")) == 0
    forward = SegmentStage.forward
    calls = {"n": 0}

    def crash_in_epoch_two(self, batch):
        calls["n"] += 1
        if calls["n"] == 4:  # the second step of epoch 2
            raise Interrupted("power cut")
        return forward(self, batch)

    monkeypatch.setattr(SegmentStage, "forward", crash_in_epoch_two)
    with pytest.raises(Interrupted):
        main(args("resumed"))
    monkeypatch.setattr(SegmentStage, "forward", forward)
    assert not read_checkpoint(tmp_path / "resumed" / "tiny" / "segment")["finished"]
    assert main(args("resumed")) == 1 and "--resume" in capsys.readouterr().err
    assert main(args("resumed", "--resume")) == 0
    a = read_checkpoint(tmp_path / "straight" / "tiny" / "segment")
    b = read_checkpoint(tmp_path / "resumed" / "tiny" / "segment")
    assert b["finished"] and b["progress"] == a["progress"]
    for key, value in a["modules"]["segmenter"].items():
        assert torch.equal(b["modules"]["segmenter"][key], value), key


@pytest.mark.distributed
def test_two_processes_train_and_evaluate_like_one(tmp_path, pseudo_masks):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = subprocess.run([*torchrun, "-m", "semples", "train-seg", "--config", "tiny", "--pseudo-masks",
                          str(pseudo_masks), "--set", f"output_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    run = tmp_path / "tiny" / "segment"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["micro_batch"] == 2
    sharded = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert sharded["processes"] == 2
    # the same checkpoint evaluated by one process: every pixel counted once, the same scores (torchrun's workers
    # compute with one thread each, so near-ties of a random model may still flip a pixel or two)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["eval-seg", "--checkpoint", str(run), "--out", str(tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    for name, res in single["results"].items():
        a, b = np.array(res["confusion_matrix"]), np.array(sharded["results"][name]["confusion_matrix"])
        assert a.sum() == b.sum() > 0 and np.array_equal(a.sum(1), b.sum(1))  # ground-truth pixels per class
        assert res["miou"] == pytest.approx(sharded["results"][name]["miou"], abs=1e-3)


def test_training_split_defaults_to_the_pseudo_mask_manifest(tmp_path):
    cfg = load_config("tiny")
    folder = write_masks_from_ground_truth(build_dataset(cfg.data, "val"), tmp_path / "val_masks")
    (folder / "manifest.json").write_text(json.dumps({"split": "val", "method": "crf"}))
    assert main(["train-seg", "--config", "tiny", "--pseudo-masks", str(folder), "--no-eval",
                 "--set", f"output_dir={tmp_path}"]) == 0
    manifest = json.loads((tmp_path / "tiny" / "segment" / "manifest.json").read_text())
    assert manifest["inputs"]["pseudo_masks"]["split"] == "val" and manifest["dataset_size"] == 4
    assert read_checkpoint(tmp_path / "tiny" / "segment")["config"]["pseudo_masks_split"] == "val"


def _preset(tmp_path, name: str, segment: dict) -> str:
    import yaml

    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"_base_": "tiny", "experiment": name, "segment": segment}))
    return str(path)


def test_mask2former_trains_and_evaluates_through_the_cli(tmp_path, pseudo_masks):
    """A tiny random-weight Mask2Former (HF transformers) through train-seg (the one engine) and eval-seg."""
    pytest.importorskip("transformers")
    from tests.seg_helpers import MASK2FORMER_TINY

    config = _preset(tmp_path, "m2f", {"batch_size": 2, "backbone_lr_mult": 0.1, "clip_grad_norm": 0.01,
                                       "model": {"arch": "mask2former", "pretrained": False,
                                                 "hf_config": MASK2FORMER_TINY}})
    assert main(["train-seg", "--config", config, "--pseudo-masks", str(pseudo_masks), "--set",
                 f"output_dir={tmp_path}", "--no-eval"]) == 0
    run = tmp_path / "m2f" / "segment"
    ckpt = read_checkpoint(run)
    assert ckpt["finished"] and ckpt["progress"]["global_step"] == 4
    assert ckpt["config"]["classes"] == ["boat", "plane", "cow", "train", "bird", "car"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"class_loss", "mask_loss", "dice_loss"} <= set(records[0]) and np.isfinite(records[0]["loss"])
    assert [g["lr_mult"] for g in ckpt["optimizer"]["param_groups"]] == [1.0, 1.0, 0.1, 0.1]
    assert main(["eval-seg", "--checkpoint", str(run), "--set", "segment.eval.scales=[0.75,1.0]"]) == 0
    report = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert set(report["results"]) == {"single_scale", "multi_scale"}
    assert all(0.0 <= r["miou"] <= 1.0 for r in report["results"].values())


def test_any_smp_architecture_and_the_deeplab_sgd_recipe_through_the_cli(tmp_path, pseudo_masks):
    from tests.seg_helpers import RESNET_TINY

    config = _preset(tmp_path, "unet_sgd", {
        "optimizer": "sgd", "momentum": 0.9, "lr": 0.01, "backbone_lr_mult": 0.1, "weight_decay": 1.0e-4,
        "model": {"arch": "unet", "encoder": "tu-resnet18", "encoder_kwargs": RESNET_TINY, "pretrained": False,
                  "arch_kwargs": {"decoder_channels": [32, 16, 16, 8, 8]}}})
    assert main(["train-seg", "--config", config, "--pseudo-masks", str(pseudo_masks), "--set",
                 f"output_dir={tmp_path}", "--set", "segment.eval.scales=[1.0]"]) == 0
    run = tmp_path / "unet_sgd" / "segment"
    ckpt = read_checkpoint(run)
    groups = ckpt["optimizer"]["param_groups"]
    assert all(g["momentum"] == 0.9 for g in groups) and {g["lr_mult"] for g in groups} == {1.0, 0.1}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
    assert records[0]["lr"] == pytest.approx(0.01 * (1 - 0 / 2) ** 0.9, rel=1e-6)  # poly from 0.01, no warm-up
    assert json.loads((run / "manifest.json").read_text())["segmenter"]["arch"] == "unet"
