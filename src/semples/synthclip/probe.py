"""What the toy CLIP knows: zero-shot object accuracy and the co-occurrence bias SemPLeS exists to remove.

All probe images are held out from training: items of the world split ``clip-probe`` (training uses
``clip-train``), and backgrounds / objects alone rendered with seeds from 10^9 on (training uses seeds below the
size of its pair stream).

* zero-shot accuracy: images holding exactly one object class, classified by the nearest of the K prompts
  ``template.format(class)`` — overall, on the class's associated background and elsewhere; also for one object
  alone on the mask-fill grey (what a foreground mask M ⊙ X looks like).
* bias of class k: mean cos(prompt_k, image of k's associated background alone) − mean cos(prompt_k, images of
  each other background alone), averaged over those backgrounds. Positive = the class's text is drawn towards
  its co-occurring background — the bias real CLIP has on VOC and the problem of the paper.
* background → class: how often a background alone is classified as its associated class (chance = 1/K).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from semples.data.synthetic import SyntheticWorld
from semples.synthclip.data import eval_input

log = logging.getLogger(__name__)

PROBE_SPLIT = "clip-probe"
PROBE_SEED_OFFSET = 1_000_000_000
DEFAULT_TEMPLATE = "a photo of a {}."


def _mean_or_none(hits: torch.Tensor) -> float | None:
    return float(hits.float().mean()) if hits.numel() else None


def _fmt(v: float | None, width: int) -> str:
    return f"{v:>{width}.3f}" if v is not None else f"{'-':>{width}}"


@torch.no_grad()
def encode_images(clip, images: list[np.ndarray], norm: str, batch: int = 128) -> torch.Tensor:
    """L2-normalised CLIP features (N, E) of uint8 images (H, W, 3), resized to the tower's size."""
    size = clip.image_size[0]
    device = next(clip.parameters()).device
    feats = []
    for i in range(0, len(images), batch):
        x = torch.stack([eval_input(im, size, norm) for im in images[i:i + batch]]).to(device)
        feats.append(F.normalize(clip.encode_image(x).float(), dim=-1))
    return torch.cat(feats) if feats else torch.zeros(0, clip.embed_dim)


def single_object_items(world: SyntheticWorld, per_class: int, split: str = PROBE_SPLIT,
                        max_scan: int = 200_000) -> list[tuple[int, int]]:
    """(item index, class) of the first `per_class` items of `split` per class that hold exactly one class."""
    found: dict[int, list[int]] = {k: [] for k in range(world.num_classes)}
    for i in range(max_scan):
        if all(len(v) >= per_class for v in found.values()):
            break
        labels = world.generate(split, i, render=False).labels
        if labels.sum() == 1:
            k = int(labels.argmax())
            if len(found[k]) < per_class:
                found[k].append(i)
    return [(i, k) for k, idx in found.items() for i in idx]


def items_with_class(world: SyntheticWorld, per_class: int, split: str = PROBE_SPLIT,
                     max_scan: int = 200_000) -> list[tuple[int, int]]:
    """(item index, class) of the first `per_class` items of `split` per class whose label holds the class (other
    classes may be there too: the images the demo trains on)."""
    found: dict[int, list[int]] = {k: [] for k in range(world.num_classes)}
    for i in range(max_scan):
        if all(len(v) >= per_class for v in found.values()):
            break
        labels = world.generate(split, i, render=False).labels
        for k in np.flatnonzero(labels > 0.5):
            if len(found[int(k)]) < per_class:
                found[int(k)].append(i)
    return [(i, k) for k, idx in found.items() for i in idx]


