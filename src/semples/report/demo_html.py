"""The demo's report.html from its metrics (see semples.demo)."""

from __future__ import annotations

import json
from pathlib import Path

from semples.metrics import MEAN_CONVENTION
from semples.report.html import esc, image, page, table

STEPS = (("seeds_after_match", "seeds after match"), ("seeds_after_refine", "seeds after refine"),
         ("control_untrained_prompts", "control: refine with untrained prompts"),
         ("pseudo_masks", "pseudo masks"), ("final", "final model"))
SEEDS = (("seeds_after_match", "after match"), ("seeds_after_refine", "after refine"),
         ("control_untrained_prompts", "untrained prompts"))


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _reference_table(reference: dict | None) -> str:
    if not reference:
        return ""
    rows = []
    labels = {"match": "after match (L_match only)", "refine": "after refine (full SemPLeS)",
              "refine_untrained": "refine with untrained prompts"}
    for key, label in labels.items():
        r = reference.get("rows", {}).get(key)
        if r:
            rows.append([label, f"{r['miou']:.1f} ± {r['miou_std'] or 0:.1f}",
                         f"{r['leak']:.1f} ± {r['leak_std'] or 0:.1f}"])
    return (f"<p>The same preset over {len(reference['seeds'])} training seeds "
            f"(<code>{esc(reference.get('source', ''))}</code>; mean ± std):</p>"
            + table(["seeds", "seed mIoU %", "leak rate %"], rows))


def demo_report(metrics: dict, names: list[str], figures: Path, cfg) -> str:
    """The HTML document."""
    summary_rows = []
    for key, label in STEPS:
        m = metrics[key]
        summary_rows.append([label, m["split"], _pct(m["miou"]), _pct(m["leak"]["mean"])])
    summary = table(["step", "split", "mIoU %", "leak rate %"], summary_rows)
    summary += (f"<p><b>{esc(metrics['verdict'])}</b></p>" + _reference_table(metrics.get("reference"))
                + f'<p class="note">{esc(metrics["threshold_note"])}. {esc(MEAN_CONVENTION[0].upper())}'
                f'{esc(MEAN_CONVENTION[1:])}. Leak rate: share of a class\'s associated-'
                "background pixels (ground-truth background, in images labelled with the class) labelled as that "
                "class. The untrained-prompt control is stage refine with the prompt vectors' U[0,1) initial values "
                "as u^b: what refine does without prompt learning.</p>")
    seed_rows = []
    for name in names:
        seed_rows.append([name, *(_pct(metrics[k]["per_class_iou"].get(name)) for k, _ in SEEDS),
                          *(_pct(metrics[k]["leak"]["per_class"].get(name)) for k, _ in SEEDS)])
    seed_rows.append(["mean (mIoU incl. background)", *(_pct(metrics[k]["miou"]) for k, _ in SEEDS),
                      *(_pct(metrics[k]["leak"]["mean"]) for k, _ in SEEDS)])
    seeds = table(["class", *(f"IoU {lab}" for _, lab in SEEDS), *(f"leak {lab}" for _, lab in SEEDS)], seed_rows,
                  total_last=True)
    iou_rows = []
    for name in ["background", *names]:
        iou_rows.append([name, *(_pct(metrics[k]["per_class_iou"].get(name)) for k, _ in STEPS)])
    iou = table(["class", *(lab for _, lab in STEPS)], iou_rows)
    leak_rows = []
    prompts = metrics["prompts"]["per_class"]
    for name in names:
        assoc = prompts.get(name, {}).get("associated_background", "")
        leak_rows.append([f"{name} ({assoc})", *(_pct(metrics[k]["leak"]["per_class"].get(name)) for k, _ in STEPS)])
    leak_rows.append(["mean", *(_pct(metrics[k]["leak"]["mean"]) for k, _ in STEPS)])
    leak = table(["class (its background)", *(lab for _, lab in STEPS)], leak_rows, total_last=True)
    probe_rows = []
    for name, p in prompts.items():
        caps = "; ".join(f"{t} ({s:.2f})" for t, s in p["nearest_captions"])
        probe_rows.append([name, p["associated_background"], p["nearest_background"],
                           "yes" if p["nearest_is_associated"] else "no", caps])
    probe = table(["class", "associated background", "nearest background caption", "match", "3 nearest captions"],
                  probe_rows)
    probe += (f"<p>For {100 * metrics['prompts']['share_nearest_is_associated']:.0f}% of the classes the learned "
              "prompt's nearest background caption names the class's associated background.</p>")
    times = table(["step", "seconds"], [[k, v] for k, v in metrics["seconds"].items() if v is not None])
    sections = [
        ("summary", "Summary", summary),
        ("seeds", "Seeds per class: after match, after refine, untrained-prompt control (%)", seeds),
        ("per-class", "Per-class IoU (%)", iou),
        ("leak", "Leak rate per class (%)", leak),
        ("figures", "Seeds, pseudo masks, predictions",
         "<p>Columns: image | ground truth | CAM after match | CAM after refine | pseudo mask | prediction of the "
         "final model (training images; seeds as heat maps, max over the labelled classes).</p>"
         + image(figures / "samples.png", "sample grid")
         + "<p>Seed mIoU against the background threshold, after match, after refine and for the "
           "control:</p>"
         + image(figures / "threshold_curves.png", "threshold curves")),
        ("prompts", "What the learned background prompts describe", probe
         + "<p>Heat maps: cosine similarity of CLIP's patch features to the class text (middle) and to the class's "
           "learned background prompt (right), min-max scaled per map (paper Fig. 5).</p>"
         + image(figures / "prompt_heatmaps.png", "prompt heat maps")),
        ("curves", "Loss curves", image(figures / "loss_curves.png", "loss curves")),
        ("details", "Run details", times + f"<p>Config: <code>{esc(metrics['config'])}</code>; run folders under "
         f"<code>{esc(metrics['output'])}/runs</code>; all numbers in <code>metrics.json</code>.</p>"
         f"<details><summary>resolved config</summary><pre>{esc(json.dumps(_cfg_dict(cfg), indent=1))}</pre>"
         "</details>"),
    ]
    return page("semples demo: SemPLeS on the synthetic co-occurrence world", sections, esc(metrics["what"]))


def _cfg_dict(cfg) -> dict:
    from semples.config import config_to_dict

    return config_to_dict(cfg)
