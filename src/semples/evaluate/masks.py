"""Scores a folder of label PNGs (pseudo masks or segmentation predictions) against a dataset's masks (step
eval-masks, `semples.steps.masks`).

``<masks_dir>/<image id>.png`` holds 0 = background, 1..K = classes, 255 = ignore (no prediction). Scoring uses
the one `ConfusionMatrix` of the package (ground-truth 255 is skipped). Two views:

- ``all pixels``: a predicted 255 counts as a miss of the ground-truth class (it lowers recall and IoU);
- ``labelled pixels only``: pixels predicted 255 are left out (how clean the labels that *are* given are:
  what an ignore band buys).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semples.data.base import DataError, SegmentationDataset
from semples.data.io import read_mask
from semples.errors import MissingInputError
from semples.metrics import IGNORE_INDEX, ConfusionMatrix, SegmentationScores

log = logging.getLogger(__name__)


@dataclass
class MaskEvaluation:
    """Scores of a mask folder.

    Attributes:
        scores: all pixels (predicted 255 = miss).
        labelled_scores: only pixels with a prediction other than 255.
        num_images: images scored.
        missing: ids without a PNG (left out).
        ignored_fraction: share of scored ground-truth pixels predicted 255.
    """

    scores: SegmentationScores
    labelled_scores: SegmentationScores
    num_images: int
    missing: list[str] = field(default_factory=list)
    ignored_fraction: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"num_images": self.num_images, "num_missing": len(self.missing), "missing": self.missing[:100],
                "ignored_prediction_fraction": self.ignored_fraction,
                "all_pixels": self.scores.to_dict(), "labelled_pixels_only": self.labelled_scores.to_dict()}

    def markdown(self, title: str = "mask evaluation") -> str:
        lab = self.labelled_scores
        lines = [self.scores.markdown(title),
                 f"{self.num_images} images; {100 * self.ignored_fraction:.1f}% of the ground-truth pixels predicted "
                 f"255 (ignore), counted as misses above.",
                 "",
                 f"Labelled pixels only (predicted 255 left out): mIoU {_pct(lab.miou)}, pixel accuracy "
                 f"{_pct(lab.pixel_accuracy)}%, background false-positive rate {_pct(lab.bg_false_positive_rate)}%."]
        if self.missing:
            lines += ["", f"{len(self.missing)} images without a mask file were left out (first: "
                          f"{', '.join(self.missing[:5])})."]
        return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def evaluate_mask_folder(dataset: SegmentationDataset, masks_dir: str | os.PathLike, *, skip_missing: bool = False,
                         progress: bool = True) -> MaskEvaluation:
    """Scores ``<masks_dir>/<id>.png`` against ``dataset.load_mask(i)`` for every item of `dataset`.

    Args:
        dataset: a split with ground-truth masks.
        masks_dir: folder of label PNGs (same size as the images).
        skip_missing: leave out images without a PNG (listed) instead of raising.
        progress: show a progress bar.

    Raises:
        DataError: the split has no masks, a PNG has another size or labels outside 0..K / 255.
        MissingInputError: missing PNGs (unless `skip_missing`), or none at all.
    """
    from tqdm.auto import tqdm

    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise MissingInputError(f"{masks_dir}: mask folder does not exist")
    if not getattr(dataset, "has_masks", True):
        raise DataError(f"{getattr(dataset, 'name', 'dataset')}: this split has no ground-truth masks to score "
                        f"against")
    k = dataset.num_classes
    missing = [i for i in dataset.ids if not (masks_dir / f"{i}.png").is_file()]
    if missing and (not skip_missing or len(missing) == len(dataset)):
        raise MissingInputError(f"{masks_dir}: no mask PNG for {len(missing)} of {len(dataset)} images (first: "
                                f"{', '.join(missing[:3])})"
                                + ("" if len(missing) == len(dataset) else "; pass --skip-missing to score the rest"))
    missing_set = set(missing)
    cm_all, cm_labelled = ConfusionMatrix(k + 1), ConfusionMatrix(k + 1)
    ignored = counted = scored = 0
    for index, image_id in enumerate(tqdm(dataset.ids, desc="eval-masks", unit="img", disable=not progress,
                                          dynamic_ncols=True)):
        if image_id in missing_set:
            continue
        gt = dataset.load_mask(index)
        if gt is None:
            raise DataError(f"{image_id}: no ground-truth mask")
        path = masks_dir / f"{image_id}.png"
        pred = read_mask(path, k)
        if pred.shape != gt.shape:
            raise DataError(f"{path}: mask is {pred.shape[1]}x{pred.shape[0]} but the image is "
                            f"{gt.shape[1]}x{gt.shape[0]}")
        cm_all.update(pred, gt)
        valid_gt = gt != IGNORE_INDEX
        pred_ignored = pred == IGNORE_INDEX
        cm_labelled.update(pred, np.where(pred_ignored, IGNORE_INDEX, gt))
        ignored += int((pred_ignored & valid_gt).sum())
        counted += int(valid_gt.sum())
        scored += 1
    names = ["background", *dataset.classes.names]
    return MaskEvaluation(scores=cm_all.scores(names), labelled_scores=cm_labelled.scores(names), num_images=scored,
                          missing=missing, ignored_fraction=ignored / counted if counted else 0.0)


__all__ = ["MaskEvaluation", "evaluate_mask_folder"]
