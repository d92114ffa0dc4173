"""Segmentation metrics: confusion matrices, mIoU tables, threshold sweeps. Imports nothing else of semples."""

from semples.metrics.confusion import IGNORE_INDEX, ConfusionMatrix, SegmentationScores

__all__ = ["IGNORE_INDEX", "ConfusionMatrix", "SegmentationScores"]
