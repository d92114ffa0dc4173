"""metrics.jsonl: one JSON object per line, appended; truncated back to a step when a run resumes. TensorBoard
event files beside it (`TensorBoardLog`, optional)."""

from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsLog:
    """Appends records to `<run_dir>/metrics.jsonl` (main process only)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def truncate_after(self, global_step: int) -> None:
        """Drops records written after `global_step` (they belong to the interrupted part of a run)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the interruption
            if rec.get("step", 0) <= global_step:
                kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept))

    def reset(self) -> None:
        if self.enabled and self.path.exists():
            self.path.unlink()

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")


def read_metrics(path: Path) -> list[dict]:
    """All records of a metrics.jsonl file."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


class TensorBoardLog:
    """TensorBoard event files beside metrics.jsonl (``log.tensorboard: true``; main process only).

    Every numeric value of every metrics.jsonl record becomes a scalar at its step (losses as ``loss/<name>``,
    epoch means as ``epoch/<name>``, then ``lr`` and ``images_per_s``); `images` adds a grid of sample pictures
    (images, CAMs, predictions) once per epoch. Needs the optional ``tensorboard`` package
    (pip install 'semples[tensorboard]'); checked when the log is opened, before any training.
    """

    def __init__(self, log_dir: Path, enabled: bool = True, purge_step: int | None = None) -> None:
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        from semples.utils.extras import require

        require(["tensorboard"], "log.tensorboard=true")
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run drops the events its interrupted part wrote after the checkpoint (as metrics.jsonl does)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step or None)

    @staticmethod
    def tag(key: str, record: dict) -> str:
        """The scalar's name: losses under loss/ (epoch means under epoch/), everything else as it is."""
        if record.get("type") == "epoch":
            return f"epoch/{key.removeprefix('epoch_')}"
        if key == "loss" or key.endswith("_loss"):
            return f"loss/{key}"
        return key

    def write(self, record: dict) -> None:
        if self.writer is None:
            return
        step = int(record.get("step", 0))
        for key, value in record.items():
            if key in ("step", "epoch", "type") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(self.tag(key, record), value, step)

    def images(self, pictures: dict, step: int) -> None:
        """One grid per picture kind (rows = images). pictures: name -> (N, 3, H, W) float in [0, 1]."""
        if self.writer is None:
            return
        import torch

        for name, grid in pictures.items():
            self.writer.add_images(f"samples/{name}", torch.as_tensor(grid).float().clamp(0, 1), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
