"""What the synthetic-world benchmarks share: training runs of one seed of the committed preset through the library's
steps (`semples.steps.train`, `.cams`, `.seeds`), cached evaluations, and tables of paired differences.

Run folders: ``<out>/seed<S>/<run>``; evaluations ``<out>/seed<S>/eval/<run>/metrics.json`` (eval-seeds' own
report, leak rate included); CAM folders are deleted after their evaluation unless ``keep_cams``. A finished run or
evaluation is reused (the library's input-checked reuse), so an interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from _common import Timings, paired, read_json  # benchmarks/ is on sys.path

from semples.config import Config, load_config

log = logging.getLogger("benchmarks.synthetic")

PRESET = "synth_demo"


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Runs the block with `n` intra-op threads (None: leave as is)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SeedRuns:
    """The runs of one training seed of a preset, each trained and evaluated once.

    Args:
        out: the benchmark's folder (this seed's runs go to ``out/seed<seed>``).
        seed: the training seed (``seed`` of the config: initialisation, data order, augmentation).
        preset: the committed preset.
        overrides: ``--set`` values for every run of this seed (e.g. a world's co-occurrence).
        threads: torch threads of the runs (the thread count changes float summation order only).
        keep_cams: keep CAM folders after their evaluation.
        timings: wall-time bookkeeping shared by the benchmark.
    """

    def __init__(self, out: Path, seed: int, *, preset: str = PRESET, overrides: tuple[str, ...] = (),
                 threads: int = 1, keep_cams: bool = False, timings: Timings | None = None) -> None:
        self.dir = Path(out) / f"seed{seed}"
        self.seed = seed
        self.preset = preset
        self.overrides = tuple(overrides)
        self.threads = threads
        self.keep_cams = keep_cams
        self.timings = timings

    def cfg(self, sets: tuple[str, ...] = ()) -> Config:
        return load_config(self.preset, [*self.overrides, f"seed={self.seed}", f"output_dir={self.dir}",
                                         "experiment=runs", *sets])

    def run_dir(self, name: str) -> Path:
        return self.dir / name

    def _timed(self, key: str, fn):
        start = time.perf_counter()
        out = fn()
        if self.timings is not None:
            self.timings.add(f"seed{self.seed}/{key}", time.perf_counter() - start)
        return out

    def train(self, name: str, stage: str, *, sets: tuple[str, ...] = (), generator: str | None = None,
              prompts: str | None = None, threads: int | None = None) -> Path:
        """Trains `stage` into ``<seed dir>/<name>`` (skipped when finished there); returns the run folder.

        `generator` / `prompts` name earlier runs of this seed.
        """
        from semples.steps import train

        run_dir = self.run_dir(name)
        cfg = self.cfg(sets)
        with torch_threads(threads or self.threads):
            self._timed(f"train/{name}", lambda: train.run(
                cfg, stage=stage, run_dir=run_dir, resume=True,
                generator=str(self.run_dir(generator)) if generator else None,
                prompts=str(self.run_dir(prompts)) if prompts else None))
        return run_dir

    def split(self, cfg: Config) -> str:
        """The split seeds are scored on: ``pipeline.seed_split``, else ``data.eval_split``."""
        return cfg.pipeline.seed_split or cfg.data.eval_split

    def cams(self, name: str, *, sets: tuple[str, ...] = (), generator: str | Path | None = None) -> Path:
        """Seeds of run `name` (or of the run folder `generator`, e.g. another benchmark's) on the seed split into
        ``<seed dir>/cams/<name>`` (`semples cams`; files already there are reused); returns the CAM folder."""
        from semples.steps import cams as cams_step

        cfg = self.cfg(sets)
        cam_dir = self.dir / "cams" / name
        source = Path(generator) if generator is not None else self.run_dir(name)
        with torch_threads(self.threads):
            self._timed(f"cams/{name}", lambda: cams_step.run(cfg, source, split=self.split(cfg), out=cam_dir,
                                                              progress=False))
        return cam_dir

    def evaluate_cams(self, name: str, cam_dir: Path, *, sets: tuple[str, ...] = ()) -> dict:
        """`semples eval-seeds` of any CAM folder into ``<seed dir>/eval/<name>`` (its metrics.json, reused when
        there); returns the metrics."""
        from semples.steps import seeds

        out = self.dir / "eval" / name
        if (out / "metrics.json").is_file():
            return read_json(out / "metrics.json")
        cfg = self.cfg(sets)
        with torch_threads(self.threads):
            result = self._timed(f"eval/{name}", lambda: seeds.run(cfg, cam_dir, split=self.split(cfg), out=out,
                                                                   samples=0, progress=False))
        return result.metrics

    def evaluate(self, name: str, *, sets: tuple[str, ...] = ()) -> dict:
        """Seeds of run `name` on the training split: `semples cams` + `semples eval-seeds` (metrics.json)."""
        out = self.dir / "eval" / name
        if (out / "metrics.json").is_file():
            return read_json(out / "metrics.json")
        cam_dir = self.cams(name, sets=sets)
        metrics = self.evaluate_cams(name, cam_dir, sets=sets)
        if not self.keep_cams:
            shutil.rmtree(cam_dir, ignore_errors=True)
        return metrics


# ------------------------------------------------------------------------------------------------ reading
def headline(metrics: dict) -> dict:
    """Seed mIoU, leak rate (at the reported threshold), the threshold and the threshold-free mean CAM on the
    associated backgrounds — in %, from an eval-seeds metrics.json."""
    leak = metrics.get("leak") or {}
    return {"miou": 100 * metrics["miou"], "leak": 100 * leak["mean"] if leak.get("mean") is not None else None,
            "threshold": metrics["threshold"],
            "cam_on_bg": leak.get("mean_cam_mean"),
            "iou": {k: 100 * v["iou"] if isinstance(v, dict) and v.get("iou") is not None else None
                    for k, v in metrics.get("per_class", {}).items()},
            "leak_per_class": {k: 100 * v if v is not None else None for k, v in leak.get("per_class", {}).items()}}


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not v.size:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def fmt(mean: float | None, std: float | None = None, digits: int = 1) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def fmt_ci(p: dict, digits: int = 1) -> str:
    """"+2.3 [+0.8, +3.9]" from a `paired` result."""
    if p.get("mean") is None:
        return "—"
    if p.get("ci") is None:
        return f"{p['mean']:+.{digits}f}"
    lo, hi = p["ci"]
    return f"{p['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def compare(rows: dict[str, dict[int, dict]], a: str, b: str, key: str) -> dict:
    """Paired differences a − b of `key` over the seeds both rows have (`paired`: mean, std, 95% CI)."""
    seeds = sorted(set(rows.get(a, {})) & set(rows.get(b, {})))
    diffs = [rows[a][s][key] - rows[b][s][key] for s in seeds
             if rows[a][s].get(key) is not None and rows[b][s].get(key) is not None]
    out = paired(diffs)
    out["seeds"] = seeds
    return out


def beyond(p: dict, better: str) -> str:
    """Whether a paired difference (first − second) is beyond its 95% interval in the `better` direction
    ("higher" for mIoU, "lower" for leak): "yes", "no (reverse)" or "no (within)"."""
    if p.get("ci") is None:
        return "—"
    lo, hi = p["ci"]
    if (better == "higher" and lo > 0) or (better == "lower" and hi < 0):
        return "yes"
    if (better == "higher" and hi < 0) or (better == "lower" and lo > 0):
        return "no (reverse)"
    return "no (within)"
