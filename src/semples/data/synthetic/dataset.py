"""The synthetic world as a `SegmentationDataset` (the `DATASETS["synthetic"]` entry)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from semples.data.base import ClassTable, DataError, RawItem, SegmentationDataset
from semples.data.synthetic.config import SyntheticConfig
from semples.data.synthetic.world import SyntheticItem, SyntheticWorld

if TYPE_CHECKING:
    from semples.data.config import DataConfig


class SyntheticDataset(SegmentationDataset):
    """Split `split` of the synthetic world as a `SegmentationDataset` (masks always available).

    Beyond the contract: `item(i)` (everything generated), `background_map(i)`, `caption(i, variant)`, the
    background names `backgrounds` and `class_background` (class index -> associated background id).
    """

    name = "synthetic"
    has_masks = True

    def __init__(self, cfg: SyntheticConfig, split: str) -> None:
        sizes = cfg.split_sizes()
        if split not in sizes:
            raise DataError(f"synthetic world has no split {split!r}; configured splits (data.synthetic.splits) are: "
                            f"{', '.join(f'{k} ({v})' for k, v in sizes.items())}")
        self.world = SyntheticWorld(cfg)
        self.split = split
        self.classes = ClassTable(self.world.class_names, self.world.class_names)
        self.ids = [f"{split}_{i:06d}" for i in range(sizes[split])]
        self.backgrounds = self.world.background_names
        self.class_background = self.world.class_background
        self._cache: dict[int, SyntheticItem] = {}  # rendered items (only with cfg.cache)
        self._layouts: dict[int, SyntheticItem] = {}  # layouts without pixels (only with cfg.cache)
        self._last: tuple[int, SyntheticItem] | None = None  # the latest rendered item, so labels/mask reuse it

    def _check(self, index: int) -> int:
        if not -len(self.ids) <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for synthetic split {self.split!r} of size {len(self.ids)}")
        return index % len(self.ids)

    def item(self, index: int) -> SyntheticItem:
        """The fully rendered item (cached when `cache` is set)."""
        index = self._check(index)
        if index in self._cache:
            return self._cache[index]
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        item = self.world.generate(self.split, index)
        self._last = (index, item)
        if self.world.cfg.cache:
            self._cache[index] = item
            self._layouts.pop(index, None)
        return item

    def _layout(self, index: int) -> SyntheticItem:
        index = self._check(index)
        if index in self._cache:
            return self._cache[index]
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        if index in self._layouts:
            return self._layouts[index]
        layout = self.world.generate(self.split, index, render=False)
        if self.world.cfg.cache:
            self._layouts[index] = layout
        return layout

    def __getitem__(self, index: int) -> RawItem:
        item = self.item(index)  # one generation serves image, labels and mask
        return RawItem(self.ids[self._check(index)], Image.fromarray(item.image), item.labels.copy(), item.mask.copy())

    def labels(self, index: int) -> np.ndarray:
        return self._layout(index).labels.copy()

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.item(index).image)

    def load_mask(self, index: int) -> np.ndarray:
        return self._layout(index).mask.copy()

    def background_map(self, index: int) -> np.ndarray:
        """(H, W) uint8 background-type id of every pixel (index into `backgrounds`), also under objects."""
        return self._layout(index).background_map.copy()

    def caption(self, index: int, variant: int = 0) -> str:
        """A web-style caption of item `index` (see `SyntheticWorld.caption`)."""
        index = self._check(index)
        return self.world.caption(self.split, index, variant, item=self._layout(index))


def build_synthetic(cfg: DataConfig, split: str) -> SyntheticDataset:
    """The `DATASETS["synthetic"]` builder: split `split` of the world `cfg.synthetic`."""
    if cfg.prompt_names != "plain":
        raise DataError(f"synthetic world has only 'plain' class names, got data.prompt_names={cfg.prompt_names!r}")
    return SyntheticDataset(cfg.synthetic, split)
