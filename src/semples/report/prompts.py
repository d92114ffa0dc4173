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


class BackgroundProbe:
    """Which background each class's background prompt u^b describes: the background whose captions (mean cosine
    over its caption templates) and whose background-alone images (mean cosine) are nearest (paper Fig. 5, in
    numbers). References are computed once per CLIP and world.

    Args:
        clip: the frozen CLIP.
        world: the synthetic world (`SyntheticWorld`): backgrounds, captions, associations.
        class_template: the class text t_k ("a photo of a {}.").
        norm: the image normalisation the stages feed CLIP.
        images: background-alone images per background.
        seed: render seed of the first of those images (held out from the toy CLIP's training seeds).
    """

    def __init__(self, clip, world, class_template: str, norm: str = "imagenet", images: int = 20,
                 seed: int = 2_000_000_000) -> None:
        from semples.synthclip.data import eval_input

        self.classes = list(world.class_names)
        self.backgrounds = list(world.background_names)
        self.associated = [world.background_names[b] for b in world.class_background]
        self.captions = {b: world.background_captions(b) for b in self.backgrounds}
        with torch.no_grad():
            self.caption_features = {b: F.normalize(clip.encode_text(c).float(), dim=-1)
                                     for b, c in self.captions.items()}
            self.image_features = {}
            for bi, b in enumerate(self.backgrounds):
                x = torch.stack([eval_input(world.render_background(bi, seed + j), clip.image_size[0], norm)
                                 for j in range(images)])
                self.image_features[b] = F.normalize(clip.encode_image(x).float(), dim=-1)
            self.class_text = F.normalize(clip.class_text_features(self.classes, class_template).float(), dim=-1)

    @torch.no_grad()
    def nearest(self, u_bg: torch.Tensor) -> dict:
        """Per class: nearest background by captions and by images (and margins); hits = its associated one.

        Shape: u_bg (K, E), one prompt feature per class (normalised here).
        """
        u = F.normalize(u_bg.float(), dim=-1)
        bgs = self.backgrounds
        cap = torch.stack([(u @ self.caption_features[b].t()).mean(1) for b in bgs], dim=1)  # (K, B)
        img = torch.stack([(u @ self.image_features[b].t()).mean(1) for b in bgs], dim=1)
        all_caps = [c for b in bgs for c in self.captions[b]]
        best_cap = (u @ torch.cat([self.caption_features[b] for b in bgs]).t()).argmax(1)
        own_text = (u * self.class_text).sum(1)
        per_class = {}
        for k, name in enumerate(self.classes):
            a = bgs.index(self.associated[k])
            others = [i for i in range(len(bgs)) if i != a]
            per_class[name] = {
                "associated": self.associated[k],
                "nearest_caption_background": bgs[int(cap[k].argmax())],
                "nearest_caption": all_caps[int(best_cap[k])],
                "caption_margin": float(cap[k, a] - cap[k, others].max()),
                "nearest_image_background": bgs[int(img[k].argmax())],
                "image_margin": float(img[k, a] - img[k, others].max()),
                "cos_own_class_text": float(own_text[k]),
            }
        cap_hits = sum(v["nearest_caption_background"] == v["associated"] for v in per_class.values())
        img_hits = sum(v["nearest_image_background"] == v["associated"] for v in per_class.values())
        k = len(self.classes)
        return {"caption_hits": int(cap_hits), "image_hits": int(img_hits), "classes": k,
                "caption_share": cap_hits / k, "image_share": img_hits / k, "per_class": per_class}
