"""Training augmentation of the final segmentation model (DeepLab-style): random scale, pad, crop, flip.

The classic DeepLab recipe (and torchvision's references/segmentation): scale the image and its mask by a random
factor in [0.5, 2.0], pad to at least the crop size (image with the mean colour, mask with the ignore index 255),
take a random crop, flip horizontally with probability 0.5. Unlike `TrainTransform` (random-resized-crop for the
classifier-style stages) the crop never resamples the mask twice and padding is ignored by the loss.

Randomness comes from python `random`, which `TransformedDataset` seeds per (seed, epoch, index).
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from semples.data.base import IGNORE_INDEX
from semples.data.config import SegTrainTransformConfig  # noqa: F401  (its config, defined torch-free)
from semples.data.transforms import normalize, to_tensor


class SegTrainTransform:
    """Random scale + pad (mean colour / 255) + random crop + horizontal flip on image and mask.

    Output: image (3, S, S) normalised; mask (S, S) int64 with 255 = ignore (padding included), or None when
    no mask is given.
    """

    def __init__(self, cfg: SegTrainTransformConfig) -> None:
        self.cfg = cfg

    def __call__(self, image: Image.Image, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.cfg
        image = image.convert("RGB")
        if mask is not None and tuple(mask.shape) != (image.height, image.width):
            raise ValueError(f"mask {tuple(mask.shape)} and image {(image.height, image.width)} sizes differ")
        s = random.uniform(*cfg.scale_range)
        w, h = max(1, round(image.width * s)), max(1, round(image.height * s))
        if (w, h) != image.size:
            image = image.resize((w, h), Image.BILINEAR)
        tensor = normalize(to_tensor(image), cfg.normalize)
        mask_t = None
        if mask is not None:
            m = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
            if (w, h) != m.size:
                m = m.resize((w, h), Image.NEAREST)
            mask_t = torch.from_numpy(np.asarray(m, dtype=np.int64).copy())
        crop = cfg.crop_size
        pad_h, pad_w = max(crop - h, 0), max(crop - w, 0)
        if pad_h or pad_w:  # bottom/right: 0 is the mean colour once normalised; the loss ignores 255
            tensor = F.pad(tensor, (0, pad_w, 0, pad_h), value=0.0)
            if mask_t is not None:
                mask_t = F.pad(mask_t, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = random.randint(0, tensor.shape[1] - crop)
        left = random.randint(0, tensor.shape[2] - crop)
        tensor = tensor[:, top:top + crop, left:left + crop]
        if mask_t is not None:
            mask_t = mask_t[top:top + crop, left:left + crop]
        if random.random() < cfg.hflip:
            tensor = tensor.flip(-1)
            if mask_t is not None:
                mask_t = mask_t.flip(-1)
        return tensor.contiguous(), (mask_t.contiguous() if mask_t is not None else None)
