"""A device that is not there is an error, never a quiet fallback to the CPU (issue 12, item 6)."""

from __future__ import annotations

import pytest
import torch

from semples.cli import main
from semples.engine.device import check_device
from semples.errors import ConfigError


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_cuda_without_cuda_is_an_error(no_cuda):
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"device={device}: no CUDA device is available on this machine"):
            check_device(device)
    check_device("cpu")
    check_device("auto")  # auto takes what there is


def test_a_gpu_index_beyond_the_machine_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(ConfigError, match=r"device=cuda:2: this machine has 2 CUDA device\(s\) \(cuda:0 \.\. cuda:1\)"):
        check_device("cuda:2")


@pytest.mark.parametrize("verb", [["train", "--stage", "classify"], ["cams", "--generator", "random"]])
def test_train_and_cams_on_a_missing_gpu_stop_with_one_line(no_cuda, verb, tmp_path, capsys):
    assert main([*verb, "--config", "tiny", "--set", f"output_dir={tmp_path}", "--set", "device=cuda"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "device=cuda: no CUDA device is available" in err
    assert not (tmp_path / "tiny" / "classify" / "checkpoint.pt").exists()
