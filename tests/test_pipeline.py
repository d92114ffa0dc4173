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
