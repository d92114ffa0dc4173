"""Step eval-masks: mIoU of a folder of label PNGs (pseudo masks, predictions) against the ground truth.

The split defaults to the one recorded in the folder's manifest (`semples.runs.recorded_split`), else
``data.train_split``; `semples.evaluate.masks` scores it; metrics.json and metrics.md go to the masks folder
(or `out`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from semples.config import Config
from semples.data import build_dataset
from semples.runs import read_folder_manifest, recorded_split
from semples.utils.checkpoint_io import atomic_write_json, atomic_write_text


@dataclass
class MasksResult:
    """Where the metrics went and the headline numbers (the rest is in ``metrics``)."""

    out_dir: Path
    split: str
    dataset: str
    num_images: int
    miou: float | None
    bg_false_positive_rate: float | None
    ignored_fraction: float
    metrics: dict


def run(cfg: Config, masks: str | Path, *, split: str | None = None, out: str | Path | None = None,
        skip_missing: bool = False, progress: bool = True) -> MasksResult:
    """Scores ``<masks>/<image id>.png`` against the split's ground-truth masks.

    Args:
        cfg: the experiment config (data).
        masks: the folder of label PNGs (0 background, 1..K classes, 255 = no label).
        split: the split (default: the folder's manifest, else ``data.train_split``).
        out: where metrics.json / metrics.md go (default: the masks folder).
        skip_missing: score the images that have a PNG (default: every image of the split must have one).
        progress: tqdm bar.

    Raises:
        MissingInputError: no such folder, or PNGs missing (unless `skip_missing`).
        DataError: the split has no masks, or a PNG does not fit its image.
    """
    from semples.evaluate.masks import evaluate_mask_folder

    masks_dir = Path(masks)
    manifest = read_folder_manifest(masks_dir) or {}
    split = split or recorded_split(masks_dir) or cfg.data.train_split
    dataset = build_dataset(cfg.data, split)
    ev = evaluate_mask_folder(dataset, masks_dir, skip_missing=skip_missing, progress=progress)
    out_dir = Path(out) if out is not None else masks_dir
    s = ev.scores
    parameters = manifest.get("parameters") or manifest.get("settings")
    metrics = {
        "format": "semples-mask-metrics", "version": 1,
        "what": "label PNGs vs ground truth; IoU over background + K classes, ground truth 255 ignored, "
                "predicted 255 counted as a miss (labelled_pixels_only: left out)",
        "dataset": dataset.name, "split": split, "masks_dir": str(masks_dir),
        "method": manifest.get("method"), "parameters": parameters,
        "miou": ev.to_dict()["all_pixels"]["miou"],
        **ev.to_dict(),
        "confusion_matrix": s.matrix.tolist(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    title = f"{dataset.name} {split}: {masks_dir}" + (f" ({manifest['method']})" if manifest.get("method") else "")
    atomic_write_text(out_dir / "metrics.md", ev.markdown(title))
    atomic_write_json(out_dir / "metrics.json", metrics)
    return MasksResult(out_dir, split, dataset.name, ev.num_images, s.miou, s.bg_false_positive_rate,
                       ev.ignored_fraction, metrics)


__all__ = ["MasksResult", "run"]
