"""Two CPU processes (gloo, launched by torchrun) train like one process with the same global batch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from semples.cli import main
from semples.utils.checkpoint_io import read_checkpoint

pytestmark = pytest.mark.distributed

ARGS = ["train", "--stage", "classify", "--config", "tiny", "--set", "classify.epochs=2"]


def test_two_process_gloo_run_matches_single_process(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = subprocess.run([*torchrun, "-m", "semples", *ARGS, "--set", f"output_dir={tmp_path / 'ddp'}"],
                         capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert main([*ARGS, "--set", f"output_dir={tmp_path / 'single'}"]) == 0

    manifest = json.loads((tmp_path / "ddp" / "tiny" / "classify" / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["micro_batch"] == 2 and manifest["global_batch"] == 4
    a = read_checkpoint(tmp_path / "ddp" / "tiny" / "classify")
    b = read_checkpoint(tmp_path / "single" / "tiny" / "classify")
    assert a["finished"] and a["progress"]["global_step"] == b["progress"]["global_step"] == 4
    # the classification loss is a mean over images, so averaging the two processes' gradients gives the
    # single-process gradient: the weights agree up to float rounding
    for key, value in b["modules"]["mask_generator"].items():
        torch.testing.assert_close(a["modules"]["mask_generator"][key], value, rtol=1e-4, atol=1e-5, msg=key)
