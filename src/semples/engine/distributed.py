"""Devices, precision and processes, through HF accelerate.

One process: ``semples train ...``. Several GPUs / nodes (DDP):
``accelerate launch --multi_gpu --num_processes N -m semples train ...`` or
``torchrun --nproc_per_node N -m semples train ...``. Several CPU processes (gloo) work through torchrun (or
``accelerate launch --multi_gpu``); note that ``accelerate launch --cpu --num_processes 2`` silently runs one.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 / AMX), where bf16 autocast pays off."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:
        return False


def resolve_precision(mixed_precision: str, device_type: str) -> str:
    """'auto' -> 'bf16' where the device computes bf16 natively, 'fp16' on older GPUs, else 'no'."""
    if mixed_precision != "auto":
        return mixed_precision
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device_type == "cpu":
        return "bf16" if cpu_supports_bf16() else "no"
    return "no"


def make_accelerator(device: str = "auto", mixed_precision: str = "auto", deterministic: bool = True):
    """An `accelerate.Accelerator` for the configured device and precision (one per process).

    Args:
        device: auto | cpu | cuda | cuda:N | mps.
        mixed_precision: auto | no | bf16 | fp16.
        deterministic: also make cuDNN deterministic (CPU runs are deterministic anyway).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available()
                              and not torch.backends.mps.is_available())
    if device.startswith("cuda:") and "LOCAL_RANK" not in os.environ:
        torch.cuda.set_device(int(device.split(":", 1)[1]))
    device_type = "cpu" if cpu else ("cuda" if torch.cuda.is_available() else "mps")
    precision = resolve_precision(mixed_precision, device_type)
    if deterministic and device_type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    kwargs = DistributedDataParallelKwargs(find_unused_parameters=False, broadcast_buffers=False)
    # accelerate keeps one process-wide state and refuses a second Accelerator with other settings; a process
    # that runs several experiments (tests, notebooks, the demo) needs a fresh one. The process group (in
    # PartialState) is kept.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(cpu=cpu, mixed_precision=precision, kwargs_handlers=[kwargs])
    log.info("device %s, %d process(es), mixed precision %s", acc.device, acc.num_processes, precision)
    return acc
