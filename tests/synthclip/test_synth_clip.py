"""The toy CLIP: shipped weights load through the real loader and carry the expected knowledge and bias;
training through the CLI writes a loadable folder; the pair stream and the loss behave."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml

from semples.cli import main
from semples.config import ClipConfig
from semples.data.synthetic import SyntheticWorld
from semples.models.clip import ASSET_DIR, PromptTextEncoder, load_clip
from semples.synthclip import (
    THRESHOLDS,
    ContrastiveStage,
    SynthClipConfig,
    check_properties,
    load_synth_clip_config,
)
from semples.synthclip.data import PairStream
from semples.synthclip.train import build_open_clip, make_tokenizer, world_token_ids

SHIPPED = ASSET_DIR / "synth-clip"
DEMO_PROMPT_LENGTH = 8
# a tiny architecture for training tests (the token table alone is 49,408 × text_width)
TINY = ["--set", "model.vision_width=32", "--set", "model.vision_layers=1", "--set", "model.vision_head_width=16",
        "--set", "model.text_width=16", "--set", "model.text_heads=2", "--set", "model.text_layers=1",
        "--set", "model.embed_dim=16", "--set", "train.batch_size=8", "--set", "train.num_workers=0",
        "--set", "train.warmup_steps=1"]


@pytest.fixture(scope="module")
def shipped():
    return load_clip(ClipConfig(arch="synth-clip"))


def test_shipped_folder_is_complete_small_and_consistent():
    weights = SHIPPED / "open_clip_model.safetensors"
    assert weights.stat().st_size <= 10 * 1024 * 1024
    cfg = load_synth_clip_config(SHIPPED / "training.yaml")
    model_cfg = json.loads((SHIPPED / "open_clip_config.json").read_text())["model_cfg"]
    assert model_cfg == cfg.model.open_clip_cfg()  # the weights' architecture is the committed config's
    produced = yaml.safe_load((SHIPPED / "training.yaml").read_text())["produced"]
    assert produced["steps"] == cfg.train.steps and produced["command"].startswith("semples synth train-clip")


def test_shipped_clip_loads_through_the_real_loader(shipped):
    assert shipped.source["file"].endswith("synth-clip/open_clip_model.safetensors")
    assert shipped.source["sha256"] is not None
    assert shipped.image_size == (96, 96)  # trained at the demo's crop size (property e)
    assert shipped.context_length == 24
    assert shipped.tokenize(["a photo of a cow."]).shape == (1, 24)  # open_clip's BPE tokenizer, short context
    assert shipped.token_ids("a cow") == [320, 9706]
    # the same folder through plain open_clip, and as local-dir:DIR
    import open_clip

    plain = open_clip.create_model(f"local-dir:{SHIPPED}")
    again = load_clip(ClipConfig(arch=f"local-dir:{SHIPPED}", block_type="default"))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = shipped.encode_image(x)
        torch.testing.assert_close(plain.encode_image(x), ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(again.encode_image(x), ref, rtol=1e-4, atol=1e-4)  # block types: same weights


def test_prompt_encoder_runs_on_the_shipped_clip(shipped):
    enc = PromptTextEncoder(shipped, 6, length=DEMO_PROMPT_LENGTH, template="a photo of {}.")
    assert enc.eot_position == 5 + DEMO_PROMPT_LENGTH
    feats = enc()
    assert feats.shape == (6, shipped.embed_dim) and torch.isfinite(feats).all()
    feats.square().sum().backward()
    assert enc.prompts.grad.abs().sum() > 0
    # the real token embeddings of "a cow" in the prompt slot reproduce encode_text exactly
    ids = shipped.token_ids("a cow")
    exact = PromptTextEncoder(shipped, 1, length=len(ids))
    with torch.no_grad():
        torch.testing.assert_close(exact.encode_vectors(shipped.embed_tokens(torch.tensor([ids]))),
                                   shipped.encode_text(["a photo of a cow."]), rtol=1e-4, atol=1e-5)
    PromptTextEncoder(shipped, 1, length=18)  # the longest prompt that fits 24 positions
    with pytest.raises(ValueError, match="positions"):
        PromptTextEncoder(shipped, 1, length=19)


def test_shipped_weights_pass_every_property(shipped):
    """The properties a real CLIP has and the demo relies on (issue 10), on a few hundred held-out images."""
    cfg = load_synth_clip_config(SHIPPED)
    result = check_properties(shipped, SyntheticWorld(cfg.world), feed_size=96, per_class=24, per_background=12)
    failed = [f"({p['key']}) {p['name']}" for p in result["properties"] if not p["pass"]]
    assert not failed, failed
    assert result["probe"]["images"]["single_object"] == 6 * 24
    assert set(result["probe"]["per_class"]) == {"boat", "plane", "cow", "train", "bird", "car"}
    # the committed probe.json (full sample) says the same
    committed = json.loads((SHIPPED / "probe.json").read_text())
    assert committed["all_pass"] and committed["thresholds"] == THRESHOLDS


def test_shipped_config_is_the_committed_default():
    """`semples synth train-clip` without --set reproduces the shipped weights: their config is the default."""
    assert load_synth_clip_config(SHIPPED) == SynthClipConfig()


def test_unused_token_rows_are_zero_and_used_ones_are_not(shipped):
    weight = shipped.model.token_embedding.weight
    cfg = load_synth_clip_config(SHIPPED)
    extra = (*cfg.pairs.null_captions, f"a cow{cfg.pairs.grey_caption_suffix}.")
    used = sorted(world_token_ids(SyntheticWorld(cfg.world), shipped.tokenizer, extra))
    mask = torch.zeros(weight.shape[0], dtype=torch.bool)
    mask[used] = True
    assert weight[~mask].abs().sum() == 0
    assert (weight[mask].abs().sum(1) > 0).all()


def test_train_clip_cli_writes_a_loadable_folder(tmp_path, capsys):
    out = tmp_path / "clip"
    threads = torch.get_num_threads()
    assert main(["synth", "train-clip", "--out", str(out), "--set", "train.steps=2", *TINY, "--set", "train.threads=1",
                 "--no-probe"]) == 0
    assert "finished (2 steps" in capsys.readouterr().out
    assert torch.get_num_threads() == threads  # the training's thread setting does not leak into the caller
    clip = load_clip(ClipConfig(arch=f"local-dir:{out}"))
    assert clip.embed_dim == 16 and clip.token_width == 16
    assert PromptTextEncoder(clip, 6, length=DEMO_PROMPT_LENGTH)().shape == (6, 16)
    # training.yaml reproduces the config (it is a valid --config)
    cfg = load_synth_clip_config(out / "training.yaml")
    assert cfg.train.steps == 2 and cfg.model.text_width == 16
    assert (out / "run" / "checkpoint.pt").is_file() and (out / "run" / "metrics.jsonl").is_file()
    # a finished run is not retrained or re-exported
    before = (out / "training.yaml").read_text()
    assert main(["synth", "train-clip", "--out", str(out), "--set", "train.steps=2", *TINY, "--set", "train.threads=1",
                 "--no-probe"]) == 0
    assert "skipped" in capsys.readouterr().out and (out / "training.yaml").read_text() == before


def test_train_clip_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert main(["synth", "train-clip", "--out", str(out), "--set", "train.steps=2", *TINY, "--no-probe"]) == 0
    assert (a / "open_clip_model.safetensors").read_bytes() == (b / "open_clip_model.safetensors").read_bytes()


def test_probe_clip_cli_prints_the_property_list_and_writes_json(tmp_path, capsys):
    path = tmp_path / "probe.json"
    status = main(["synth", "probe-clip", "--per-class", "3", "--per-background", "3", "--json", str(path)])
    out = capsys.readouterr().out
    result = json.loads(path.read_text())
    assert status == (0 if result["all_pass"] else 1)  # a failing property is a failing check
    assert [p["key"] for p in result["properties"]] == ["a", "b", "c", "d", "e", "f", "g"]
    for p in result["properties"]:
        assert re.search(rf"^\({p['key']}\) {'PASS' if p['pass'] else 'FAIL'}  ", out, re.M)
    assert "bias" in out and "cow" in out and "grass" in out
    assert result["probe"]["images"]["single_object"] == 18 and len(result["probe"]["similarity"]["mean_cosine"]) == 6
    assert result["feed_size"] == 96 and result["thresholds"] == THRESHOLDS


def test_the_property_check_can_fail(tmp_path):
    """A random tiny CLIP at 64 px fed the demo's 96 px crops fails the resolution property and the bias."""
    out = tmp_path / "clip"
    assert main(["synth", "train-clip", "--out", str(out), "--set", "train.steps=1", *TINY, "--set",
                 "model.image_size=64", "--set",
                 "train.threads=1", "--no-probe"]) == 0
    clip = load_clip(ClipConfig(arch=f"local-dir:{out}"))
    result = check_properties(clip, SyntheticWorld(load_synth_clip_config(out).world), feed_size=96, per_class=3,
                              per_background=3)
    by_key = {p["key"]: p for p in result["properties"]}
    assert not by_key["e"]["pass"] and by_key["e"]["values"]["native_size"] == [64, 64]
    assert not result["all_pass"] and result["passed"] < result["total"]
    assert set(by_key["c"]["values"]) == {"boat", "plane", "cow", "train", "bird", "car"}


