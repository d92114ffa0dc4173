"""The contract every dataset of the package fulfils, and the seeded wrapper the training loop reads through.

A dataset (`SegmentationDataset`) is a list of items with image-level labels over K foreground classes and,
where the data has them, semantic masks (0 = background, 1..K = classes, 255 = ignore). It returns *raw* items
(PIL image, numpy mask); `TransformedDataset` applies a transform pipeline whose randomness is seeded by
(seed, epoch, index), so a resumed run sees exactly the augmentations an uninterrupted run would have seen,
whatever the number of workers.

torch is imported where a tensor is made, not at import time: the commands that only read images and masks
(`semples pseudo-masks` with the CRF, `semples eval-masks`, every `--help`) start without it (~2.5 s).
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from semples.errors import DataError  # noqa: F401  (the data layer's error, re-exported)

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassTable:
    """Foreground class names of a dataset, in label order (class k has mask value k + 1).

    Attributes:
        names: canonical names (e.g. "diningtable" for VOC).
        prompt_names: how CLIP reads each class (e.g. "dining table"); same length as `names`.
    """

    names: tuple[str, ...]
    prompt_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.prompt_names):
            raise ValueError("names and prompt_names must have the same length")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate class names in {self.names}")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """0-based index of a class name (canonical or prompt name); raises KeyError listing valid names."""
        for table in (self.names, self.prompt_names):
            if name in table:
                return table.index(name)
        raise KeyError(f"unknown class {name!r}; valid classes are: {', '.join(self.names)}")


@dataclass
class RawItem:
    """One item before transforms. `mask` is None when the dataset has no masks for this split."""

    id: str
    image: Image.Image  # RGB
    labels: np.ndarray  # (K,) float32 multi-hot
    mask: np.ndarray | None  # (H, W) uint8, same size as image


class SegmentationDataset(abc.ABC):
    """Base class: subclasses set `classes`, `ids` and implement `load_image`, `load_mask`, `labels`."""

    classes: ClassTable
    ids: list[str]
    name: str = "dataset"
    has_masks: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @abc.abstractmethod
    def labels(self, index: int) -> np.ndarray:
        """(K,) float32 multi-hot image-level labels of item `index` (cheap: no image decoding)."""

    @abc.abstractmethod
    def load_image(self, index: int) -> Image.Image:
        """The RGB image of item `index`."""

    def load_mask(self, index: int) -> np.ndarray | None:
        """(H, W) uint8 semantic mask of item `index`, or None when the split has no masks."""
        return None

    def __getitem__(self, index: int) -> RawItem:
        return RawItem(self.ids[index], self.load_image(index), self.labels(index), self.load_mask(index))


Transform = Callable[[Image.Image, "np.ndarray | None"], "tuple[torch.Tensor, torch.Tensor | None]"]


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, index)."""
    ss = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, index & 0xFFFFFFFF])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class _SeededRNG:
    """Seeds python `random`, numpy's global RNG and torch's CPU RNG for one item, then restores them."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        import torch

        self._py = random.getstate()
        self._np = np.random.get_state()
        self._torch = torch.random.get_rng_state()
        random.seed(self.seed)
        np.random.seed(self.seed % (2**32))
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        import torch

        random.setstate(self._py)
        np.random.set_state(self._np)
        torch.random.set_rng_state(self._torch)


class TransformedDataset:
    """Applies `transform` to a `SegmentationDataset`; keys are ``index`` or ``(index, epoch)``.

    Returns a dict: ``image`` (3, H, W) float, ``labels`` (K,) float, ``index`` int, ``id`` str and, when the
    dataset has masks and `with_mask` is set, ``mask`` (H, W) int64 with 255 = ignore.
    """

    def __init__(self, dataset: SegmentationDataset, transform: Transform, seed: int = 0,
                 with_mask: bool = False) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.with_mask = with_mask

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def classes(self) -> ClassTable:
        return self.dataset.classes

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        import torch

        index, epoch = key if isinstance(key, tuple) else (key, 0)
        raw = self.dataset[index]
        mask = raw.mask if self.with_mask else None
        with _SeededRNG(item_seed(self.seed, epoch, index)):
            image, mask_t = self.transform(raw.image, mask)
        out = {"image": image, "labels": torch.from_numpy(np.asarray(raw.labels, dtype=np.float32)),
               "index": index, "id": raw.id}
        if mask_t is not None:
            out["mask"] = mask_t
        return out


def collate(batch: Sequence[dict]) -> dict:
    """Stacks tensors of equal shape; keeps lists for ids and for tensors whose shapes differ."""
    import torch

    out: dict = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if isinstance(values[0], torch.Tensor) and all(v.shape == values[0].shape for v in values):
            out[key] = torch.stack(values)
        elif isinstance(values[0], int):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out
