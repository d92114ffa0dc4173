"""Segmentation metrics: confusion matrices, mIoU tables, threshold sweeps. Imports nothing else of semples."""

from semples.metrics.confusion import IGNORE_INDEX, MEAN_CONVENTION, ConfusionMatrix, SegmentationScores
from semples.metrics.leak import LeakRate, LeakSweep
from semples.metrics.sweep import SweepResult, ThresholdSweep, seed_labels, threshold_grid

__all__ = ["IGNORE_INDEX", "MEAN_CONVENTION", "ConfusionMatrix", "LeakRate", "LeakSweep", "SegmentationScores",
           "SweepResult", "ThresholdSweep", "seed_labels", "threshold_grid"]
