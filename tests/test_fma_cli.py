"""`semples train --stage fma-classify / fma-segment` end to end on the synthetic world with the tiny preset."""

from __future__ import annotations

import json

from semples.cli import main
from semples.config import load_config
from semples.data import build_dataset
from semples.data.io import write_mask_png
from semples.utils.checkpoint_io import read_checkpoint


def test_fma_classify_then_fma_segment(tmp_path, capsys):
    base = ["--config", "tiny", "--set", f"output_dir={tmp_path}"]
    assert main(["train", "--stage", "fma-classify", *base]) == 0
    run = tmp_path / "tiny" / "fma-classify"
    ckpt = read_checkpoint(run)
    assert ckpt["finished"] and set(ckpt["modules"]) == {"mask_generator"}
    assert set(ckpt["modules"]["mask_generator"]) == {"prompts.context", "prompts.token_ids", "prompts.context_slots",
                                                      "prompts.eot_index"}  # no CLIP weights in the checkpoint
    assert ckpt["config"]["generator"]["name"] == "clip_gradcam"
    assert ckpt["config"]["generator"]["clip_cam"]["prompts"] == "classification"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["prompts"]["kind"] == "classification" and manifest["prompts"]["class_names"][0] == "boat"
    assert manifest["prompts"]["background_names"][:2] == ["water", "the sky"]
    assert set(manifest["trainable_parameters"]) == {"mask_generator"}
    capsys.readouterr()
    assert main(["train", "--stage", "fma-classify", *base]) == 0
    assert "skipped" in capsys.readouterr().out

    # fma-segment needs seeds; here the ground truth written as label PNGs stands in for the coarse seeds
    assert main(["train", "--stage", "fma-segment", *base]) == 1
    cfg = load_config("tiny")
    dataset = build_dataset(cfg.data, "train")
    seeds = tmp_path / "seeds"
    for i, image_id in enumerate(dataset.ids):
        write_mask_png(seeds / f"{image_id}.png", dataset.load_mask(i))
    assert main(["train", "--stage", "fma-segment", *base, "--seeds", str(seeds)]) == 0
    seg = json.loads((tmp_path / "tiny" / "fma-segment" / "manifest.json").read_text())
    assert seg["inputs"]["seeds"]["dir"] == str(seeds) and seg["prompts"]["kind"] == "segmentation"
    assert seg["losses"] == ["cam_activation_loss", "cam_fg_loss", "cam_bg_loss"]
    ckpt = read_checkpoint(tmp_path / "tiny" / "fma-segment")
    assert ckpt["modules"]["mask_generator"]["prompts.context"].shape[0] == 6 + 8  # one context per prompt

    # the shared seed verb reads an FMA run like any other generator's
    out = tmp_path / "cams"
    assert main(["cams", *base, "--generator", str(tmp_path / "tiny" / "fma-segment"), "--limit", "2",
                 "--out", str(out), "--no-progress"]) == 0
    assert len(list(out.glob("*.npz"))) == 2


def test_semples_scheme_trains_the_resnet_cam_generator(tmp_path):
    """Compatibility through the CLI: the sequential scheme on a (tiny) ResNet CAM network, then its seeds."""
    base = ["--config", "tiny", "--set", f"output_dir={tmp_path}", "--set", "generator.name=resnet_cam",
            "--set", "generator.backbone=resnet18",
            "--set", "generator.backbone_kwargs={layers: [1, 1, 1, 1], channels: [16, 32, 64, 128], stem_width: 16}"]
    assert main(["train", "--scheme", "sequential", *base]) == 0
    for stage in ("classify", "match", "prompt", "refine"):
        assert read_checkpoint(tmp_path / "tiny" / stage)["finished"]
    refine = read_checkpoint(tmp_path / "tiny" / "refine")
    assert "head.weight" in refine["modules"]["mask_generator"]
    assert refine["config"]["generator"]["name"] == "resnet_cam"
    out = tmp_path / "cams"
    assert main(["cams", "--config", "tiny", "--set", f"output_dir={tmp_path}", "--generator",
                 str(tmp_path / "tiny" / "refine"), "--limit", "2", "--out", str(out), "--no-progress"]) == 0
    assert len(list(out.glob("*.npz"))) == 2
