"""The command line end to end on generated data with tiny random-weight models."""

from __future__ import annotations

import json

import pytest

from semples.cli import VERBS, main
from semples.utils.checkpoint_io import read_checkpoint


def run_dir(tmp_path, stage):
    return tmp_path / "tiny" / stage


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out
    assert "semples train --scheme sequential" in out
    assert main([]) == 2


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_has_useful_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    assert len(capsys.readouterr().out) > 300


def _torch_imported_after(argv: list[str], prelude: str = "") -> bool:
    """Runs `semples <argv>` in a fresh interpreter (after `prelude`); whether torch got imported."""
    import subprocess
    import sys

    code = (f"import sys\n{prelude}\nfrom semples.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1] == "True"


def test_help_starts_without_torch():
    """`semples --help` and a verb's --help build only that verb's arguments: no torch import (~2.5 s)."""
    assert not _torch_imported_after(["--help"])
    assert not _torch_imported_after(["-v", "pseudo-masks", "--help"])
    assert not _torch_imported_after(["train", "--help"])  # its --stage choices come from semples.stage_table
    # and the check can fail: the stage classes themselves do import torch
    assert _torch_imported_after(["--help"], prelude="import semples.stages")


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_builds_its_arguments_without_torch(verb):
    import subprocess
    import sys

    code = (f"import sys\nfrom semples.cli import build_parser\nbuild_parser([{verb!r}])\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_verb_of_a_command_line():
    from semples.cli import _verb_of

    assert _verb_of(["-v", "pseudo-masks", "--cams", "x"]) == "pseudo-masks"
    assert _verb_of(["--version"]) is None
    assert _verb_of(["nonsense", "--help"]) is None
    assert main(["-v"]) == 2  # no verb: the help, exit status 2


def test_sequential_scheme_end_to_end_and_rerun_skips(tmp_path, capsys):
    assert main(["train", "--scheme", "sequential", "--config", "tiny", "--set", f"output_dir={tmp_path}"]) == 0
    for stage in ("classify", "match", "prompt", "refine"):
        folder = run_dir(tmp_path, stage)
        assert {p.name for p in folder.iterdir()} >= {"checkpoint.pt", "config.yaml", "manifest.json",
                                                     "metrics.jsonl"}
        assert read_checkpoint(folder)["finished"]
    refine = json.loads((run_dir(tmp_path, "refine") / "manifest.json").read_text())
    # reference behaviour: refine restarts S from the classify result, with the prompt run's prompts
    assert refine["inputs"]["generator"]["stage"] == "classify"
    assert refine["inputs"]["start_point"] == "classify"
    assert refine["inputs"]["prompts"]["path"].endswith("prompt/checkpoint.pt")
    prompt = json.loads((run_dir(tmp_path, "prompt") / "manifest.json").read_text())
    assert prompt["inputs"]["generator"]["path"].endswith("match/checkpoint.pt")
    assert set(prompt["trainable_parameters"]) == {"prompts"}
    capsys.readouterr()
    assert main(["train", "--scheme", "sequential", "--config", "tiny", "--set", f"output_dir={tmp_path}"]) == 0
    assert capsys.readouterr().out.count("skipped") == 4


def test_refine_can_start_from_the_match_result(tmp_path):
    args = ["train", "--scheme", "sequential", "--config", "tiny", "--set", f"output_dir={tmp_path}",
            "--set", "scheme.refine_init=match", "--set", "scheme.run_classify=false"]
    assert main(args) == 0
    refine = json.loads((run_dir(tmp_path, "refine") / "manifest.json").read_text())
    assert refine["inputs"]["start_point"] == "match"
    assert not run_dir(tmp_path, "classify").exists()


def test_alternating_rounds_hand_folders_forward(tmp_path):
    assert main(["train", "--scheme", "alternating", "--rounds", "2", "--config", "tiny",
                 "--set", f"output_dir={tmp_path}"]) == 0
    r2 = json.loads((run_dir(tmp_path, "refine_r2") / "manifest.json").read_text())
    assert r2["inputs"]["generator"]["path"].endswith("refine_r1/checkpoint.pt")
    assert r2["inputs"]["prompts"]["path"].endswith("prompt_r2/checkpoint.pt")
    p2 = json.loads((run_dir(tmp_path, "prompt_r2") / "manifest.json").read_text())
    assert p2["inputs"]["generator"]["path"].endswith("refine_r1/checkpoint.pt")


def test_joint_scheme(tmp_path):
    assert main(["train", "--scheme", "joint", "--config", "tiny", "--set", f"output_dir={tmp_path}"]) == 0
    ckpt = read_checkpoint(run_dir(tmp_path, "joint"))
    assert set(ckpt["modules"]) == {"mask_generator", "prompts"}


def test_single_stages_by_hand(tmp_path):
    base = ["--config", "tiny", "--set", f"output_dir={tmp_path}"]
    assert main(["train", "--stage", "classify", *base]) == 0
    assert main(["train", "--stage", "match", "--generator", str(run_dir(tmp_path, "classify")), *base]) == 0
    assert main(["train", "--stage", "prompt", "--generator", str(run_dir(tmp_path, "match")), *base]) == 0
    assert main(["train", "--stage", "refine", "--generator", str(run_dir(tmp_path, "classify") / "checkpoint.pt"),
                 "--prompts", str(run_dir(tmp_path, "prompt")), "--run-dir", str(tmp_path / "my_refine"),
                 *base]) == 0
    assert read_checkpoint(tmp_path / "my_refine")["finished"]


def test_user_errors_are_one_line(tmp_path, capsys):
    base = ["--config", "tiny", "--set", f"output_dir={tmp_path}"]
    assert main(["train", "--stage", "refine", *base]) == 1
    assert "--prompts" in capsys.readouterr().err
    assert main(["train", "--stage", "prompt", "--generator", str(tmp_path / "nowhere"), *base]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err
    assert main(["train", "--stage", "match", "--config", "tiny", "--set", "match.epoch=2"]) == 1
    assert "valid keys are: epochs" in capsys.readouterr().err
    assert main(["train", "--stage", "classify", "--config", "tiny", "--set", f"output_dir={tmp_path}",
                 "--set", "classify.batch_size=64"]) == 1
    assert "fewer than one batch" in capsys.readouterr().err
    assert main(["train", "--config", "tiny"]) == 2
    assert "pass --stage NAME or --scheme NAME" in capsys.readouterr().err  # on stderr, stdout stays clean


def test_print_config_and_presets(capsys):
    assert main(["train", "--list-presets"]) == 0
    assert {"tiny", "voc_semples", "coco_semples"} <= set(capsys.readouterr().out.split())
    assert main(["train", "--print-config", "--config", "voc_semples", "--set", "loss.lambda_bg=1.25"]) == 0
    out = capsys.readouterr().out
    assert "lambda_bg: 1.25" in out and "dataset: voc" in out


def test_bf16_mixed_precision_runs_on_cpu(tmp_path):
    args = ["train", "--scheme", "sequential", "--config", "tiny", "--set", f"output_dir={tmp_path}",
            "--set", "mixed_precision=bf16"]
    assert main(args) == 0
    manifest = json.loads((run_dir(tmp_path, "refine") / "manifest.json").read_text())
    assert manifest["mixed_precision"] == "bf16"
    records = [json.loads(x) for x in (run_dir(tmp_path, "refine") / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] is not None for r in records if "loss" in r)


def _user_folder(tmp_path, n=6):
    """A user's own folder dataset made of synthetic-world images, one of them corrupt."""
    from semples.data.synthetic import SyntheticWorld

    world = SyntheticWorld()
    root = tmp_path / "mydata"
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        item = world.generate("train", i)
        from PIL import Image

        Image.fromarray(item.image).save(root / "images" / f"img{i}.jpg")
        names = [world.class_names[k] for k in range(len(world.class_names)) if item.labels[k] > 0]
        rows.append(f"img{i}.jpg,{';'.join(names)}")
    (root / "labels.csv").write_text("image,labels\n" + "\n".join(rows) + "\n")
    (root / "images" / "img2.jpg").write_bytes(b"not a jpeg")
    return root


def test_training_on_a_folder_with_a_bad_image(tmp_path, capsys):
    root = _user_folder(tmp_path)
    base = ["train", "--stage", "classify", "--config", "tiny", "--set", f"output_dir={tmp_path / 'runs'}",
            "--set", "data.dataset=folder", "--set", f"data.root={root}"]
    assert main(base) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "img2.jpg: not an image file" in errors[0] and "Traceback" not in err
    assert main([*base, "--set", "data.skip_bad=true", "--force"]) == 0
    manifest = json.loads((tmp_path / "runs" / "tiny" / "classify" / "manifest.json").read_text())
    assert len(manifest["bad_items"]) == 1 and "img2.jpg" in manifest["bad_items"][0]


def test_changing_inference_or_other_stage_settings_keeps_finished_runs(tmp_path, capsys):
    base = ["train", "--scheme", "sequential", "--config", "tiny", "--set", f"output_dir={tmp_path}"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--set", "cams.scales=[1.0]", "--set", "pseudo.method=threshold",
                 "--set", "segment.epochs=3", "--set", "data.eval_split=train"]) == 0
    assert capsys.readouterr().out.count("skipped") == 4
    # λ of stage refine: the earlier stages stay finished, refine's folder refuses the other setting
    assert main([*base, "--set", "loss.lambda_refine=0.1"]) == 1
    assert ("refine/checkpoint.pt (finished): made from other inputs or settings (loss.lambda_refine: 0.05 -> 0.1); "
            "pass --force to redo it, or choose another --run-dir") in capsys.readouterr().err


@pytest.mark.parametrize("control", ["gaussian", "class_text"])
def test_refine_controls_build_and_train_without_prompts(tmp_path, control):
    """The ablation's control rows: u^b replaced by Gaussian directions or by the class's own text feature."""
    import torch

    from semples.config import load_config
    from semples.data import build_dataset
    from semples.models.clip import load_clip
    from semples.stages import build_stage

    base = ["--config", "tiny", "--set", f"output_dir={tmp_path}"]
    assert main(["train", "--stage", "classify", *base]) == 0
    ctl = [*base, "--set", f"prompts.refine_with={control}"]
    assert main(["train", "--stage", "refine", "--generator", str(run_dir(tmp_path, "classify")), *ctl]) == 0
    manifest = json.loads((run_dir(tmp_path, "refine") / "manifest.json").read_text())
    assert manifest["inputs"]["prompts"]["control"] == control
    assert read_checkpoint(run_dir(tmp_path, "refine"))["finished"]
    # the features the control stands in with
    cfg = load_config("tiny", [f"output_dir={tmp_path}", f"prompts.refine_with={control}"])
    clip = load_clip(cfg.clip)
    classes = build_dataset(cfg.data, cfg.data.train_split).classes
    stage = build_stage("refine", cfg, classes, generator=str(run_dir(tmp_path, "classify")), clip=clip).stage
    again = build_stage("refine", cfg, classes, generator=str(run_dir(tmp_path, "classify")), clip=clip).stage
    assert torch.equal(stage.prompt_features, again.prompt_features)  # seeded: the same control every time
    u_f = clip.class_text_features(list(classes.prompt_names), cfg.clip.class_template)
    assert torch.equal(stage.prompt_features, u_f) == (control == "class_text")
    # a control and --prompts together is a contradiction, said in one line
    assert main(["train", "--stage", "refine", "--generator", str(run_dir(tmp_path, "classify")), "--prompts",
                 str(tmp_path), "--run-dir", str(tmp_path / "other"), *ctl]) == 1


def test_sigterm_is_handled_like_ctrl_c_and_the_run_resumes(tmp_path):
    """Issue 12: SIGTERM leaves the manifest "interrupted" (not "running"), exits 143; --resume finishes it."""
    import signal
    import subprocess
    import sys
    import time

    args = ["train", "--stage", "classify", "--config", "tiny", "--set", f"output_dir={tmp_path}",
            "--set", "classify.epochs=5", "--set", "classify.checkpoint_every_steps=1"]
    proc = subprocess.Popen([sys.executable, "-m", "semples", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    run = run_dir(tmp_path, "classify")
    while not (run / "checkpoint.pt").exists():  # training has begun
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("semples train: terminated (SIGTERM)")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"].startswith("interrupted: Terminated")
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert main([*args, "--resume"]) == 0
    ckpt = read_checkpoint(run)
    assert ckpt["finished"] and ckpt["progress"]["global_step"] == 10


def test_a_file_where_the_output_folder_should_be_is_one_line(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    assert main(["train", "--stage", "classify", "--config", "tiny", "--set", f"output_dir={tmp_path / 'runs'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("semples train: error: ")
    assert f"{tmp_path / 'runs'} is a file, not a folder" in err


def test_disk_full_while_training_is_one_line_and_the_finished_run_survives(tmp_path, capsys, monkeypatch):
    import errno
    import os

    args = ["train", "--stage", "classify", "--config", "tiny", "--set", f"output_dir={tmp_path}"]
    assert main(args) == 0
    before = (run_dir(tmp_path, "classify") / "checkpoint.pt").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    capsys.readouterr()
    assert main([*args, "--force"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot write (No space left on device)" in err
    monkeypatch.undo()
    assert (run_dir(tmp_path, "classify") / "checkpoint.pt").read_bytes() == before
    assert read_checkpoint(run_dir(tmp_path, "classify"))["finished"]


def test_machine_errors_outside_semples_are_one_line(tmp_path, capsys, monkeypatch):
    """An OSError of the machine (permissions, space) that no step wrapped still ends in one line."""
    import errno

    from semples.commands import train

    def denied(args):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr(train, "run", denied)
    assert main(["train", "--stage", "classify", "--config", "tiny"]) == 1
    assert capsys.readouterr().err.strip() == f"semples train: error: {tmp_path / 'x'}: Permission denied"
    with pytest.raises(PermissionError):  # --verbose keeps the traceback
        main(["-v", "train", "--stage", "classify", "--config", "tiny"])


def test_stage_table_and_stage_classes_agree():
    from semples.stage_table import STAGE_TABLE, stages_of_verb
    from semples.stages import STAGES
    from semples.stages.base import Stage

    assert list(STAGES) == list(STAGE_TABLE)
    for name, cls in STAGES.items():
        assert issubclass(cls, Stage) and cls.name == name
    assert stages_of_verb("train-seg") == ["segment"]
    assert stages_of_verb("train")[:4] == ["classify", "match", "prompt", "refine"]
