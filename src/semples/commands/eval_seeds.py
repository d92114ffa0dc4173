"""`semples eval-seeds`: mIoU of seeds (CAMs) over a grid of background thresholds."""

from __future__ import annotations

import argparse
from pathlib import Path

from semples.commands.train import add_config_arguments, load_cli_config

HELP = "evaluate seeds (CAMs): background-threshold sweep, mIoU curve, per-class table"
DESCRIPTION = """\
Evaluate a CAM folder against the split's ground truth (METHOD.md §1.7): prepend a constant background score t,
argmax, mIoU over background + K classes (ground truth 255 ignored), for every t of seeds.thresholds
(start, stop, step; default 0.00..0.95 step 0.01) in one pass over the data. Reports the whole curve, the best t,
the per-class IoU / precision / recall and the false-positive rate on background pixels at that t.

  semples eval-seeds --config voc_semples                      (CAMs from the default folder of `semples cams`)
  semples eval-seeds --config voc_semples --cams runs/x/cams/train --out runs/x/eval_seeds/train
  semples eval-seeds --config voc_semples --split val --threshold 0.42      (t chosen elsewhere, e.g. on train)

By default the reported t is the best one on THIS split's ground truth, as in the paper (an oracle choice; the
outputs say so). To report a split with a t picked on another split, pass --threshold.

Output (default <output_dir>/<experiment>/eval_seeds/<split>/): metrics.json (curve, best t, per-class scores,
confusion matrix), metrics.md (Markdown tables), threshold_curve.png and samples.png (image | ground truth |
seed heat map | seed mask at t for a few images; --samples 0 skips it)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--cams", metavar="DIR", help="CAM folder (default: the `semples cams` folder of the config)")
    p.add_argument("--split", help="dataset split (default: the CAM folder's manifest, else cams.split or "
                                   "data.eval_split)")
    p.add_argument("--out", metavar="DIR", help="eval folder (default: <output_dir>/<experiment>/eval_seeds/<split>)")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="report at this background threshold (chosen elsewhere) instead of the best on this split")
    p.add_argument("--allow-missing", action="store_true",
                   help="evaluate the images that have a CAM file (default: every image of the split must have one)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images of the split")
    p.add_argument("--samples", type=int, default=8, metavar="N", help="images in samples.png (0: no figure)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def default_eval_dir(cfg, split: str) -> Path:
    if cfg.seeds.out_dir:
        return Path(cfg.seeds.out_dir)
    return Path(cfg.output_dir) / cfg.experiment / "eval_seeds" / split


def run(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args)
    from semples.data import build_dataset
    from semples.infer.cam_io import cam_path
    from semples.infer.cams import cams_split, default_cams_dir, read_manifest
    from semples.metrics.sweep import threshold_grid
    from semples.report.figures import pick_samples, write_sample_grid
    from semples.report.seeds import evaluate_seeds, write_seed_report

    split = args.split
    if args.cams:
        cams_dir = Path(args.cams)
        manifest = read_manifest(cams_dir)
        split = split or (manifest or {}).get("data", {}).get("split") or cams_split(cfg)
    else:
        split = split or cams_split(cfg)
        cams_dir = default_cams_dir(cfg, split)
        manifest = read_manifest(cams_dir)
    if not cams_dir.is_dir():
        raise FileNotFoundError(f"{cams_dir}: no CAM folder (run `semples cams` first, or pass --cams DIR)")
    if manifest and manifest.get("data", {}).get("split") not in (None, split):
        print(f"semples eval-seeds: warning: {cams_dir} holds CAMs of split {manifest['data']['split']}, "
              f"evaluating against {split}")
    dataset = build_dataset(cfg.data, split)
    ev = evaluate_seeds(cams_dir, dataset, threshold_grid(*cfg.seeds.thresholds), threshold=args.threshold,
                        limit=args.limit, allow_missing=args.allow_missing, num_workers=cfg.seeds.num_workers,
                        progress=not args.no_progress)
    out = Path(args.out) if args.out else default_eval_dir(cfg, split)
    metrics = write_seed_report(out, ev, cams_dir=cams_dir, split=split, dataset_name=dataset.name,
                                cams_manifest=manifest)
    if args.samples > 0:
        n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
        with_cams = [i for i in range(n) if cam_path(cams_dir, dataset.ids[i]).is_file()]
        chosen = [with_cams[j] for j in pick_samples(len(with_cams), args.samples, cfg.seed)]
        write_sample_grid(out / "samples.png", dataset, chosen, cams_dir=cams_dir, threshold=ev.threshold,
                          title=f"seeds, {dataset.name} {split}, t = {ev.threshold:.2f}")
    best = metrics["best_on_curve"]
    print(f"eval-seeds: {dataset.name} {split}, {metrics['images']} images: mIoU {100 * (metrics['miou'] or 0):.2f} "
          f"at t = {ev.threshold:.2f} ({ev.selection}); best on curve t = {best['threshold']:.2f}; "
          f"bg false-positive rate {100 * (metrics['bg_false_positive_rate'] or 0):.1f}% -> {out}")
    return 0
