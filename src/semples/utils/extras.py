"""Optional dependencies: check them before long work starts, and name the extra that installs them."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from semples.errors import MissingExtraError

# module to import -> (pip package, semples extra, what needs it)
EXTRAS: dict[str, tuple[str, str, str]] = {
    "matplotlib": ("matplotlib", "infer", "figures and reports"),
    "pydensecrf.densecrf": ("pydensecrf2", "infer", "dense-CRF pseudo masks"),
    "skimage": ("scikit-image", "infer", "superpixel regions for region voting"),
    "cv2": ("opencv-python-headless", "infer", "SAM mask post-processing"),
    "pycocotools": ("pycocotools", "data", "COCO datasets"),
    "segment_anything": ("segment-anything", "sam", "SAM regions"),
    "transformers": ("transformers", "hf", "Mask2Former (segment.model.arch: mask2former)"),
    "tensorboard": ("tensorboard", "tensorboard", "TensorBoard logs (log.tensorboard: true)"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a broken install
        return False


def require(modules: Iterable[str], what: str) -> None:
    """Raises `MissingExtraError` listing every module of `modules` that cannot be imported.

    Args:
        modules: keys of `EXTRAS`.
        what: the work that needs them (said in the message), e.g. "semples demo".
    """
    missing = [m for m in modules if not _installed(m)]
    if not missing:
        return
    packages = ", ".join(f"{EXTRAS[m][0]} ({EXTRAS[m][2]})" for m in missing)
    extras = ",".join(sorted({EXTRAS[m][1] for m in missing}))
    raise MissingExtraError(f"{what} needs {packages}, which {'is' if len(missing) == 1 else 'are'} not installed: "
                            f"pip install 'semples[{extras}]'")
