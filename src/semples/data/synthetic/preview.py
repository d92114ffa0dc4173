"""A PNG to look at: one row per world item (image | mask | background map) with its labels and caption."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from semples.data.synthetic.config import SyntheticConfig
from semples.data.synthetic.world import SyntheticWorld

if TYPE_CHECKING:
    from semples.data.config import DataConfig

logger = logging.getLogger(__name__)

# mask view: black background, then bright, mutually distinct class colours (not the objects' own colours)
_PALETTE = np.array([(0, 0, 0), (255, 127, 14), (31, 119, 180), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                     (227, 119, 194), (188, 189, 34), (23, 190, 207), (140, 86, 75)], dtype=np.uint8)
# background-map view: one flat colour per background type
_BG_COLOURS = {"water": (25, 80, 150), "sky": (140, 190, 240), "grass": (60, 150, 40), "rails": (130, 80, 55),
               "sand": (225, 195, 130), "snow": (235, 240, 250), "brick": (175, 60, 40), "tiles": (35, 150, 150)}


def preview_grid(cfg: SyntheticConfig | DataConfig | None = None, n: int = 12, path: str | Path = "synthetic.png",
                 split: str = "train", scale: int = 2) -> Path:
    """Writes a PNG with one row per item: image | mask (class colours) | background map, plus a caption line.

    Returns the path written.
    """
    from PIL import ImageDraw

    syn = getattr(cfg, "synthetic", cfg) or SyntheticConfig()
    world = SyntheticWorld(syn)
    bg_palette = np.array([_BG_COLOURS[b] for b in world.background_names], dtype=np.uint8)
    hi = syn.image_size[1]
    cell, text_h = hi * scale, 12
    sheet = Image.new("RGB", (3 * (cell + 4) + 4, n * (cell + text_h + 4) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        item = world.generate(split, i)
        views = [item.image, _PALETTE[item.mask % len(_PALETTE)], bg_palette[item.background_map]]
        top = 4 + i * (cell + text_h + 4)
        for j, view in enumerate(views):
            img = Image.fromarray(view).resize((view.shape[1] * scale, view.shape[0] * scale), Image.NEAREST)
            sheet.paste(img, (4 + j * (cell + 4), top))
        labels = ", ".join(world.class_names[k] for k in np.nonzero(item.labels)[0])
        bgs = ", ".join(world.background_names[b] for b in item.backgrounds)
        draw.text((4, top + cell), f"{i}: [{labels}] on [{bgs}]  \"{world.caption(split, i, item=item)}\"",
                  fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    sheet.save(tmp)
    tmp.replace(path)
    logger.info("wrote synthetic preview of %d items to %s", n, path)
    return path
