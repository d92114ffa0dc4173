"""Confusion matrix, mIoU and friends for semantic segmentation (bincount; ignore 255; mergeable).

Classes are label values 0..C-1 (0 = background for WSSS datasets). Pixels whose ground truth is the ignore
index are not counted; predictions outside 0..C-1 count as wrong (a column that belongs to no class).

One convention for every mean (`MEAN_CONVENTION`, printed with every table): mIoU, mean precision and mean recall
are means over the same classes — those present in the ground truth or in the prediction; a class absent from
both is left out. Inside that set a ratio with nothing to divide by counts as a full error (0), as its IoU does:
precision of a class that is never predicted, recall of a class predicted but absent from the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255
MEAN_CONVENTION = ("mIoU, mean precision and mean recall: means over the classes present in the ground truth or "
                   "the prediction (a class absent from both is left out; precision of a class never predicted and "
                   "recall of a class predicted but absent from the ground truth count as 0)")


class ConfusionMatrix:
    """Accumulates a (C, C) matrix: rows = ground truth, columns = prediction.

    Args:
        num_classes: C, including background.
        ignore_index: ground-truth value to skip.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        # ground-truth pixels predicted as no valid label at all (count as misses of their class)
        self.invalid_predictions = np.zeros(num_classes, dtype=np.int64)

    def update(self, pred, gt) -> ConfusionMatrix:
        """Adds one prediction/ground-truth pair (arrays or tensors of the same shape, integer labels)."""
        pred = np.asarray(pred.cpu() if hasattr(pred, "cpu") else pred).astype(np.int64).ravel()
        gt = np.asarray(gt.cpu() if hasattr(gt, "cpu") else gt).astype(np.int64).ravel()
        if pred.shape != gt.shape:
            raise ValueError(f"prediction has {pred.size} pixels, ground truth {gt.size}")
        keep = (gt != self.ignore_index) & (gt >= 0) & (gt < self.num_classes)
        gt, pred = gt[keep], pred[keep]
        valid = (pred >= 0) & (pred < self.num_classes)
        c = self.num_classes
        self.matrix += np.bincount(gt[valid] * c + pred[valid], minlength=c * c).reshape(c, c)
        self.invalid_predictions += np.bincount(gt[~valid], minlength=c)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Adds another matrix (from another process or shard)."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different sizes")
        self.matrix += other.matrix
        self.invalid_predictions += other.invalid_predictions
        return self

    def reduce_across_processes(self) -> ConfusionMatrix:
        """Sums the matrix over all torch.distributed processes (no-op when not distributed)."""
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            t = torch.from_numpy(np.concatenate([self.matrix.ravel(), self.invalid_predictions]))
            if dist.get_backend() == "nccl":  # NCCL reduces GPU tensors only
                t = t.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(t)
            t = t.cpu()
            c = self.num_classes
            self.matrix = t[: c * c].numpy().reshape(c, c)
            self.invalid_predictions = t[c * c:].numpy()
        return self

    def scores(self, class_names: list[str] | None = None) -> SegmentationScores:
        return SegmentationScores.from_matrix(self.matrix, class_names, self.invalid_predictions)


@dataclass
class SegmentationScores:
    """Per-class IoU / precision / recall, their means over classes present in ground truth or prediction
    (`MEAN_CONVENTION`).

    Attributes:
        iou, precision, recall: (C,) with NaN for classes absent from both ground truth and prediction (and 0 for a
            precision or recall with nothing to divide by among the others).
        miou: mean IoU over classes that are not NaN; `mean_precision` / `mean_recall` over the same classes.
        pixel_accuracy: correctly labelled pixels / counted pixels.
        bg_false_positive_rate: share of background pixels labelled as some class (WSSS leakage), if C > 1.
        class_names: names for tables.
        matrix: the confusion matrix.
    """

    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    miou: float
    pixel_accuracy: float
    bg_false_positive_rate: float
    class_names: list[str]
    matrix: np.ndarray

    @classmethod
    def from_matrix(cls, m: np.ndarray, class_names: list[str] | None = None,
                    extra_fn: np.ndarray | None = None) -> SegmentationScores:
        m = m.astype(np.float64)
        tp = np.diag(m)
        gt = m.sum(1) + (extra_fn if extra_fn is not None else 0)
        pred = m.sum(0)
        union = gt + pred - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            counted = union > 0  # present in the ground truth or the prediction
            iou = np.where(counted, tp / union, np.nan)
            precision = np.where(pred > 0, tp / pred, np.where(counted, 0.0, np.nan))
            recall = np.where(gt > 0, tp / gt, np.where(counted, 0.0, np.nan))
        total = gt.sum()
        names = class_names or [str(i) for i in range(len(m))]
        bg_fp = float((m[0].sum() - m[0, 0]) / m[0].sum()) if m[0].sum() > 0 else float("nan")
        return cls(iou=iou, precision=precision, recall=recall,
                   miou=float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
                   pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
                   bg_false_positive_rate=bg_fp, class_names=list(names), matrix=m.astype(np.int64))

    @property
    def mean_precision(self) -> float:
        """Mean precision over the classes of the mIoU (`MEAN_CONVENTION`)."""
        return float(np.nanmean(self.precision)) if np.isfinite(self.precision).any() else float("nan")

    @property
    def mean_recall(self) -> float:
        """Mean recall over the classes of the mIoU (`MEAN_CONVENTION`)."""
        return float(np.nanmean(self.recall)) if np.isfinite(self.recall).any() else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready: NaN becomes None."""
        def clean(x):
            return None if x is None or not np.isfinite(x) else float(x)

        return {
            "miou": clean(self.miou), "mean_precision": clean(self.mean_precision),
            "mean_recall": clean(self.mean_recall), "mean_convention": MEAN_CONVENTION,
            "pixel_accuracy": clean(self.pixel_accuracy),
            "bg_false_positive_rate": clean(self.bg_false_positive_rate),
            "per_class": {name: {"iou": clean(i), "precision": clean(p), "recall": clean(r)}
                          for name, i, p, r in zip(self.class_names, self.iou, self.precision, self.recall)},
        }

    def markdown(self, title: str | None = None) -> str:
        """A per-class table in Markdown (percentages)."""
        def pct(x):
            return "—" if not np.isfinite(x) else f"{100 * x:.1f}"

        lines = [f"### {title}", ""] if title else []
        lines += ["| class | IoU | precision | recall |", "|---|---:|---:|---:|"]
        for name, i, p, r in zip(self.class_names, self.iou, self.precision, self.recall):
            lines.append(f"| {name} | {pct(i)} | {pct(p)} | {pct(r)} |")
        lines.append(f"| **mean** | **{pct(self.miou)}** | {pct(self.mean_precision)} | "
                     f"{pct(self.mean_recall)} |")
        lines += ["", f"pixel accuracy {pct(self.pixel_accuracy)}%, background false-positive rate "
                      f"{pct(self.bg_false_positive_rate)}%", "", f"{MEAN_CONVENTION[0].upper()}{MEAN_CONVENTION[1:]}."]
        return "\n".join(lines) + "\n"
