"""metrics.jsonl: one JSON object per line, appended; truncated back to a step when a run resumes."""

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
