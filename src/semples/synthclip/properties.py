"""The properties of a real web-trained CLIP that the demo relies on, checked on a CLIP of the synthetic world.

SemPLeS meets CLIP through masked images: X^f = M ⊙ X (masked pixels take the mask-fill grey), X^b = (1 − M) ⊙ X,
and learned prompts u^b. What it can show depends on CLIP behaving like a real one there:

    (a) emptying a mask must not look like the class: images of a class are nearer its text than the blank
        mask-fill image and than mask-fill noise (else L_match's foreground term is lowered by empty masks);
    (b) context raises the class score: an object on its usual background scores above the same object alone on
        the mask-fill grey (real CLIP does this, and it is why its CAMs leak into co-occurring backgrounds);
    (c) a co-occurrence bias for every class: the class text is nearer its associated background alone than
        other backgrounds (the problem SemPLeS addresses);
    (d) backgrounds are describable in text: a background alone retrieves its own caption among the world's
        background captions (so learned prompts can find a background in text space);
    (e) zero-shot object recognition at the resolution the demo feeds CLIP, and CLIP trained at that resolution
        (no interpolated position embeddings);
    (f) at patch level the class text is nearer the object's patches than its associated background's;
    (g) an object alone on the mask-fill grey is still recognised (what a good mask hands CLIP).

Each property has its threshold here, fixed before any CLIP was trained against it (`THRESHOLDS`), and the
check reports its values per class and PASS/FAIL. All images are held out from CLIP training (see
`semples.synthclip.probe`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from semples.data.synthetic import MASK_FILL_RGB, SyntheticWorld
from semples.synthclip.data import eval_input
from semples.synthclip.probe import (
    DEFAULT_TEMPLATE,
    PROBE_SEED_OFFSET,
    PROBE_SPLIT,
    encode_images,
    items_with_class,
    probe_clip,
    single_object_items,
)

# Thresholds of the properties (committed before the toy CLIP was trained against them).
THRESHOLDS = {
    "a_margin": 0.05,  # mean cos(image holding k, text k) − cos(blank or noise, text k), every class
    "b_gain": 0.0,  # mean cos(object k on its background, text k) − cos(same object alone, text k), every class
    "c_bias": 0.02,  # cos(text k, its background alone) − mean cos(text k, other backgrounds alone), every class
    "d_retrieval": 0.90,  # share of background-alone images nearest their own background caption
    "e_zero_shot": 0.95,  # zero-shot object accuracy at the demo's feed resolution
    "f_classes": 5,  # classes (of 6) whose text is nearer the object's patches than its background's
    "g_on_grey": 0.90,  # zero-shot accuracy of objects alone on the mask-fill grey
}
NOISE_STD = 24.0  # 8-bit units: std of the per-pixel noise added to the mask-fill grey ("mask-fill noise")
PATCH_SHARE = 0.5  # a patch counts as object / background when at least this share of its pixels is


@dataclass(frozen=True)
class Property:
    """One checked property: id, short name, what is measured, the threshold in words."""

    key: str
    name: str
    what: str
    threshold: str


PROPERTIES: tuple[Property, ...] = (
    Property("a", "blank and noise are not the class",
             "mean cos(image holding class k, text k) minus cos(blank mask-fill image, text k), and minus mean "
             "cos(mask-fill noise, text k); images hold 1-3 objects as the demo's do",
             f">= {THRESHOLDS['a_margin']} for every class, both margins"),
    Property("b", "context raises the class score",
             "mean over paired images of cos(object k on its associated background, text k) minus cos(the same "
             "object alone on mask-fill, text k)", f">= {THRESHOLDS['b_gain']} for every class"),
    Property("c", "co-occurrence bias",
             "cos(text k, k's background alone) minus mean cos(text k, each other background alone)",
             f">= {THRESHOLDS['c_bias']} for every class"),
    Property("d", "backgrounds are describable",
             "share of background-alone images whose nearest background caption ('a photo of {background}.') is "
             "their own", f">= {THRESHOLDS['d_retrieval']}"),
    Property("e", "zero-shot at the demo's resolution",
             "zero-shot accuracy on held-out single-class images fed at the demo's crop size; the tower's native "
             "size must equal it", f">= {THRESHOLDS['e_zero_shot']} and native size = feed size"),
    Property("f", "patch level: object above background",
             "per image, mean cos(patch, text k) over the object's patches minus over its associated background's "
             "patches; mean over images", f"> 0 for at least {THRESHOLDS['f_classes']} classes"),
    Property("g", "objects alone are recognised",
             "zero-shot accuracy of objects alone on the mask-fill grey", f">= {THRESHOLDS['g_on_grey']}"),
)


def _cos(feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    return feats @ text  # both L2-normalised


@torch.no_grad()
def _patch_margins(clip, world: SyntheticWorld, items, text: torch.Tensor, norm: str) -> dict[int, list[float]]:
    """class -> per image: mean cos over object patches − mean cos over associated-background patches."""
    from semples.models.clip_visual import embed, patch_size, project_tokens, run_blocks

    visual = clip.model.visual
    side = clip.image_size[0]
    p = patch_size(visual)
    device = next(clip.parameters()).device
    out: dict[int, list[float]] = {}
    for (_, k), item in items:
        if world.class_background[k] not in item.backgrounds:
            continue  # the object away from its background: nothing to compare
        x = eval_input(item.image, side, norm)[None].to(device)
        tokens, grid = embed(visual, x)
        tokens, _ = run_blocks(visual, tokens, len(visual.transformer.resblocks))
        patches = F.normalize(project_tokens(visual, tokens)[0, 1:].float(), dim=-1)  # (h·w, E)
        sims = (patches @ text[k]).reshape(grid).cpu()

        def share(region: np.ndarray) -> torch.Tensor:
            r = torch.from_numpy(region.astype(np.float32))[None, None]
            r = F.interpolate(r, size=(side, side), mode="nearest")
            return F.avg_pool2d(r, p)[0, 0]

        obj = share(item.mask == k + 1) >= PATCH_SHARE
        bg = share((item.mask == 0) & (item.background_map == world.class_background[k])) >= PATCH_SHARE
        if obj.any() and bg.any():
            out.setdefault(k, []).append(float(sims[obj].mean() - sims[bg].mean()))
    return out


@torch.no_grad()
def check_properties(clip, world: SyntheticWorld, *, feed_size: int, per_class: int = 50, per_background: int = 40,
                     template: str = DEFAULT_TEMPLATE, norm: str = "imagenet") -> dict:
    """Checks `PROPERTIES` on a `FrozenCLIP` with held-out images of `world`.

    Args:
        clip: a `FrozenCLIP`.
        world: the synthetic world (classes, backgrounds, associations).
        feed_size: the side the demo feeds CLIP (its training crop; property e).
        per_class: held-out images per class (single-class images, objects alone, paired context images).
        per_background: images of each background alone (and mask-fill noise images).
        template: the class text, one ``{}`` for the name (the demo's ``clip.class_template``).
        norm: image normalisation ("imagenet": what the demo's masking hands CLIP; or "clip").

    Returns:
        A JSON-ready dict: ``properties`` (list of {key, name, what, threshold, pass, values}), ``passed``,
        ``total``, ``all_pass``, ``thresholds``, ``probe`` (the `probe_clip` result) and the settings.
    """
    k_names = list(world.class_names)
    probe = probe_clip(clip, world, per_class=per_class, per_background=per_background, template=template, norm=norm)
    text = F.normalize(clip.encode_text([template.format(c) for c in k_names]).float(), dim=-1)  # (K, E)
    side = clip.image_size[0]

    # (a) images holding the class (alone or with others: what the demo trains on) vs blank and mask-fill noise
    with_class = items_with_class(world, per_class)
    feats = encode_images(clip, [world.generate(PROBE_SPLIT, i).image for i, _ in with_class], norm)
    truth = torch.tensor([k for _, k in with_class])
    blank = np.empty((side, side, 3), dtype=np.uint8)
    blank[:] = MASK_FILL_RGB
    rng = np.random.default_rng(PROBE_SEED_OFFSET)
    noise = [np.clip(blank + rng.normal(0.0, NOISE_STD, blank.shape) + 0.5, 0, 255).astype(np.uint8)
             for _ in range(per_background)]
    blank_feat = encode_images(clip, [blank], norm)[0]
    noise_feats = encode_images(clip, noise, norm)
    a_values, a_pass = {}, True
    for k, name in enumerate(k_names):
        cos_image = float(_cos(feats[truth == k], text[k]).mean())
        cos_blank = float(_cos(blank_feat[None], text[k])[0])
        cos_noise = float(_cos(noise_feats, text[k]).mean())
        v = {"cos_image": cos_image, "cos_blank": cos_blank, "cos_noise": cos_noise,
             "margin_blank": cos_image - cos_blank, "margin_noise": cos_image - cos_noise}
        a_values[name] = v
        a_pass &= min(v["margin_blank"], v["margin_noise"]) >= THRESHOLDS["a_margin"]

    # (b) the same object with and without its associated background
    b_values, b_pass = {}, True
    for k, name in enumerate(k_names):
        seeds = [PROBE_SEED_OFFSET + 500_000 + j for j in range(per_class)]
        alone = [world.render_object(k, s)[0] for s in seeds]
        context = [world.render_object(k, s, background=world.class_background[k])[0] for s in seeds]
        c_alone = _cos(encode_images(clip, alone, norm), text[k])
        c_context = _cos(encode_images(clip, context, norm), text[k])
        gain = float((c_context - c_alone).mean())
        b_values[name] = {"background": world.background_names[world.class_background[k]],
                          "cos_alone": float(c_alone.mean()), "cos_in_context": float(c_context.mean()),
                          "gain": gain, "share_of_pairs_raised": float((c_context > c_alone).float().mean())}
        b_pass &= gain >= THRESHOLDS["b_gain"]

    # (c) bias, (d) background captions, (e) zero-shot, (g) on grey: from the probe
    c_values = {name: {"background": v["background"], "bias": v["bias"]} for name, v in probe["per_class"].items()}
    c_pass = all(v["bias"] >= THRESHOLDS["c_bias"] for v in c_values.values())
    d_value = probe["background_caption_accuracy"]
    native = list(clip.image_size)
    e_value = probe["zero_shot_accuracy"]
    e_pass = e_value >= THRESHOLDS["e_zero_shot"] and native == [feed_size, feed_size]
    g_value = probe["on_grey_accuracy"]

    # (f) patch level, on single-class images
    items = single_object_items(world, per_class)
    generated = [world.generate(PROBE_SPLIT, i) for i, _ in items]
    margins = _patch_margins(clip, world, list(zip(items, generated, strict=True)), text, norm)
    f_values = {name: {"margin": float(np.mean(margins[k])) if margins.get(k) else None,
                       "images": len(margins.get(k, []))} for k, name in enumerate(k_names)}
    f_count = sum(1 for v in f_values.values() if v["margin"] is not None and v["margin"] > 0)

    results = {
        "a": (a_pass, a_values),
        "b": (b_pass, b_values),
        "c": (c_pass, c_values),
        "d": (d_value >= THRESHOLDS["d_retrieval"], {"accuracy": d_value,
                                                     "per_background": probe["background_caption_per_background"]}),
        "e": (e_pass, {"accuracy": e_value, "native_size": native, "feed_size": feed_size,
                       "per_class": {n: v["zero_shot_accuracy"] for n, v in probe["per_class"].items()}}),
        "f": (f_count >= THRESHOLDS["f_classes"], {"classes_passing": f_count, "per_class": f_values}),
        "g": (g_value >= THRESHOLDS["g_on_grey"], {"accuracy": g_value,
                                                   "per_class": {n: v["on_grey_accuracy"]
                                                                 for n, v in probe["per_class"].items()}}),
    }
    props = [{"key": p.key, "name": p.name, "what": p.what, "threshold": p.threshold, "pass": bool(results[p.key][0]),
              "values": results[p.key][1]} for p in PROPERTIES]
    passed = sum(p["pass"] for p in props)
    return {"properties": props, "passed": passed, "total": len(props), "all_pass": passed == len(props),
            "thresholds": dict(THRESHOLDS), "template": template, "norm": norm, "feed_size": feed_size,
            "noise_std": NOISE_STD, "probe": probe}


def _per_class_line(values: dict, key: str, fmt: str = "{:+.3f}") -> str:
    return ", ".join(f"{name} {fmt.format(v[key]) if v[key] is not None else '-'}" for name, v in values.items())


def format_properties(result: dict) -> str:
    """The property list as text: one numbered line per property with PASS/FAIL, then its per-class values."""
    lines = [f"properties of a real CLIP the demo relies on ({result['passed']}/{result['total']} pass; template "
             f"{result['template']!r}, {result['norm']} normalisation, fed at {result['feed_size']} px)"]
    for p in result["properties"]:
        lines.append(f"({p['key']}) {'PASS' if p['pass'] else 'FAIL'}  {p['name']}: {p['threshold']}")
        v = p["values"]
        if p["key"] == "a":
            lines.append("      margin vs blank: " + _per_class_line(v, "margin_blank"))
            lines.append("      margin vs noise: " + _per_class_line(v, "margin_noise"))
        elif p["key"] == "b":
            lines.append("      gain in context: " + _per_class_line(v, "gain"))
        elif p["key"] == "c":
            lines.append("      bias:            " + _per_class_line(v, "bias"))
        elif p["key"] == "d":
            per = ", ".join(f"{b} {a:.2f}" for b, a in v["per_background"].items())
            lines.append(f"      retrieval {v['accuracy']:.3f}: {per}")
        elif p["key"] == "e":
            lines.append(f"      accuracy {v['accuracy']:.3f}; native {v['native_size'][0]} px, "
                         f"fed {v['feed_size']} px")
        elif p["key"] == "f":
            lines.append(f"      {v['classes_passing']} classes > 0: " + _per_class_line(v["per_class"], "margin"))
        elif p["key"] == "g":
            lines.append(f"      accuracy {v['accuracy']:.3f}: " + ", ".join(
                f"{n} {a:.2f}" for n, a in v["per_class"].items()))
    return "\n".join(lines)
