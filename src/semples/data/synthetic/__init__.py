"""A synthetic co-occurrence world: objects on procedural backgrounds that usually come with them.

Each object class has an *associated* background (boat/water, plane/sky, cow/grass, train/rails, bird/sand,
car/snow) that appears in an image containing the class with probability `p_cooc`. A CLIP trained on captions
that name the objects but usually not the background learns the same bias real CLIP has — the problem SemPLeS
addresses (learned prompts that capture and suppress co-occurring backgrounds, METHOD.md §1).

Everything is a pure function of (world seed, split name, index): no state, no generation order, no workers
involved. Masks are exact (they are painted together with the pixels), labels are the classes with visible
pixels, and every item exposes the background type of each pixel, so the *leak rate* (share of a class's
associated-background pixels predicted as that class) can be measured.

Modules: `config` (`SyntheticConfig`, every world parameter), `shapes` (objects), `textures` (backgrounds),
`captions` (web-style captions), `world` (`SyntheticWorld`: generation and probe images), `dataset`
(`SyntheticDataset` / `build_synthetic`, the dataset contract), `preview` (`preview_grid`, a PNG to look at).
The toy CLIP trained on this world lives beside data/ in `semples.synthclip` (it trains through the engine,
which data/ must not import).
"""

from semples.data.synthetic.captions import BACKGROUND_WORDS
from semples.data.synthetic.config import DEFAULT_ASSOCIATIONS, DEFAULT_SPLITS, MASK_FILL_RGB, SyntheticConfig
from semples.data.synthetic.dataset import SyntheticDataset, build_synthetic
from semples.data.synthetic.preview import preview_grid
from semples.data.synthetic.shapes import OBJECT_SHAPES, ObjectShape
from semples.data.synthetic.textures import BACKGROUND_TEXTURES
from semples.data.synthetic.world import SyntheticItem, SyntheticObject, SyntheticWorld

__all__ = [
    "BACKGROUND_TEXTURES",
    "BACKGROUND_WORDS",
    "DEFAULT_ASSOCIATIONS",
    "DEFAULT_SPLITS",
    "MASK_FILL_RGB",
    "OBJECT_SHAPES",
    "ObjectShape",
    "SyntheticConfig",
    "SyntheticDataset",
    "SyntheticItem",
    "SyntheticObject",
    "SyntheticWorld",
    "build_synthetic",
    "preview_grid",
]
