"""`semples demo`: the real SemPLeS chain on the synthetic co-occurrence world with the shipped toy CLIP.

No argument, no network, about 10 minutes on 2 CPU cores (preset ``synth_demo``):

    classify -> match -> prompt -> refine      (semples run, step train)
    cams + eval-seeds after match AND after refine, leak rates of both
    pseudo masks (CRF) -> eval-masks -> train-seg -> eval on val
    report.html + metrics.json

The report shows the metrics tables (seed mIoU after match and after refine, pseudo-mask mIoU, final mIoU, per
class, and the leak rate: the share of each class's associated-background pixels labelled as that class), a figure
grid (image | ground truth | CAM after match | CAM after refine | pseudo mask | prediction), what each learned
background prompt looks at (similarity heat maps over images) and which background captions it is nearest to
(paper Fig. 5), and the loss curves. Numbers come from a toy world and a toy CLIP: they show the mechanism, they
are not comparable to VOC.
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


def _leak_of_seeds(dataset, cams_dir: Path, threshold: float):
    from semples.infer.cam_io import cam_path, load_cam
    from semples.metrics import LeakRate
    from semples.metrics.sweep import seed_labels

    leak = LeakRate(dataset.class_background)
    for i, image_id in enumerate(dataset.ids):
        cams, classes = load_cam(cam_path(cams_dir, image_id))
        leak.update(seed_labels(cams, threshold, classes), dataset.load_mask(i), dataset.background_map(i),
                    dataset.labels(i))
    return leak


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
            sims = patch_similarity(clip, img, torch.stack([u_fg[k], u_bg[k]]))
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
    t1 = time.perf_counter()
    # seeds of the match result, to compare with refine's (the run's cams step made refine's)
    from semples.steps import cams as cams_step
    from semples.steps import seeds as seeds_step

    match_cams, match_eval = root / "cams_match" / split, root / "eval_seeds_match" / split
    cams_step.run(pipe.cfg, root / "match", split=split, out=match_cams, force=force, progress=False)
    seeds_step.run(pipe.cfg, match_cams, split=split, out=match_eval, samples=0, progress=False)
    timings["match seeds"] = round(time.perf_counter() - t1, 1)

    from semples.data import build_dataset
    from semples.report.curves import plot_loss_curves, plot_threshold_curves

    t2 = time.perf_counter()
    train = build_dataset(cfg.data, split)
    names = list(train.classes.names)
    seeds_match = _read(match_eval / "metrics.json")
    seeds_refine = _read(Path(steps["eval-seeds"]["outputs"]["metrics"]))
    pseudo = _read(Path(steps["eval-masks"]["outputs"]["metrics"]))
    final = _read(Path(steps["eval"]["outputs"]["metrics"]))
    pseudo_dir = Path(steps["pseudo-masks"]["outputs"]["seeds"])
    eval_split = final["split"]
    val = build_dataset(cfg.data, eval_split)
    pred_dir = Path(steps["eval"]["outputs"]["dir"]) / "predictions" / "multi_scale"
    leak = {
        "seeds_match": _leak_of_seeds(train, match_cams, seeds_match["threshold"]).to_dict(names),
        "seeds_refine": _leak_of_seeds(train, Path(steps["cams"]["outputs"]["seeds"]),
                                       seeds_refine["threshold"]).to_dict(names),
        "pseudo_masks": _leak_of_masks(train, pseudo_dir).to_dict(names),
        "final": _leak_of_masks(val, pred_dir).to_dict(names),
    }
    final_result = final["results"].get("multi_scale") or next(iter(final["results"].values()))
    metrics = {
        "what": "SemPLeS on the synthetic co-occurrence world with the shipped toy CLIP (a demonstration of the "
                "mechanism; not comparable to VOC numbers)",
        "config": config, "output": str(out_dir),
        "seeds_after_match": {"split": split, "miou": seeds_match["miou"], "threshold": seeds_match["threshold"],
                              "per_class_iou": _per_class_iou(seeds_match, names), "leak": leak["seeds_match"]},
        "seeds_after_refine": {"split": split, "miou": seeds_refine["miou"], "threshold": seeds_refine["threshold"],
                               "per_class_iou": _per_class_iou(seeds_refine, names), "leak": leak["seeds_refine"]},
        "pseudo_masks": {"split": split, "method": cfg.pseudo.method, "miou": pseudo["miou"],
                         "per_class_iou": _per_class_iou(pseudo, names), "leak": leak["pseudo_masks"]},
        "final": {"split": eval_split, "model": cfg.segment.model.name, "miou": final_result["miou"],
                  "per_class_iou": _per_class_iou(final_result, names), "leak": leak["final"]},
        "threshold_note": "seed thresholds are chosen on the training split's ground truth (oracle, as in the paper)",
    }
    report_dir = out_dir / "figures"
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics["prompts"] = _prompt_probe(cfg, root, train, report_dir)
    _sample_grid(train, root, split, seeds_match["threshold"], seeds_refine["threshold"], pseudo_dir,
                 root / "segment", cfg, report_dir / "samples.png", cfg.pipeline.figures)
    stage_runs = {n: root / n for n in ("classify", "match", "prompt", "refine")}
    stage_runs["segment"] = root / "segment"
    plot_loss_curves(stage_runs, report_dir / "loss_curves.png")
    plot_threshold_curves(report_dir / "threshold_curves.png",
                          {"after match": seeds_match["curve"], "after refine": seeds_refine["curve"]})
    timings["report"] = round(time.perf_counter() - t2, 1)
    timings["total"] = round(time.perf_counter() - t0, 1)
    metrics["seconds"] = timings
    atomic_write_json(out_dir / "metrics.json", metrics)
    from semples.report.demo_html import demo_report

    atomic_write_text(out_dir / "report.html", demo_report(metrics, names, report_dir, cfg))
    log.info("demo finished in %.0f s -> %s", timings["total"], out_dir / "report.html")
    return metrics

