"""`semples demo`, shrunk to seconds: the whole chain runs through the CLI and the report has every section."""

from __future__ import annotations

import json

from semples.cli import main


def test_reduced_demo_writes_a_complete_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--config", "synth_demo_tiny"]) == 0
    printed = capsys.readouterr().out
    assert "seeds after match" in printed and "report.html" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("seeds_after_match", "seeds_after_refine", "control_untrained_prompts", "pseudo_masks", "final"):
        m = metrics[key]
        assert 0.0 <= m["miou"] <= 1.0
        assert set(m["per_class_iou"]) == {"background", "boat", "plane", "cow", "train", "bird", "car"}
        assert set(m["leak"]["per_class"]) == {"boat", "plane", "cow", "train", "bird", "car"}
    assert metrics["final"]["split"] == "val" and metrics["seeds_after_refine"]["split"] == "train"
    # the control: refine from the same start with the untrained U[0,1) prompt vectors as u^b
    control = json.loads((out / "runs" / "synth_demo_tiny" / "refine_untrained" / "manifest.json").read_text())
    assert control["inputs"]["prompts"]["path"].endswith("prompt_untrained/checkpoint.pt")
    assert control["inputs"]["generator"]["path"].endswith("classify/checkpoint.pt")
    from semples.utils.checkpoint_io import read_checkpoint

    assert read_checkpoint(out / "runs" / "synth_demo_tiny" / "prompt_untrained")["progress"]["global_step"] == 0
    # the sentence says what refine did to the leak, and that this config has no multi-seed reference
    assert "stage refine" in metrics["verdict"] and "No multi-seed reference" in metrics["verdict"]
    assert metrics["reference"] is None and metrics["verdict"] in printed
    assert "means over the classes present in the ground truth or" in printed  # the one mIoU convention
    probe = metrics["prompts"]["per_class"]
    assert set(probe) == {"boat", "plane", "cow", "train", "bird", "car"}
    assert all(len(p["nearest_captions"]) == 3 for p in probe.values())
    assert 0.0 <= metrics["prompts"]["share_nearest_is_associated"] <= 1.0
    html = (out / "report.html").read_text()
    assert "means over the classes present in the ground truth or" in html
    for section in ("summary", "seeds", "per-class", "leak", "figures", "prompts", "curves", "details"):
        assert f'<section id="{section}">' in html
    for title in ("CAM after match", "Leak rate per class", "learned background prompt", "untrained prompts"):
        assert title in html or title.lower() in html.lower()
    assert html.count("data:image/png;base64,") == 4  # samples, threshold curves, prompt heat maps, loss curves
    assert "figure missing" not in html
    # re-running skips the finished work and rewrites the same report
    assert main(["demo", "--out", str(out), "--config", "synth_demo_tiny"]) == 0
    assert json.loads((out / "metrics.json").read_text())["seeds_after_refine"] == metrics["seeds_after_refine"]


def test_demo_checks_its_optional_dependencies_before_training(tmp_path, capsys, monkeypatch):
    import semples.utils.extras as extras

    real = extras._installed
    monkeypatch.setattr(extras, "_installed", lambda m: m != "matplotlib" and real(m))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--config", "synth_demo_tiny"]) == 1
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install 'semples[infer]'" in err and "Traceback" not in err
    assert not (out / "runs").exists()  # nothing was trained


def test_the_ablation_reference_is_matched_by_the_settings_that_shape_seeds(tmp_path, monkeypatch):
    """The demo states its run against the ablation's summary only when that summary was measured on its settings;
    a run-only setting (output folder, figures) or a setting the summary predates does not count, others do."""
    from semples import demo
    from semples.config import load_config

    cfg = load_config("synth_demo", ["output_dir=/elsewhere", "pipeline.figures=2"])
    settings = demo.seed_settings(load_config("synth_demo", ["seed=3"]))
    assert "seed" not in settings and "refine.epochs" in settings and "segment.epochs" not in settings
    ref = {"seeds": [0, 1], "settings": dict(settings), "refine_minus_match": {"leak": {"mean": -5.0, "ci": [-8, -2]}}}
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps(ref))
    monkeypatch.setattr(demo, "REFERENCE", path)
    assert demo.reference_differences(cfg, ref) == [] and demo.reference_for(cfg) == ref
    older = {**ref, "settings": {k: v for k, v in settings.items() if k != "refine.epochs"}}
    assert demo.reference_differences(cfg, older) == []  # a key added since: at its default
    other = load_config("synth_demo", ["loss.lambda_refine=0.2"])
    assert demo.reference_differences(other, ref) == ["loss.lambda_refine: 0.05 -> 0.2"]
    assert demo.reference_for(other) is None
    assert demo.reference_differences(cfg, {"seeds": [0]}) == ["(the reference records no settings)"]
