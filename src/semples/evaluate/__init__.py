"""Evaluation against ground truth: seeds over a threshold sweep (`seeds`), folders of label PNGs (`masks`), the final
segmentation model (`segmenter`). The steps (`semples.steps`) pick folders and splits; these modules compute and
write metrics.json / metrics.md."""
