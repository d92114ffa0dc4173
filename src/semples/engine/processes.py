"""Which process of an inference run this is, without torch: `ProcessState` and the lone-CPU-process case.

`semples.engine.device.process_state` builds the state of a run through accelerate (one GPU per launched process).
Work that computes nothing on a device (the dense CRF and superpixels of `semples pseudo-masks`) takes
`cpu_process_state` when it was not launched as one of several processes, and so starts without importing torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class ProcessState:
    """This process of an inference run: its device and its share of the work (rank of world).

    Attributes:
        device: where this process computes ("cpu" as a string in `cpu_process_state`).
        index: this process's rank (0 when alone).
        count: the number of processes.
    """

    device: torch.device | str
    index: int = 0
    count: int = 1
    _state: object = None

    @property
    def is_main_process(self) -> bool:
        return self.index == 0

    def wait_for_everyone(self) -> None:
        """A barrier across processes (a no-op when alone)."""
        if self._state is not None and self.count > 1:
            self._state.wait_for_everyone()


def launched_processes() -> int:
    """How many processes torchrun / accelerate launch started for this run (1 when started alone)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def cpu_process_state() -> ProcessState | None:
    """The state of a process that runs alone and computes on the CPU only; None when it is one of several launched
    processes (then `semples.engine.device.process_state` shares the work out)."""
    return ProcessState("cpu") if launched_processes() == 1 else None


__all__ = ["ProcessState", "cpu_process_state", "launched_processes"]
