"""Input-checked reuse: a finished stage folder is reused only when its config keys and the sha256 of every input
checkpoint match; otherwise one error names what differs and the way out (--force or another --run-dir)."""

from __future__ import annotations

import pytest

from semples.cli import main
from semples.utils.checkpoint_io import read_checkpoint, sha256_file


@pytest.fixture
def trained(tmp_path):
    """The tiny sequential scheme (classify, match, prompt, refine) and a second prompt run (other seed)."""
    base = ["--config", "tiny", "--set", f"output_dir={tmp_path}"]
    assert main(["train", "--scheme", "sequential", *base]) == 0
    root = tmp_path / "tiny"
    assert main(["train", "--stage", "prompt", "--generator", str(root / "match"), "--run-dir",
                 str(root / "prompt_b"), *base, "--set", "seed=1"]) == 0
    return base, root


def refine_args(base, root, generator="classify", prompts="prompt"):
    return ["train", "--stage", "refine", "--generator", str(root / generator), "--prompts", str(root / prompts),
            *base]


def test_refine_with_other_prompts_or_generator_is_refused_then_forced(trained, capsys):
    base, root = trained
    capsys.readouterr()
    assert main(refine_args(base, root)) == 0  # the same inputs: reused
    assert "refine: skipped" in capsys.readouterr().out
    before = read_checkpoint(root / "refine")

    assert main(refine_args(base, root, prompts="prompt_b")) == 1  # --prompts B on a folder made with A
    err = capsys.readouterr().err
    a, b = sha256_file(root / "prompt" / "checkpoint.pt"), sha256_file(root / "prompt_b" / "checkpoint.pt")
    assert f"input prompts: {root / 'prompt' / 'checkpoint.pt'} (sha256 {a[:12]}) -> " \
           f"{root / 'prompt_b' / 'checkpoint.pt'} (sha256 {b[:12]})" in err
    assert "--force" in err and "--run-dir" in err and "skipped" not in err

    assert main(refine_args(base, root, generator="match")) == 1  # another --generator
    assert f"input generator: {root / 'classify' / 'checkpoint.pt'}" in capsys.readouterr().err
    assert read_checkpoint(root / "refine")["inputs"] == before["inputs"]  # nothing was touched

    assert main([*refine_args(base, root, prompts="prompt_b"), "--force"]) == 0
    assert read_checkpoint(root / "refine")["inputs"]["prompts"]["path"].endswith("prompt_b/checkpoint.pt")
    assert main([*refine_args(base, root, prompts="prompt_b"), "--run-dir", str(root / "refine_a")]) == 0


def test_refine_init_and_config_keys_are_checked(trained, capsys):
    base, root = trained
    capsys.readouterr()
    assert main(["train", "--scheme", "sequential", *base, "--set", "scheme.refine_init=match"]) == 1
    err = capsys.readouterr().err
    assert "scheme.refine_init: initial -> match" in err and "input generator:" in err
    assert main(["train", "--scheme", "sequential", *base, "--set", "loss.lambda_bg=0.5"]) == 1
    assert "loss.lambda_bg: 2.4 -> 0.5" in capsys.readouterr().err  # match is the first stage that reads it
    assert main(["train", "--scheme", "sequential", *base]) == 0  # back to the recorded settings: all reused
    assert capsys.readouterr().out.count("skipped") == 4



def test_a_clip_whose_weights_changed_under_the_same_name_is_another_input(tmp_path, capsys):
    """Retraining the toy CLIP (same arch name, new weights file) must not reuse stages trained on the old one."""
    import shutil

    tiny_clip = ["--set", "model.vision_width=32", "--set", "model.vision_layers=1", "--set",
                 "model.vision_head_width=16", "--set", "model.text_width=16", "--set", "model.text_heads=2", "--set",
                 "model.text_layers=1", "--set", "model.embed_dim=16", "--set", "train.batch_size=8", "--set",
                 "train.num_workers=0", "--set", "train.warmup_steps=1", "--set", "train.steps=1", "--no-probe"]
    for name, seed in (("a", 0), ("b", 1)):
        assert main(["synth", "train-clip", "--out", str(tmp_path / name), "--set", f"seed={seed}", *tiny_clip]) == 0
    clip = tmp_path / "clip"
    shutil.copytree(tmp_path / "a", clip)
    base = ["--config", "tiny", "--set", f"output_dir={tmp_path}", "--set", f"clip.arch=local-dir:{clip}",
            "--set", "prompts.length=2"]
    assert main(["train", "--stage", "classify", *base]) == 0
    match = ["train", "--stage", "match", "--generator", str(tmp_path / "tiny" / "classify"), *base]
    assert main(match) == 0
    capsys.readouterr()
    assert main(match) == 0 and "skipped" in capsys.readouterr().out  # same weights: reused
    weights = "open_clip_model.safetensors"
    shutil.copy(tmp_path / "b" / weights, clip / weights)  # new weights, same folder and name
    assert main(match) == 1
    err = capsys.readouterr().err
    assert "input frozen.clip" in err and sha256_file(clip / weights)[:12] in err and "--force" in err