def test_preview_cli(tmp_path):
    path = tmp_path / "preview.png"
    assert main(["synth", "preview", "--out", str(path), "-n", "2"]) == 0
    assert path.stat().st_size > 1000


def test_synth_without_command_is_a_usage_error():
    assert main(["synth"]) == 2


def test_pair_stream_is_a_pure_function_of_the_index():
    cfg = SynthClipConfig()
    stream = PairStream(SyntheticWorld(cfg.world), cfg.pairs, 1000, 64, seed=3)
    again = PairStream(SyntheticWorld(cfg.world), cfg.pairs, 1000, 64, seed=3)
    for i in (0, 7, 123):
        x, y = stream[(i, 0)], again[(i, 0)]
        assert torch.equal(x["image"], y["image"]) and x["caption"] == y["caption"]
        assert x["image"].shape == (3, 64, 64)
    assert not torch.equal(stream[1]["image"], stream[2]["image"])
    share = np.mean([stream.pair(i)[2] is None for i in range(400)])
    assert abs(share - cfg.pairs.background_only_prob) < 0.06  # background-only pairs at the configured rate


def test_contrastive_loss_treats_repeated_captions_as_one_text():
    cfg = load_synth_clip_config(None, [o for o in TINY[1::2] if o.startswith("model.")])
    stage = ContrastiveStage(build_open_clip(cfg), make_tokenizer(cfg))
    images = torch.randn(4, 3, 96, 96)  # the default tower size
    out = stage({"image": images, "caption": ["a cow.", "a boat.", "a cow.", "a boat."]})
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    no_grad = [n for n, p in stage.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    # with identical images, a repeated caption's two images are equally good positives: the loss is symmetric
    same = images[:1].expand(4, -1, -1, -1)
    with torch.no_grad():
        l1 = stage({"image": same, "caption": ["a cow.", "a boat.", "a cow.", "a boat."]})["loss"]
        l2 = stage({"image": same, "caption": ["a cow.", "a cow.", "a boat.", "a boat."]})["loss"]
    torch.testing.assert_close(l1, l2)
