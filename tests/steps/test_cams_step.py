"""Step cams: the folder's manifest, and a folder of other settings refused until --force."""

from __future__ import annotations

import json

import pytest

from semples import steps
from semples.config import config_from_dict, config_to_dict
from semples.errors import ReuseError


def test_cams_step_refuses_to_mix_settings_and_force_overwrites(tmp_path, tiny_cfg):
    d = config_to_dict(tiny_cfg)
    d["output_dir"] = str(tmp_path)
    cfg = config_from_dict(d, ["data.synthetic.splits={train: 2, val: 2}"])
    result = steps.cams.run(cfg, None, progress=False)
    folder = tmp_path / "tiny" / "cams" / "val"
    manifest = result.manifest
    assert result.out_dir == folder and manifest["complete"] and manifest["counts"]["present"] == 2
    saved = json.loads((folder / "manifest.json").read_text())
    assert saved["settings"]["scales"] == [1.0, 1.2] and saved["data"]["split"] == "val"
    assert saved["format"] == "semples-cams" and saved["version"] == 2 and "fresh" in saved["inputs"]["generator"]
    other = config_from_dict(d, ["data.synthetic.splits={train: 2, val: 2}", "cams.scales=[1.0]"])
    with pytest.raises(ReuseError, match=r"scales: \[1\.0, 1\.2\] -> \[1\.0\].*--force"):
        steps.cams.run(other, None, progress=False)
    result = steps.cams.run(other, None, force=True, progress=False)
    assert result.written == 2 and result.manifest["settings"]["scales"] == [1.0]
    # batch sizes change only the last bits: recorded, not compared
    bigger = config_from_dict(d, ["data.synthetic.splits={train: 2, val: 2}", "cams.scales=[1.0]",
                                  "cams.batch_size=1"])
    again = steps.cams.run(bigger, None, progress=False)
    assert again.written == 0 and again.skipped == 2
