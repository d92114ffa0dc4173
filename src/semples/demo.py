"""`semples demo`: the real SemPLeS chain on the synthetic co-occurrence world with the shipped toy CLIP.

No argument, no network, under 10 minutes on 2 CPU cores (preset ``synth_demo``):

    classify -> match -> prompt -> refine      (semples run, step train)
    control: refine with untrained prompts     (prompt.max_steps=0: the U[0,1) initial vectors as u^b)
    seeds (cams + eval-seeds, leak rate) after match, after refine and of the control
    pseudo masks (CRF) -> eval-masks -> train-seg -> eval on val
    report.html + metrics.json

The report shows seed mIoU and leak rate per class after match, after refine and for the untrained-prompt control
(the leak rate: the share of each class's associated-background pixels labelled as that class), one sentence on
whether refine lowered the leak in this run and how that compares with the multi-seed ablation of the same preset
(`benchmarks/synthetic_ablation.py`, summarised in ``semples/assets/demo/ablation.json``), pseudo-mask and final
mIoU, a figure grid (image | ground truth | CAM after match | CAM after refine | pseudo mask | prediction), what
each learned background prompt looks at (paper Fig. 5) and which background captions it is nearest to, and the loss
curves. Numbers come from a toy world and a toy CLIP: they show the mechanism, they are not comparable to VOC.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from semples.config import Config, load_config
from semples.pipeline import Pipeline
from semples.utils.checkpoint_io import atomic_write_json, atomic_write_text
from semples.utils.extras import require

log = logging.getLogger(__name__)

DEMO_PRESET = "synth_demo"


def demo_dependencies(cfg: Config) -> list[str]:
    """Optional modules the demo with config `cfg` imports (keys of `semples.utils.extras.EXTRAS`)."""
    modules = ["matplotlib"]  # the report's figures
    if cfg.pseudo.method == "crf":
        modules.append("pydensecrf.densecrf")
    elif cfg.pseudo.method == "region-vote" and cfg.pseudo.region_vote.source == "superpixels":
        modules.append("skimage")
    return modules


def _read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _leak_of_masks(dataset, masks_dir: Path):
    from PIL import Image

    from semples.metrics import LeakRate

    leak = LeakRate(dataset.class_background)
    for i, image_id in enumerate(dataset.ids):
        pred = np.asarray(Image.open(Path(masks_dir) / f"{image_id}.png"))
        leak.update(pred, dataset.load_mask(i), dataset.background_map(i), dataset.labels(i))
    return leak


def _per_class_iou(metrics: dict, names: list[str]) -> dict[str, float | None]:
    """name -> IoU from the metrics.json of eval-seeds / eval-masks / eval-seg (their layouts differ a little)."""
    per = metrics.get("per_class") or metrics.get("all_pixels", {}).get("per_class") or {}
    out = {}
    for name in ["background", *names]:
        v = per.get(name)
        out[name] = v.get("iou") if isinstance(v, dict) else v
    return out


def _prompt_probe(cfg: Config, root: Path, dataset, report_dir: Path, n_images: int = 2) -> dict:
    """Heat maps of each learned prompt (and of its class text) over images of its class; nearest captions."""
    from semples.models.clip import load_clip
    from semples.report.figures import GridCell, GridRow, _resize_map, _thumb_size, draw_grid, heatmap_overlay
    from semples.report.prompts import nearest_texts, patch_similarity
    from semples.stages import load_prompts

    clip = load_clip(cfg.clip)
    names = list(dataset.classes.prompt_names)
    prompts, _ = load_prompts(str(root / "prompt"), clip, len(names))
    with torch.no_grad():
        u_bg = prompts().float()
    u_fg = clip.class_text_features(names, cfg.clip.class_template)
    world = dataset.world
    bg_captions = {b: world.background_captions(b) for b in world.background_names}
    texts = [c for caps in bg_captions.values() for c in caps]
    caption_bg = [b for b, caps in bg_captions.items() for _ in caps]
    nearest = nearest_texts(u_bg, clip, texts, k=3)
    object_texts = [cfg.clip.class_template.format(n) for n in names]
    nearest_obj = nearest_texts(u_bg, clip, object_texts + texts, k=1)
    probe, rows = {}, []
    for k, name in enumerate(names):
        assoc = world.background_names[dataset.class_background[k]]
        top = nearest[k]
        top_bg = caption_bg[texts.index(top[0][0])]
        probe[name] = {"associated_background": assoc, "nearest_captions": [[t, round(s, 4)] for t, s in top],
                       "nearest_background": top_bg, "nearest_is_associated": top_bg == assoc,
                       "nearest_text_incl_class_prompts": nearest_obj[k][0][0]}
        shown = [i for i in range(len(dataset)) if dataset.labels(i)[k] > 0][:n_images]
        for i in shown:
            img = dataset.load_image(i)
            sims = patch_similarity(clip, img, torch.stack([u_fg[k], u_bg[k]]), side=max(clip.image_size))
            arr = np.asarray(img.convert("RGB"))
            size = _thumb_size(*arr.shape[:2], 160)
            from semples.report.figures import _resize_rgb

            thumb = _resize_rgb(arr, size)
            cells = {"image": GridCell(thumb, name)}
            for col, s in (("class text", sims[0]), ("learned background prompt", sims[1])):
                s = (s - s.min()) / (s.max() - s.min() + 1e-8)
                cells[col] = GridCell(heatmap_overlay(thumb, _resize_map(s.astype(np.float32), size)))
            rows.append(GridRow(f"{name}: {dataset.ids[i]}", cells))
    draw_grid(report_dir / "prompt_heatmaps.png", rows, ["image", "class text", "learned background prompt"],
              cell_inches=1.8, title="similarity of CLIP patch features to the class text and to the learned prompt")
    share = float(np.mean([v["nearest_is_associated"] for v in probe.values()]))
    return {"per_class": probe, "share_nearest_is_associated": share}


def _sample_grid(dataset, root: Path, split: str, t_match: float, t_refine: float, pseudo_dir: Path,
                 segment_run: Path, cfg: Config, out: Path, count: int) -> None:
    """image | ground truth | CAM after match | CAM after refine | pseudo mask | prediction (sampled images)."""
    from semples.data.transforms import normalize, to_tensor
    from semples.infer.pseudo_masks import mask_png_path
    from semples.infer.segment import segment_probs
    from semples.models.segmenters import load_segmenter
    from semples.report.figures import draw_grid, pick_samples, sample_rows
    from semples.utils.checkpoint_io import atomic_write_bytes

    indices = pick_samples(len(dataset), count, cfg.seed)
    # predictions of the final model on just these images (the eval step predicted the val split)
    pred_dir = out.parent / "sample_predictions"
    model, _ = load_segmenter(segment_run, cfg.segment.model, len(dataset.classes) + 1)  # + background
    import io

    from PIL import Image

    for i in indices:
        x = normalize(to_tensor(dataset.load_image(i)), cfg.segment.transform.normalize)[None]
        with torch.no_grad():
            pred = segment_probs(model, x, scales=cfg.segment.eval.scales, flip=cfg.segment.eval.flip)[0].argmax(0)
        buf = io.BytesIO()
        Image.fromarray(pred.numpy().astype(np.uint8)).save(buf, format="PNG")
        atomic_write_bytes(mask_png_path(pred_dir, dataset.ids[i]), buf.getvalue())
    rows_m, _ = sample_rows(dataset, indices, cams_dir=root / "cams_match" / split)
    rows_r, _ = sample_rows(dataset, indices, cams_dir=root / "cams" / split, pseudo_dir=pseudo_dir, pred_dir=pred_dir)
    heat = "seed (max over classes)"
    for rm, rr in zip(rows_m, rows_r):
        rr.cells["CAM after match"] = rm.cells.get(heat)
        rr.cells["CAM after refine"] = rr.cells.pop(heat, None)
    columns = ["image", "ground truth", "CAM after match", "CAM after refine", "pseudo mask", "prediction"]
    draw_grid(out, rows_r, columns, cell_inches=1.9,
              title=f"{dataset.name} {split}: seeds after match and after refine, pseudo masks, final model")


REFERENCE = Path(__file__).resolve().parent / "assets" / "demo" / "ablation.json"
# settings that do not change a run's numbers: a config that differs from the preset only in these still has the
# preset's multi-seed reference
_RUN_ONLY = ("output_dir", "experiment", "log_every", "data.num_workers", "pipeline.figures")


def config_fingerprint(cfg: Config) -> str:
    """sha256 of the resolved config without the settings that do not change the numbers (and without `seed`):
    what the demo compares with the ablation's summary to know whether that summary describes its preset."""
    import hashlib

    from semples.config import config_to_dict

    d = config_to_dict(cfg)
    d.pop("seed", None)
    for key in _RUN_ONLY:
        head, _, rest = key.partition(".")
        if rest and isinstance(d.get(head), dict):
            d[head].pop(rest, None)
        elif not rest:
            d.pop(head, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _seeds(cfg: Config, generator: Path, split: str, cams_dir: Path, eval_dir: Path, force: bool) -> dict:
    """`semples cams` + `semples eval-seeds` of one mask generator (its metrics.json, leak rate included)."""
    from semples.steps import cams as cams_step
    from semples.steps import seeds as seeds_step

    cams_step.run(cfg, generator, split=split, out=cams_dir, force=force, progress=False)
    return seeds_step.run(cfg, cams_dir, split=split, out=eval_dir, samples=0, progress=False).metrics


def _untrained_control(cfg: Config, root: Path, split: str, force: bool) -> dict:
    """Refine with the untrained U[0,1) prompt vectors as u^b (a prompt run of 0 steps), from the same start as the
    real refine; its seeds' metrics."""
    import dataclasses

    from semples.steps import train

    untrained = dataclasses.replace(cfg, prompt=dataclasses.replace(cfg.prompt, max_steps=0))
    train.run(untrained, stage="prompt", generator=root / "match", run_dir=root / "prompt_untrained", resume=True,
              force=force)
    start = root / ("classify" if cfg.scheme.refine_init == "initial" else "match")
    train.run(cfg, stage="refine", generator=start, prompts=root / "prompt_untrained",
              run_dir=root / "refine_untrained", resume=True, force=force)
    return _seeds(cfg, root / "refine_untrained", split, root / "cams_untrained" / split,
                  root / "eval_seeds_untrained" / split, force)


def _seed_summary(metrics: dict, names: list[str], split: str) -> dict:
    return {"split": split, "miou": metrics["miou"], "threshold": metrics["threshold"],
            "per_class_iou": _per_class_iou(metrics, names), "leak": metrics["leak"]}


# the config sections that shape the seeds after match and refine (what the ablation's summary describes)
SEED_SECTIONS = ("mixed_precision", "deterministic", "data", "clip", "prompts", "generator", "masking", "loss",
                 "scheme", "classify", "match", "prompt", "refine", "cams", "seeds")


def seed_settings(cfg: Config) -> dict:
    """The settings that shape a run's seeds, flattened to dotted keys (without `seed` and the run-only ones)."""
    from semples.config import config_to_dict
    from semples.runs import flatten

    d = config_to_dict(cfg)
    flat = flatten({section: d[section] for section in SEED_SECTIONS if section in d})
    for key in _RUN_ONLY:
        flat.pop(key, None)
    return json.loads(json.dumps(flat, default=str))  # as the reference file holds them (lists, not tuples)


def reference_differences(cfg: Config, reference: dict) -> list[str]:
    """Settings where `cfg` differs from the config the reference was measured on ("key: theirs -> ours").

    Keys the reference does not know (settings added to the package after it was measured, at their defaults)
    are not differences; a reference without recorded settings differs in everything."""
    theirs = reference.get("settings")
    if not isinstance(theirs, dict):
        return ["(the reference records no settings)"]
    ours = seed_settings(cfg)
    return [f"{k}: {theirs[k]!r} -> {ours.get(k, '(absent)')!r}" for k in sorted(theirs) if ours.get(k) != theirs[k]]


def reference_for(cfg: Config) -> dict | None:
    """The multi-seed ablation's summary when it was measured on this config's seed settings (else None)."""
    if not REFERENCE.is_file():
        return None
    ref = json.loads(REFERENCE.read_text())
    return None if reference_differences(cfg, ref) else ref


def verdict(metrics: dict, reference: dict | None) -> str:
    """One sentence (two at most): did refine lower the leak in this run, and how does that compare with the
    multi-seed ablation of the preset."""
    m, r, c = metrics["seeds_after_match"], metrics["seeds_after_refine"], metrics["control_untrained_prompts"]
    d_leak = 100 * (r["leak"]["mean"] - m["leak"]["mean"])
    d_miou = 100 * (r["miou"] - m["miou"])
    d_ctrl = 100 * (r["leak"]["mean"] - c["leak"]["mean"])
    word = "lowered" if d_leak < 0 else "raised" if d_leak > 0 else "left"
    text = (f"In this run stage refine {word} the mean seed leak rate from {100 * m['leak']['mean']:.1f}% after "
            f"match to {100 * r['leak']['mean']:.1f}% ({d_leak:+.1f} points; seed mIoU {d_miou:+.1f}), "
            f"{d_ctrl:+.1f} points against untrained prompts in the same place.")
    if reference is None or not reference.get("refine_minus_match"):
        return text + (" No multi-seed reference matches this config (none is committed, or it was measured on other "
                       "settings): run benchmarks/synthetic_ablation.py --demo-reference for one.")
    ref = reference["refine_minus_match"]["leak"]
    lo, hi = ref["ci"]
    inside = "inside" if lo <= d_leak <= hi else "outside"
    return text + (f" Over the {len(reference['seeds'])}-seed ablation of this preset refine changed the leak by "
                   f"{ref['mean']:+.1f} points (95% interval {lo:+.1f} to {hi:+.1f}); this run is {inside} it.")


def run_demo(out_dir: str | Path = "semples-demo", config: str = DEMO_PRESET, overrides: list[str] | tuple = (),
             force: bool = False) -> dict:
    """Runs the demo into `out_dir` (report.html, metrics.json, and the run folders under it).

    Returns the metrics dict written to metrics.json.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    cfg = load_config(config, [*overrides, f"output_dir={out_dir / 'runs'}"])
    if cfg.data.dataset != "synthetic":
        from semples.errors import ConfigError

        raise ConfigError("semples demo runs on the synthetic world (data.dataset: synthetic); for other data use "
                          "semples run")
    require(demo_dependencies(cfg), "semples demo")  # before minutes of training, not after
    pipe = Pipeline(cfg, force=force)
    pipe.run(until="eval")
    root, split = pipe.root, pipe.seed_split
    steps = pipe.manifest["steps"]
    timings = {name: rec.get("seconds") for name, rec in steps.items()}

    from semples.data import build_dataset

    train = build_dataset(cfg.data, split)
    names = list(train.classes.names)
    t1 = time.perf_counter()
    seeds_match = _seeds(pipe.cfg, root / "match", split, root / "cams_match" / split,
                         root / "eval_seeds_match" / split, force)
    timings["match seeds"] = round(time.perf_counter() - t1, 1)
    t1 = time.perf_counter()
    seeds_control = _untrained_control(pipe.cfg, root, split, force)
    timings["untrained-prompt control"] = round(time.perf_counter() - t1, 1)

    from semples.report.curves import plot_loss_curves, plot_threshold_curves

    t2 = time.perf_counter()
    seeds_refine = _read(Path(steps["eval-seeds"]["outputs"]["metrics"]))
    pseudo = _read(Path(steps["eval-masks"]["outputs"]["metrics"]))
    final = _read(Path(steps["eval"]["outputs"]["metrics"]))
    pseudo_dir = Path(steps["pseudo-masks"]["outputs"]["seeds"])
    eval_split = final["split"]
    val = build_dataset(cfg.data, eval_split)
    pred_dir = Path(steps["eval"]["outputs"]["dir"]) / "predictions" / "multi_scale"
    final_result = final["results"].get("multi_scale") or next(iter(final["results"].values()))
    metrics = {
        "what": "SemPLeS on the synthetic co-occurrence world with the shipped toy CLIP (a demonstration of the "
                "mechanism; not comparable to VOC numbers)",
        "config": config, "output": str(out_dir), "config_sha256": config_fingerprint(cfg),
        "seeds_after_match": _seed_summary(seeds_match, names, split),
        "seeds_after_refine": _seed_summary(seeds_refine, names, split),
        "control_untrained_prompts": _seed_summary(seeds_control, names, split),
        "pseudo_masks": {"split": split, "method": cfg.pseudo.method, "miou": pseudo["miou"],
                         "per_class_iou": _per_class_iou(pseudo, names),
                         "leak": _leak_of_masks(train, pseudo_dir).to_dict(names)},
        "final": {"split": eval_split, "model": cfg.segment.model.name, "miou": final_result["miou"],
                  "per_class_iou": _per_class_iou(final_result, names),
                  "leak": _leak_of_masks(val, pred_dir).to_dict(names)},
        "threshold_note": "seed thresholds are chosen on the training split's ground truth (oracle, as in the paper)",
    }
    reference = reference_for(cfg)
    metrics["reference"] = reference
    metrics["verdict"] = verdict(metrics, reference)
    report_dir = out_dir / "figures"
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics["prompts"] = _prompt_probe(cfg, root, train, report_dir)
    _sample_grid(train, root, split, seeds_match["threshold"], seeds_refine["threshold"], pseudo_dir,
                 root / "segment", cfg, report_dir / "samples.png", cfg.pipeline.figures)
    stage_runs = {n: root / n for n in ("classify", "match", "prompt", "refine")}
    stage_runs["segment"] = root / "segment"
    plot_loss_curves(stage_runs, report_dir / "loss_curves.png")
    plot_threshold_curves(report_dir / "threshold_curves.png",
                          {"after match": seeds_match["curve"], "after refine": seeds_refine["curve"],
                           "untrained prompts": seeds_control["curve"]})
    timings["report"] = round(time.perf_counter() - t2, 1)
    timings["total"] = round(time.perf_counter() - t0, 1)
    metrics["seconds"] = timings
    atomic_write_json(out_dir / "metrics.json", metrics)
    from semples.report.demo_html import demo_report

    atomic_write_text(out_dir / "report.html", demo_report(metrics, names, report_dir, cfg))
    log.info("demo finished in %.0f s -> %s", timings["total"], out_dir / "report.html")
    return metrics
