"""Run folders (`semples.runs`): the layout, the one manifest schema, and what counts as a difference on reuse."""

from __future__ import annotations

import pytest

from semples.config import load_config
from semples.errors import ReuseError
from semples.runs import (
    FolderRecord,
    RunLayout,
    check_folder_reuse,
    describe_config_differences,
    final_generator_folder,
    folder_fingerprint,
    folder_record,
    input_differences,
    recorded_split,
    scheme_folders,
    write_folder_manifest,
)


def test_recorded_split_comes_from_the_folder_manifest(tmp_path):
    assert recorded_split(tmp_path) is None
    (tmp_path / "manifest.json").write_text('{"data": {"split": "val"}, "format": "semples-cams"}')
    assert recorded_split(tmp_path) == "val"
    (tmp_path / "manifest.json").write_text('{"split": "train_aug", "method": "crf"}')  # before manifest version 2
    assert recorded_split(tmp_path) == "train_aug"
    (tmp_path / "manifest.json").write_text("not json")
    assert recorded_split(tmp_path) is None


def test_layout_names_every_folder_once(tmp_path):
    cfg = load_config("tiny", [f"output_dir={tmp_path}", f"cams.out_dir={tmp_path / 'mine'}"])
    layout = RunLayout(cfg)
    assert layout.stage("refine_r2") == tmp_path / "tiny" / "refine_r2"
    assert layout.cams("val") == tmp_path / "mine"  # the verb honours cams.out_dir ...
    fma = RunLayout(cfg, "fma", overrides=False)  # ... `semples run` never does (it writes several splits)
    assert fma.cams("val") == tmp_path / "tiny" / "fma" / "cams" / "val"
    assert fma.pseudo_masks("sams_fine", "train") == tmp_path / "tiny" / "fma" / "pseudo_masks" / "sams_fine" / "train"
    assert fma.stage("fma-segment") == tmp_path / "tiny" / "fma-segment"  # training runs are shared
    assert RunLayout.segment_eval(fma.segment(), "val") == tmp_path / "tiny" / "fma" / "segment" / "eval" / "val"
    assert [f for _, f in scheme_folders("alternating", 2)] == ["match", "prompt_r1", "refine_r1", "prompt_r2",
                                                                "refine_r2"]
    assert final_generator_folder(cfg) == "refine"


def test_differences_name_keys_values_inputs_and_both_hashes():
    old = {"loss": {"lambda_bg": 1.0}, "scheme": {"refine_init": "initial"}}
    new = {"loss": {"lambda_bg": 0.5}, "scheme": {"refine_init": "match"}}
    assert describe_config_differences(old, new) == ["loss.lambda_bg: 1.0 -> 0.5",
                                                     "scheme.refine_init: initial -> match"]
    a = {"generator": {"path": "a/checkpoint.pt", "sha256": "1" * 64, "stage": "classify"}, "start_point": "x"}
    moved = {"generator": {"path": "b/checkpoint.pt", "sha256": "1" * 64, "stage": "classify"}, "start_point": "y"}
    assert input_differences(a, moved) == []  # same file elsewhere: no change (plain values are not inputs)
    other = {"generator": {"path": "b/checkpoint.pt", "sha256": "2" * 64}}
    assert input_differences(a, other) == [f"input generator: a/checkpoint.pt (sha256 {'1' * 12}) -> "
                                           f"b/checkpoint.pt (sha256 {'2' * 12})"]
    assert input_differences(a, {**a, "prompts": {"path": "p", "sha256": "3" * 64}})[0].startswith(
        "input prompts: none -> p")
    assert input_differences({}, {"prompts": {"path": "p", "sha256": "3"}}, only_recorded=True) == []


def test_folder_reuse_is_refused_with_every_difference(tmp_path):
    def record(t: float, cams_sha: str) -> FolderRecord:
        return FolderRecord(kind="pseudo-masks", producer="test", data={"dataset": "toy", "root": None,
                                                                         "split": "train", "name": "toy"},
                            classes=["a"], inputs={"cams": {"path": "c", "settings_sha256": cams_sha}},
                            settings={"threshold": t, "batch": 1}, uncompared=("batch",))
    first = write_folder_manifest(tmp_path, record(0.4, "x"), complete=True, counts={}, last_run={})
    check_folder_reuse(first, record(0.4, "x"), tmp_path)  # same inputs and settings: fine
    with pytest.raises(ReuseError) as e:
        check_folder_reuse(first, record(0.6, "y"), tmp_path)
    assert "threshold: 0.4 -> 0.6" in str(e.value) and "input cams: c (sha256 x) -> c (sha256 y)" in str(e.value)
    assert "--force" in str(e.value)
    with pytest.raises(ReuseError, match="version"):  # folders of an older manifest schema
        check_folder_reuse({"format": "semples-pseudo-masks", "parameters": {}}, record(0.4, "x"), tmp_path)
    fingerprint = folder_fingerprint(first)
    assert folder_record(tmp_path)["settings_sha256"] == fingerprint
    again = write_folder_manifest(tmp_path, record(0.4, "x"), complete=True, counts={"present": 3}, last_run={"s": 1})
    assert folder_fingerprint(again) == fingerprint  # counts and timings are not what made the files
    other_batch = record(0.4, "x")
    other_batch.settings["batch"] = 8  # an uncompared setting: the folder is reused, so its identity stays
    check_folder_reuse(first, other_batch, tmp_path)
    assert folder_fingerprint(other_batch.manifest()) == fingerprint
