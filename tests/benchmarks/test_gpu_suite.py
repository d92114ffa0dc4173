"""The GPU suite (benchmarks/gpu_suite.py) runs end to end at toy sizes on the CPU, so it is ready (and has not
rotted) when a GPU comes; its peak table and MFU arithmetic are checked here too."""

from __future__ import annotations

import json

import pytest
import torch

from tests.benchmarks.modules import benchmark_module


@pytest.fixture(scope="module")
def suite():
    with benchmark_module("gpu_suite") as module:
        yield module


def test_tiny_run_writes_every_figure(suite, tmp_path):
    out = tmp_path / "suite.json"
    result = suite.main(["--tiny", "--out", str(out), "--peak-tflops", "1.0"])
    saved = json.loads(out.read_text())
    assert saved["meta"]["tiny"] and saved["meta"]["peak_bf16_tflops"] == 1.0
    assert set(suite.SECTIONS) <= set(saved)
    for stage in ("match", "prompt", "refine"):
        r = saved[stage]
        assert r["s_per_step"] > 0 and r["images_per_s"] > 0 and r["flops"] > 0
        assert r["mfu"] == pytest.approx(r["flops"] / r["s_per_step"] / 1e12, rel=0.02, abs=1e-4)
        assert r["clip_pass"]["flops"] > 0 and r["clip_pass"]["seconds"] > 0
        assert "peak_gpu_gib" in r
    # match and refine run the CLIP image tower on 2P images; prompt the text tower
    assert "image" in saved["match"]["clip_pass"]["what"] and "text" in saved["prompt"]["clip_pass"]["what"]
    for variant in ("default", "materialised"):
        assert saved["cams"][variant]["images"] == 2 and saved["cams"][variant]["images_per_s"] > 0
    assert saved["sam"]["s_per_image"] > 0 and saved["sam"]["masks"] >= 1
    for variant in ("contiguous", "channels_last"):
        assert saved["train_seg"][variant]["flops"] > 0
    assert result["meta"]["total_seconds"] == saved["meta"]["total_seconds"]


def test_peak_table(suite):
    assert suite.peak_tflops(torch.device("cpu"), 123.0) == (123.0, "--peak-tflops")
    peak, source = suite.peak_tflops(torch.device("cpu"), None)
    assert peak is None and "--peak-tflops" in source
    names = [k for k, _ in suite.PEAK_BF16_TFLOPS]
    # more specific names first: "H100 NVL" before "H100", "L40S" before "L4"
    assert names.index("H100 NVL") < names.index("H100") and names.index("L40S") < names.index("L4")


def test_cpu_flash_attention_is_counted(suite):
    from torch.utils.flop_counter import FlopCounterMode

    suite._register_cpu_attention_flops()
    suite._register_cpu_attention_flops()  # idempotent
    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().backward()
    assert counter.get_total_flops() > 4 * 2 * 16 * 16 * 8
