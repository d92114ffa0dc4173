"""A CAM file that is cut short, holds object arrays, or is not a CAM file is one line naming it, in every step
that reads it (issue 12); never a traceback, never unpickled."""

from __future__ import annotations

import io

import numpy as np
import pytest

from semples.cli import main
from semples.errors import DataError
from semples.infer.cam_io import load_cam, save_cam


def test_load_cam_problems_are_one_line_data_errors(tmp_path):
    good = tmp_path / "good.npz"
    save_cam(good, np.ones((2, 4, 4), np.float32), [0, 2])
    cases = {
        "cut.npz": good.read_bytes()[:-30],
        "objects.npz": None,
        "other.npz": None,
        "shapes.npz": None,
        "text.npz": b"hello",
    }
    buf = io.BytesIO()
    np.savez(buf, cams=np.array([{"a": 1}], dtype=object), classes=np.array([0]))
    cases["objects.npz"] = buf.getvalue()
    buf = io.BytesIO()
    np.savez(buf, weights=np.zeros(3))
    cases["other.npz"] = buf.getvalue()
    buf = io.BytesIO()
    np.savez(buf, cams=np.zeros((2, 4)), classes=np.array([0, 1]))
    cases["shapes.npz"] = buf.getvalue()
    expected = {"cut.npz": "truncated or corrupt CAM file", "objects.npz": "holds object arrays, which semples never",
                "other.npz": "not a CAM file (no cams or classes; holds weights)",
                "shapes.npz": "maps of shape (2, 4) for classes of shape (2,)",
                "text.npz": "not an .npz archive (semples never unpickles files)"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError) as info:
            load_cam(tmp_path / name)
        assert "\n" not in str(info.value) and str(info.value).startswith(f"{tmp_path / name}: ")
        assert expected[name] in str(info.value), str(info.value)
    with pytest.raises(DataError, match=r"class index 2, outside 0\.\.1"):
        load_cam(good, num_classes=2)
    with pytest.raises(DataError, match="CAM file is missing"):
        load_cam(tmp_path / "missing.npz")


@pytest.fixture
def cams(tmp_path):
    base = ["--config", "tiny", "--set", f"output_dir={tmp_path}", "--no-progress"]
    assert main(["cams", "--generator", "random", *base]) == 0
    return base, tmp_path / "tiny" / "cams" / "val"


@pytest.mark.parametrize("damage", ["truncated", "object-array"])
def test_eval_seeds_and_pseudo_masks_name_the_bad_cam_file(cams, capsys, damage):
    base, folder = cams
    path = sorted(folder.glob("*.npz"))[1]
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        buf = io.BytesIO()
        np.savez(buf, cams=np.array([None], dtype=object), classes=np.array([0]))
        path.write_bytes(buf.getvalue())
    capsys.readouterr()
    assert main(["eval-seeds", *base]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"semples eval-seeds: error: {path}: ")
    assert main(["pseudo-masks", "--cams", str(folder), "--method", "threshold", "--threshold", "0.3", *base]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"semples pseudo-masks: error: {path}: ")


def test_cams_limit_below_one_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["cams", "--generator", "random", "--config", "tiny", "--limit", "-3"])
    assert info.value.code == 2
    assert "semples cams: error: argument --limit: must be >= 1, got -3" in capsys.readouterr().err
    from semples import steps
    from semples.config import load_config
    from semples.errors import ConfigError

    with pytest.raises(ConfigError, match="limit must be a whole number >= 1"):
        steps.cams.run(load_config("tiny", [f"output_dir={tmp_path}"]), None, limit=0)
    assert not (tmp_path / "tiny").exists()
