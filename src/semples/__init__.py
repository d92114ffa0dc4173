"""semples: weakly-supervised semantic segmentation with a frozen CLIP (SemPLeS, FMA-WSSS)."""

__version__ = "0.1.0"
