"""The one place that turns ``device`` and ``mixed_precision`` settings into torch devices, dtypes and processes,
for training (an `accelerate.Accelerator`) and for inference (a `ProcessState`: this process's device and its
share of the work).

One process: ``semples train ...``. Several GPUs / nodes (DDP): ``accelerate launch --multi_gpu --num_processes
N -m semples <verb> ...`` or ``torchrun --nproc_per_node N -m semples <verb> ...`` — training splits every batch,
inference verbs split the images. Several CPU processes (gloo) work through torchrun (or ``accelerate launch
--multi_gpu``); note that ``accelerate launch --cpu --num_processes 2`` silently runs one.

Settings:
    device           auto (cuda, else mps, else cpu) | cpu | cuda | cuda:N | mps
    mixed_precision  auto (bf16 where the device computes it natively: recent GPUs, AVX512-BF16 / AMX CPUs;
                     fp16 on older GPUs; else none) | no | bf16 | fp16
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable

import torch

from semples.engine.processes import ProcessState

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "no", "bf16", "fp16")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AVX512-BF16 / AMX), where bf16 autocast pays off."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:
        return False


DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str) -> None:
    """Raises `ConfigError` when the ``device`` setting names a device this machine does not have.

    Without it, ``device: cuda`` on a machine without CUDA would train on the CPU without a word (accelerate
    falls back), and a run meant for a GPU would silently take days.
    """
    from semples.errors import ConfigError

    if not isinstance(device, str) or not DEVICE_PATTERN.match(device):
        raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(f"device={device}: no CUDA device is available on this machine (torch "
                              f"{torch.__version__}, {built}); use device=cpu, or device=auto to take a GPU when "
                              "there is one")
        if ":" in device and int(device.split(":", 1)[1]) >= torch.cuda.device_count():
            raise ConfigError(f"device={device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps: MPS (Apple GPU) is not available on this machine; use device=cpu or auto")


def _wants_cpu(device: str) -> bool:
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available()
                               and not torch.backends.mps.is_available())


def device_kind(device: str) -> str:
    """"cpu", "cuda" or "mps": the kind of device a ``device`` setting resolves to."""
    if _wants_cpu(device):
        return "cpu"
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "mps" if device in ("auto", "mps") else torch.device(device).type


def resolve_device(device: str) -> torch.device:
    """A ``device`` setting as a torch device for one process: "auto" = cuda, else mps, else cpu.

    Processes launched by accelerate/torchrun get their own GPU through `ProcessState` instead.

    Raises:
        ConfigError: the device does not exist here (`check_device`).
    """
    check_device(device)
    if device == "auto":
        return torch.device(device_kind(device))
    return torch.device(device)


def resolve_precision(mixed_precision: str, device_type: str) -> str:
    """'auto' -> 'bf16' where the device computes bf16 natively, 'fp16' on older GPUs, else 'no'.

    Args:
        mixed_precision: auto | no | bf16 | fp16.
        device_type: "cpu", "cuda" or "mps" (a `torch.device.type`).
    """
    if mixed_precision not in PRECISIONS:
        from semples.errors import ConfigError

        raise ConfigError(f"mixed precision must be one of {', '.join(PRECISIONS)}, got {mixed_precision!r}")
    if mixed_precision != "auto":
        return mixed_precision
    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device_type == "cpu":
        return "bf16" if cpu_supports_bf16() else "no"
    return "no"


def autocast_dtype(mixed_precision: str, device_type: str) -> torch.dtype | None:
    """The autocast dtype of a ``mixed_precision`` setting on a device kind (None: full precision)."""
    precision = resolve_precision(mixed_precision, device_type)
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast_factory(mixed_precision: str, device: torch.device
                     ) -> Callable[[], contextlib.AbstractContextManager] | None:
    """A zero-argument factory of autocast contexts for `device` (None when full precision)."""
    dtype = autocast_dtype(mixed_precision, device.type)
    if dtype is None:
        return None
    return lambda: torch.autocast(device.type, dtype=dtype)


def process_state(device: str = "auto") -> ProcessState:
    """The `ProcessState` of an inference run (accelerate's PartialState: one GPU per launched process).

    Args:
        device: a ``device`` setting; "cuda:N" picks that GPU when the run has a single process.
    """
    from accelerate import PartialState

    check_device(device)
    state = PartialState(cpu=_wants_cpu(device))
    dev = state.device
    if device.startswith("cuda:") and state.num_processes == 1:
        dev = torch.device(device)
    return ProcessState(dev, state.process_index, state.num_processes, state)


def make_accelerator(device: str = "auto", mixed_precision: str = "auto", deterministic: bool = True):
    """An `accelerate.Accelerator` for the configured device and precision (one per process), for training.

    Args:
        device: auto | cpu | cuda | cuda:N | mps.
        mixed_precision: auto | no | bf16 | fp16.
        deterministic: also make cuDNN deterministic (CPU runs are deterministic anyway).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    check_device(device)
    cpu = _wants_cpu(device)
    if device.startswith("cuda:") and "LOCAL_RANK" not in os.environ:
        torch.cuda.set_device(int(device.split(":", 1)[1]))
    kind = "cpu" if cpu else ("cuda" if torch.cuda.is_available() else "mps")
    precision = resolve_precision(mixed_precision, kind)
    if deterministic and kind == "cuda":
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


__all__ = ["PRECISIONS", "ProcessState", "autocast_dtype", "autocast_factory", "check_device", "cpu_supports_bf16",
           "device_kind", "make_accelerator", "process_state", "resolve_device", "resolve_precision"]