@torch.no_grad()
def probe_clip(clip, world: SyntheticWorld, *, per_class: int = 50, per_background: int = 40,
               template: str = DEFAULT_TEMPLATE, norm: str = "clip") -> dict:
    """Zero-shot accuracy and co-occurrence bias of a CLIP on held-out images of `world`.

    Args:
        clip: a `FrozenCLIP`.
        world: the synthetic world (its classes, backgrounds and associations).
        per_class: held-out single-class images (and objects on grey) per class.
        per_background: images of each background alone.
        template: prompt of a class, with one ``{}`` for the class name.
        norm: image normalisation fed to CLIP ("clip" or "imagenet").

    Returns:
        A JSON-ready dict: ``zero_shot_accuracy``, ``on_grey_accuracy``, ``mean_bias``, ``background_to_class``
        (mean over classes), ``per_class`` {class: {...}}, ``similarity`` (K × backgrounds matrix of mean
        cosines), ``background_caption_accuracy`` and the probe settings.
    """
    k_names = list(world.class_names)
    text = F.normalize(clip.encode_text([template.format(c) for c in k_names]).float(), dim=-1)  # (K, E)

    items = single_object_items(world, per_class)
    generated = [world.generate(PROBE_SPLIT, i) for i, _ in items]
    feats = encode_images(clip, [g.image for g in generated], norm)
    truth = torch.tensor([k for _, k in items])
    pred = (feats @ text.t()).argmax(1).cpu()
    # the bias at work: objects away from their usual background are the ones misread
    on_assoc = torch.tensor([world.class_background[k] in g.backgrounds for g, (_, k) in zip(generated, items)])
    grey_truth = torch.arange(len(k_names)).repeat_interleave(per_class)
    grey_images = [world.render_object(int(k), PROBE_SEED_OFFSET + j)[0]
                   for k in range(len(k_names)) for j in range(per_class)]
    grey_pred = (encode_images(clip, grey_images, norm) @ text.t()).argmax(1).cpu()

    bg_names = list(world.background_names)
    bg_feats = [encode_images(clip, [world.render_background(b, PROBE_SEED_OFFSET + j)
                                      for j in range(per_background)], norm) for b in range(len(bg_names))]
    sim = torch.stack([(f @ text.t()).mean(0) for f in bg_feats], dim=1).cpu()  # (K, B) mean cosine
    bg_text = F.normalize(clip.encode_text([world.background_captions(b)[0] for b in bg_names]).float(), dim=-1)
    bg_caption_per = {bg_names[b]: float(((f @ bg_text.t()).argmax(1) == b).float().mean())
                      for b, f in enumerate(bg_feats)}
    bg_caption_acc = float(np.mean(list(bg_caption_per.values())))

    per: dict[str, dict] = {}
    for k, name in enumerate(k_names):
        a = world.class_background[k]
        others = [b for b in range(len(bg_names)) if b != a]
        assoc, other = float(sim[k, a]), float(sim[k, others].mean())
        sel = truth == k
        per[name] = {
            "background": bg_names[a],
            "zero_shot_accuracy": float((pred[sel] == k).float().mean()),
            "accuracy_on_associated": _mean_or_none(pred[sel & on_assoc] == k),
            "accuracy_elsewhere": _mean_or_none(pred[sel & ~on_assoc] == k),
            "on_grey_accuracy": float((grey_pred[grey_truth == k] == k).float().mean()),
            "cos_associated": assoc,
            "cos_other": other,
            "bias": assoc - other,
            "background_to_class": float(((bg_feats[a] @ text.t()).argmax(1) == k).float().mean()),
        }
    return {
        "template": template,
        "norm": norm,
        "images": {"single_object": len(items), "single_object_elsewhere": int((~on_assoc).sum()),
                   "on_grey": len(grey_images),
                   "per_background": per_background, "split": PROBE_SPLIT},
        "zero_shot_accuracy": float((pred == truth).float().mean()),
        "accuracy_on_associated": _mean_or_none(pred[on_assoc] == truth[on_assoc]),
        "accuracy_elsewhere": _mean_or_none(pred[~on_assoc] == truth[~on_assoc]),
        "on_grey_accuracy": float((grey_pred == grey_truth).float().mean()),
        "mean_bias": float(np.mean([v["bias"] for v in per.values()])),
        "background_to_class": float(np.mean([v["background_to_class"] for v in per.values()])),
        "chance": 1.0 / len(k_names),
        "background_caption_accuracy": bg_caption_acc,
        "background_caption_per_background": bg_caption_per,
        "per_class": per,
        "similarity": {"classes": k_names, "backgrounds": bg_names, "mean_cosine": sim.tolist()},
    }


def format_probe(result: dict) -> str:
    """The probe as a plain-text table (one row per class, then the means)."""
    head = (f"{'class':<8} {'background':<10} {'zero-shot':>9} {'on assoc':>8} {'elsewhere':>9} {'on grey':>8} "
            f"{'cos assoc':>9} {'cos other':>9} {'bias':>7} {'bg->class':>9}")
    lines = [f"template {result['template']!r}, {result['norm']} normalisation, held-out images: "
             f"{result['images']['single_object']} single-object, {result['images']['on_grey']} on grey, "
             f"{result['images']['per_background']} per background", head, "-" * len(head)]
    for name, v in result["per_class"].items():
        lines.append(f"{name:<8} {v['background']:<10} {v['zero_shot_accuracy']:>9.3f} "
                     f"{_fmt(v['accuracy_on_associated'], 8)} {_fmt(v['accuracy_elsewhere'], 9)} "
                     f"{v['on_grey_accuracy']:>8.3f} {v['cos_associated']:>9.3f} {v['cos_other']:>9.3f} "
                     f"{v['bias']:>+7.3f} {v['background_to_class']:>9.3f}")
    lines.append("-" * len(head))
    lines.append(f"{'all':<8} {'':<10} {result['zero_shot_accuracy']:>9.3f} "
                 f"{_fmt(result['accuracy_on_associated'], 8)} {_fmt(result['accuracy_elsewhere'], 9)} "
                 f"{result['on_grey_accuracy']:>8.3f} {'':>9} {'':>9} "
                 f"{result['mean_bias']:>+7.3f} {result['background_to_class']:>9.3f}")
    lines.append(f"bias = cos(prompt, associated background alone) - mean cos(prompt, other backgrounds alone); "
                 f"bg->class chance = {result['chance']:.3f}; background captions matched to background images: "
                 f"{result['background_caption_accuracy']:.3f}")
    return "\n".join(lines)
