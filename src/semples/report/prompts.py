"""What the learned background prompts describe (paper Fig. 5): similarity heat maps over images and the nearest
captions in CLIP's text space.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from semples.data.transforms import normalize, to_tensor


@torch.no_grad()
def patch_similarity(clip, image: Image.Image, text_features: torch.Tensor, side: int | None = None) -> np.ndarray:
    """Cosine similarity of every patch token of CLIP's image tower to each text feature.

    The image goes in at `side` px on its longer side (default: twice the tower's native size, for a finer grid;
    the position embedding is interpolated), CLIP-normalised; each patch token is projected into the joint space
    (ln_post, proj) as the class token would be.

    Shape: text_features (T, E) -> (T, h, w) similarities on the patch grid.
    """
    from semples.models.clip_visual import embed, patch_size, project_tokens, run_blocks

    visual = clip.model.visual
    p = patch_size(visual)
    side = side or 2 * max(clip.image_size)
    scale = side / max(image.size)
    w, h = (max(p, int(round(d * scale / p)) * p) for d in image.size)
    device = text_features.device
    x = normalize(to_tensor(image.convert("RGB").resize((w, h), Image.BICUBIC)), "clip")[None].to(device)
    tokens, grid = embed(visual, x)
    tokens, _ = run_blocks(visual, tokens, len(visual.transformer.resblocks))
    patches = F.normalize(project_tokens(visual, tokens)[0, 1:].float(), dim=-1)  # (h·w, E)
    sims = patches @ F.normalize(text_features.float(), dim=-1).T  # (h·w, T)
    return sims.T.reshape(-1, *grid).cpu().numpy()


@torch.no_grad()
def nearest_texts(features: torch.Tensor, clip, texts: Sequence[str], k: int = 3) -> list[list[tuple[str, float]]]:
    """For each feature (N, E), the `k` texts whose CLIP text features are most similar (cosine), best first."""
    bank = F.normalize(clip.encode_text(list(texts)).float(), dim=-1)
    sims = F.normalize(features.float(), dim=-1) @ bank.T
    top = sims.topk(min(k, len(texts)), dim=1)
    return [[(texts[j], float(v)) for v, j in zip(vals.tolist(), idx.tolist())]
            for vals, idx in zip(top.values, top.indices)]
