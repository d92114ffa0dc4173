"""Step figures: a sample grid (image | ground truth | seed heat maps | seed mask | pseudo mask | prediction)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from semples.config import Config
from semples.data import build_dataset
from semples.errors import MissingInputError, UsageError
from semples.runs import RunLayout
from semples.steps.cams import default_split


@dataclass
class FiguresResult:
    """The figure written and the images it shows."""

    path: Path
    indices: list[int]


def run(cfg: Config, *, split: str | None = None, cams: str | Path | None = None, eval_dir: str | Path | None = None,
        threshold: float | None = None, pseudo_masks: str | Path | None = None,
        predictions: str | Path | None = None, heatmaps: str = "max", num: int = 8, ids: Sequence[str] | None = None,
        seed: int = 0, max_side: int = 256, out: str | Path | None = None) -> FiguresResult:
    """Draws a PNG grid, one row per image; every column after the image is optional (give the folders you have).

    Args:
        cfg: the experiment config (data).
        split: the split (default ``cams.split``, else ``data.eval_split``).
        cams: CAM folder (seed heat map column).
        eval_dir: an eval-seeds folder whose threshold draws the seed-mask column (unless `threshold`).
        threshold: background threshold of the seed-mask column.
        pseudo_masks / predictions: folders of label PNGs.
        heatmaps: "max" (one heat map) or "per-class".
        num: images of a random sample (reproducible with `seed`), unless `ids`.
        ids: these images instead of a sample.
        max_side: panel size.
        out: the PNG (default ``<output_dir>/<experiment>/figures/samples_<split>.png``).

    Raises:
        MissingInputError: `eval_dir` holds no metrics.json.
        UsageError: an id is not in the split.
    """
    from semples.report.figures import pick_samples, write_sample_grid

    split = split or default_split(cfg)
    dataset = build_dataset(cfg.data, split)
    if threshold is None and eval_dir:
        metrics_file = Path(eval_dir) / "metrics.json"
        if not metrics_file.is_file():
            raise MissingInputError(f"{metrics_file}: not an eval-seeds folder")
        threshold = float(json.loads(metrics_file.read_text())["threshold"])
    if ids:
        where = {i: n for n, i in enumerate(dataset.ids)}
        unknown = [i for i in ids if i not in where]
        if unknown:
            raise UsageError(f"not in {dataset.name} {split}: {', '.join(unknown[:5])}")
        indices = [where[i] for i in ids]
    else:
        indices = pick_samples(len(dataset), num, seed)
    path = Path(out) if out is not None else RunLayout(cfg).figures(split)
    write_sample_grid(path, dataset, indices, cams_dir=cams, threshold=threshold if cams else None,
                      pseudo_dir=pseudo_masks, pred_dir=predictions, heatmaps=heatmaps, max_side=max_side,
                      title=f"{dataset.name} {split}")
    return FiguresResult(path, indices)


__all__ = ["FiguresResult", "run"]
