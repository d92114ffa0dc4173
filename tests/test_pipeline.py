"""`semples run`: the whole chain on generated data with tiny models; --until / --from; idempotent re-runs."""

from __future__ import annotations

import json

import pytest

from semples.cli import main
from semples.pipeline import STEPS


def manifest(root):
    return json.loads((root / "run.json").read_text())


def test_full_chain_then_idempotent_rerun(tmp_path, capsys):
    args = ["run", "--config", "tiny", "--set", f"output_dir={tmp_path}", "--set", "pipeline.seed_split=train",
            "--set", "pipeline.figures=2"]
    assert main(args) == 0
    root = tmp_path / "tiny"
    m = manifest(root)
    assert [s for s in STEPS if m["steps"][s]["status"] == "done"] == list(STEPS)
    steps = m["steps"]
    assert steps["train"]["outputs"]["generator"].endswith("tiny/refine")
    assert steps["cams"]["outputs"]["pseudo"] == steps["cams"]["outputs"]["seeds"]  # seed split = pseudo split
    assert 0.0 <= steps["eval-seeds"]["outputs"]["miou"] <= 1.0
    assert 0.0 <= steps["eval-masks"]["outputs"]["miou"] <= 1.0
    assert set(steps["eval"]["outputs"]["miou"]) >= {"single_scale", "multi_scale"}
    assert (root / "report" / "figures.png").stat().st_size > 1000
    assert "eval-seeds" in (root / "report" / "summary.md").read_text()
    for step in STEPS:  # each step says what it ran
        assert steps[step]["commands"] and steps[step]["commands"][0][0] == "semples"
    checkpoints = {p: p.stat().st_mtime_ns for p in root.rglob("checkpoint.pt")}
    cams = {p: p.stat().st_mtime_ns for p in (root / "cams").rglob("*.npz")}
    assert len(checkpoints) == 5 and cams
    capsys.readouterr()
    assert main(args) == 0  # everything is there: nothing is recomputed
    assert {p: p.stat().st_mtime_ns for p in root.rglob("checkpoint.pt")} == checkpoints
    assert {p: p.stat().st_mtime_ns for p in (root / "cams").rglob("*.npz")} == cams
    assert "skipped" in capsys.readouterr().out


def test_until_and_from(tmp_path, capsys):
    base = ["run", "--config", "tiny", "--set", f"output_dir={tmp_path}"]
    assert main([*base, "--from", "cams"]) == 1  # nothing recorded yet
    assert "step train has no recorded output" in capsys.readouterr().err
    assert main([*base, "--until", "eval-seeds"]) == 0
    m = manifest(tmp_path / "tiny")
    assert set(m["steps"]) == {"train", "cams", "eval-seeds"}
    # seeds scored on data.eval_split (val) which the training split does not contain: its own CAM folder
    assert m["steps"]["cams"]["outputs"]["seeds"].endswith("cams/val")
    assert main([*base, "--from", "pseudo-masks", "--until", "eval-masks", "--set", "pseudo.method=threshold"]) == 0
    m = manifest(tmp_path / "tiny")
    assert m["steps"]["pseudo-masks"]["outputs"]["pseudo"].endswith("pseudo_masks/threshold/train")
    assert m["steps"]["eval-masks"]["status"] == "done" and "train-seg" not in m["steps"]
    with pytest.raises(SystemExit):  # argparse rejects unknown steps
        main([*base, "--until", "nope"])


@pytest.mark.parametrize("method", ["fma", "semples+fma"])
def test_fma_methods_write_their_seeds_where_the_shared_evaluation_reads_them(tmp_path, method):
    args = ["run", "--config", "tiny", "--method", method, "--set", f"output_dir={tmp_path}",
            "--set", "pipeline.seed_split=train", "--until", "eval-masks"]
    assert main(args) == 0
    out = tmp_path / "tiny" / method.replace("+", "_")
    m = manifest(out)
    assert m["method"] == method and [s for s in m["steps"]] == list(STEPS[:5])
    if method == "fma":  # FMA-WSSS trains its two prompt sets; its coarse seeds feed fma-segment
        assert m["steps"]["train"]["outputs"]["generator"].endswith("tiny/fma-segment")
        assert any((out / "seeds_coarse" / "train").glob("*.png"))
        cams_manifest = json.loads((out / "cams" / "train" / "manifest.json").read_text())
        assert cams_manifest["phase"] == "fine"
    else:  # SemPLeS training, its CAMs refined by CAA
        assert m["steps"]["train"]["outputs"]["generator"].endswith("tiny/refine")
        assert any((out / "cams_semples" / "train").glob("*.npz"))
    assert m["steps"]["pseudo-masks"]["outputs"]["pseudo"].endswith("pseudo_masks/sams_fine/train")
    assert 0.0 <= m["steps"]["eval-masks"]["outputs"]["miou"] <= 1.0


def test_a_step_error_reaches_the_user_with_its_own_message(tmp_path, capsys):
    args = ["run", "--config", "tiny", "--set", f"output_dir={tmp_path}", "--set", "data.dataset=voc",
            "--set", f"data.root={tmp_path / 'no_voc_here'}"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "semples run: error:" in err and "no_voc_here: VOC root folder does not exist" in err
    assert "failed (exit" not in err and "Traceback" not in err
    m = manifest(tmp_path / "tiny")
    assert m["steps"]["train"]["status"].startswith("failed: DataError")


@pytest.mark.parametrize("content", ["{\"steps\": {\"train\": ", "[1, 2]", "{\"steps\": 3}"],
                         ids=["cut", "list", "steps-not-a-mapping"])
def test_a_corrupt_run_manifest_is_one_line_naming_it(tmp_path, capsys, content):
    """Issue 12: a corrupt run.json was a JSONDecodeError traceback."""
    (tmp_path / "tiny").mkdir()
    path = tmp_path / "tiny" / "run.json"
    path.write_text(content)
    assert main(["run", "--config", "tiny", "--set", f"output_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"semples run: error: {path}: ")
    assert path.read_text() == content  # left as it was, for the user to look at


def test_two_runs_of_one_experiment_at_once_are_refused(tmp_path, capsys):
    import subprocess
    import sys
    import time

    folder, ready = tmp_path / "tiny", tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from semples.utils.locks import FolderLock; FolderLock(sys.argv[1]).acquire(); "
                               "Path(sys.argv[2]).touch(); time.sleep(300)", str(folder), str(ready)])
    try:
        while not ready.exists():
            assert holder.poll() is None
            time.sleep(0.05)
        assert main(["run", "--config", "tiny", "--set", f"output_dir={tmp_path}"]) == 1
        err = capsys.readouterr().err
        assert f"{folder}: process {holder.pid}" in err and "experiment folder" in err
        assert not (folder / "run.json").exists()
    finally:
        holder.kill()
        holder.wait()
