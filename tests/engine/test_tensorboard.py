"""TensorBoard beside metrics.jsonl: off by default; on, its event files hold every logged scalar and sample
pictures once per epoch, and the trained weights are those of a run without it."""

from __future__ import annotations

import json

import pytest
import torch

from semples.cli import main
from semples.config import load_config
from semples.data import build_dataset
from semples.utils.checkpoint_io import read_checkpoint
from tests.seg_helpers import write_masks_from_ground_truth


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_train_seg_writes_scalars_and_sample_images(tmp_path):
    pytest.importorskip("tensorboard")
    assert load_config("tiny").log.tensorboard is False  # off by default
    cfg = load_config("tiny")
    masks = write_masks_from_ground_truth(build_dataset(cfg.data, cfg.data.train_split), tmp_path / "masks")
    base = ["train-seg", "--config", "tiny", "--pseudo-masks", str(masks), "--no-eval", "--set", "segment.epochs=2"]
    assert main([*base, "--set", f"output_dir={tmp_path / 'plain'}"]) == 0
    assert not (tmp_path / "plain" / "tiny" / "segment" / "tensorboard").exists()
    assert main([*base, "--set", f"output_dir={tmp_path / 'tb'}", "--set", "log.tensorboard=true",
                 "--set", "log.sample_images=2"]) == 0
    run = tmp_path / "tb" / "tiny" / "segment"
    acc = _events(run / "tensorboard")
    tags = acc.Tags()
    assert {"loss/loss", "loss/ce_loss", "lr", "images_per_s", "epoch/loss", "epoch/ce_loss"} <= set(tags["scalars"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "lr" in r]
    logged = acc.Scalars("loss/ce_loss")
    assert [e.step for e in logged] == [r["step"] for r in steps]
    assert [e.value for e in logged] == pytest.approx([r["ce_loss"] for r in steps], rel=1e-6)
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx([r["lr"] for r in steps], rel=1e-6)
    assert {"samples/image", "samples/prediction", "samples/pseudo mask"} <= set(tags["images"])
    assert len(acc.Images("samples/prediction")) == 2  # once per epoch
    # pictures are drawn without touching the training: the same weights as without TensorBoard
    a = read_checkpoint(tmp_path / "plain" / "tiny" / "segment")["modules"]["segmenter"]
    b = read_checkpoint(run)["modules"]["segmenter"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_generator_stages_draw_their_cams(tmp_path):
    pytest.importorskip("tensorboard")
    assert main(["train", "--stage", "classify", "--config", "tiny", "--set", f"output_dir={tmp_path}",
                 "--set", "log.tensorboard=true"]) == 0
    acc = _events(tmp_path / "tiny" / "classify" / "tensorboard")
    assert "loss/loss" in acc.Tags()["scalars"] and "samples/cam" in acc.Tags()["images"]


def test_missing_tensorboard_is_one_clear_error(monkeypatch, tmp_path):
    import semples.utils.extras as extras
    from semples.engine.metrics import TensorBoardLog
    from semples.errors import MissingExtraError

    monkeypatch.setattr(extras, "_installed", lambda m: m != "tensorboard")
    with pytest.raises(MissingExtraError, match=r"pip install 'semples\[tensorboard\]'"):
        TensorBoardLog(tmp_path, enabled=True)
    assert TensorBoardLog(tmp_path, enabled=False).writer is None
