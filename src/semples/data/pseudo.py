"""A dataset of a base dataset's images paired with pseudo masks from a folder (what the final model trains on).

Pseudo masks are ``<dir>/<image id>.png`` index PNGs (uint8: 0 background, 1..K classes, 255 ignore; palette or
grayscale), one per image of the base dataset's split, the same size as the image — the format
`semples pseudo-masks` writes and `semples eval-masks` reads. Ids may contain '/', kept as sub-folders.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from semples.data.base import ClassTable, DataError, SegmentationDataset
from semples.data.io import read_mask

log = logging.getLogger(__name__)


def pseudo_mask_path(mask_dir: str | Path, image_id: str) -> Path:
    """Where the pseudo mask of `image_id` lives."""
    return Path(mask_dir) / f"{image_id}.png"


class PseudoMaskDataset(SegmentationDataset):
    """`base`'s images and image-level labels with masks read from `mask_dir` instead of the base's masks.

    Args:
        base: the dataset whose images the pseudo masks were made for (same ids).
        mask_dir: folder of ``<id>.png`` pseudo masks.
        skip_missing: leave out images without a pseudo mask (logged) instead of failing.

    Raises:
        DataError: `mask_dir` is not a folder; an image has no pseudo mask (the message names the missing file)
            and `skip_missing` is off; no image has one.
    """

    has_masks = True

    def __init__(self, base: SegmentationDataset, mask_dir: str | Path, *, skip_missing: bool = False) -> None:
        self.base = base
        self.mask_dir = Path(mask_dir)
        if not self.mask_dir.is_dir():
            raise DataError(f"{self.mask_dir}: pseudo-mask folder does not exist (write it with `semples "
                            "pseudo-masks`)")
        self.classes: ClassTable = base.classes
        self.name = f"{base.name}+pseudo"
        present = [i for i, image_id in enumerate(base.ids) if pseudo_mask_path(self.mask_dir, image_id).is_file()]
        missing = len(base.ids) - len(present)
        if missing and not skip_missing:
            first = next(i for i, image_id in enumerate(base.ids)
                         if not pseudo_mask_path(self.mask_dir, image_id).is_file())
            raise DataError(f"{pseudo_mask_path(self.mask_dir, base.ids[first])}: pseudo mask of image "
                            f"{base.ids[first]!r} is missing ({missing} of {len(base.ids)} missing; pass "
                            "--skip-missing to train without them)")
        if not present:
            raise DataError(f"{self.mask_dir}: holds no pseudo mask for any of the {len(base.ids)} images of "
                            f"{base.name} (expected <id>.png, e.g. {base.ids[0] if base.ids else '?'}.png)")
        if missing:
            log.warning("%d of %d images have no pseudo mask in %s and are left out", missing, len(base.ids),
                        self.mask_dir)
        self.missing = missing
        self._base_index = present
        self.ids = [base.ids[i] for i in present]

    def labels(self, index: int) -> np.ndarray:
        return self.base.labels(self._base_index[index])

    def load_image(self, index: int) -> Image.Image:
        return self.base.load_image(self._base_index[index])

    def load_mask(self, index: int) -> np.ndarray:
        """(H, W) uint8 pseudo mask; DataError when unreadable (`__getitem__` also checks it fits the image)."""
        return read_mask(pseudo_mask_path(self.mask_dir, self.ids[index]), self.num_classes)

    def __getitem__(self, index: int):
        item = super().__getitem__(index)
        if item.mask.shape != (item.image.height, item.image.width):
            raise DataError(f"{pseudo_mask_path(self.mask_dir, item.id)}: pseudo mask is {item.mask.shape[1]}×"
                            f"{item.mask.shape[0]}, its image is {item.image.width}×{item.image.height}")
        return item
