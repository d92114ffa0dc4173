"""`semples pseudo-masks`: seeds (CAM files) -> pseudo masks (label PNGs) by dense CRF, region voting or threshold."""

from __future__ import annotations

import argparse
import dataclasses

from semples.commands.train import add_config_arguments, load_cli_config

HELP = "turn seeds (CAMs) into pseudo masks: threshold + dense CRF, region voting (SAM/superpixels), or threshold"
DESCRIPTION = """\
Pseudo masks from seeds (METHOD.md §1.7 and §2), one label PNG per image: 0 background, 1..K classes, 255 ignore.

Methods (--method, or pseudo.method):
  crf          background threshold t + dense CRF on the labels (pydensecrf2; reference values: gt_prob 0.7,
               Gaussian sxy 4 compat 3, bilateral sxy 83 srgb 5 compat 3, 10 iterations; pseudo.crf.*)
  region-vote  SAMS region voting: each class-agnostic region takes one label from its mean CAM scores
               (min-max per class across regions, background (1 - max)^p, p = pseudo.region_vote.bg_power);
               regions come from SAM's automatic mask generator when --sam-checkpoint is given (32 points per
               side), from superpixels otherwise (--superpixels slic | felzenszwalb; pseudo.superpixels.*)
  threshold    argmax over (t, CAM_1..CAM_P), no refinement

  semples pseudo-masks --config voc_semples --cams runs/voc_semples/cams/train \\
      --threshold-from runs/voc_semples/eval_seeds/train/metrics.json
  semples pseudo-masks --config voc_semples --cams DIR --method region-vote --sam-checkpoint sam_vit_h_4b8939.pth
  semples pseudo-masks --config voc_semples --cams DIR --method region-vote --superpixels felzenszwalb
  semples pseudo-masks --config voc_semples --cams DIR --method threshold --threshold 0.4 --ignore-margin 0.1

The background threshold t (crf, threshold) is --threshold, or the best t of an eval-seeds metrics.json
(--threshold-from; its best_on_curve.threshold), or pseudo.threshold. Optional ignore band: --ignore-margin M
(top score - runner-up < M -> 255) and --ignore-below C (top score < C -> 255), off by default.

Output (default <output_dir>/<experiment>/pseudo_masks/<method>/<split>/): <id>.png written atomically and
manifest.json (method, parameters, t and its source, CAM folder, counts). A re-run skips existing PNGs; a folder
made with other parameters is refused unless --force. CRF and superpixels run in pseudo.workers processes;
SAM runs in this process on config `device` (fp32). Next step: semples eval-masks --masks OUT (same config)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--cams", metavar="DIR",
                   help="CAM folder of `semples cams` (default: pseudo.cams_dir, else the cams folder of the split)")
    p.add_argument("--split", help="dataset split (default: pseudo.split, else the CAM folder's manifest, else "
                                   "data.train_split)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: pseudo.out_dir, else <output_dir>/<experiment>/pseudo_masks/"
                        "<method>/<split>)")
    p.add_argument("--method", choices=["crf", "region-vote", "threshold"], help="default: pseudo.method (crf)")
    t = p.add_mutually_exclusive_group()
    t.add_argument("--threshold", type=float, metavar="T", help="background score t for crf / threshold")
    t.add_argument("--threshold-from", metavar="PATH",
                   help="eval-seeds metrics.json (or its folder): use its best threshold")
    p.add_argument("--sam-checkpoint", metavar="PATH",
                   help="SAM weights file: region voting over SAM masks (sam_vit_h_4b8939.pth etc.)")
    p.add_argument("--sam-model", choices=["auto", "vit_b", "vit_l", "vit_h"],
                   help="SAM variant (default: pseudo.sam.model_type; auto = from the file name)")
    p.add_argument("--superpixels", choices=["slic", "felzenszwalb"],
                   help="superpixel method for region voting without SAM (default: pseudo.superpixels.method)")
    p.add_argument("--bg-power", type=float, metavar="P",
                   help="region voting: background score exponent (0.6 coarse / 0.7 fine seeds)")
    p.add_argument("--ignore-margin", type=float, metavar="M", help="pixels with top - runner-up < M -> 255")
    p.add_argument("--ignore-below", type=float, metavar="C", help="pixels with top score < C -> 255")
    p.add_argument("--workers", type=int, metavar="N", help="processes (default: pseudo.workers)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images of the split")
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out images without a CAM file (default: every image must have one)")
    p.add_argument("--force", action="store_true",
                   help="remake every PNG (also in a folder made with other parameters)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _pseudo_config(cfg, args: argparse.Namespace):
    """cfg.pseudo with the command-line flags applied."""
    pc = cfg.pseudo
    top: dict = {}
    if args.method:
        top["method"] = args.method
    if args.workers is not None:
        top["workers"] = args.workers
    sam = {}
    if args.sam_checkpoint:
        sam["checkpoint"] = args.sam_checkpoint
    if args.sam_model:
        sam["model_type"] = args.sam_model
    if sam:
        top["sam"] = dataclasses.replace(pc.sam, **sam)
    if args.sam_checkpoint and pc.region_vote.source == "superpixels":
        top["region_vote"] = dataclasses.replace(pc.region_vote, source="sam")
    if args.superpixels:
        top["superpixels"] = dataclasses.replace(pc.superpixels, method=args.superpixels)
        if not args.sam_checkpoint:
            top["region_vote"] = dataclasses.replace(top.get("region_vote", pc.region_vote), source="superpixels")
    if args.bg_power is not None:
        top["region_vote"] = dataclasses.replace(top.get("region_vote", pc.region_vote), bg_power=args.bg_power)
    ignore = {}
    if args.ignore_margin is not None:
        ignore["margin"] = args.ignore_margin
    if args.ignore_below is not None:
        ignore["min_confidence"] = args.ignore_below
    if ignore:
        top["ignore"] = dataclasses.replace(pc.ignore, **ignore)
    return dataclasses.replace(pc, **top) if top else pc


def run(args: argparse.Namespace) -> int:
    import logging

    from semples import steps

    cfg = load_cli_config(args)
    pc = _pseudo_config(cfg, args)
    if pc.method != "region-vote" and (args.sam_checkpoint or args.superpixels or args.bg_power is not None):
        logging.getLogger("semples.commands.pseudo_masks").warning(
            "--sam-checkpoint / --superpixels / --bg-power only apply to --method region-vote (method is %s)",
            pc.method)
    r = steps.pseudo_masks.run(cfg, args.cams, split=args.split, out=args.out, pseudo=pc, threshold=args.threshold,
                               threshold_from=args.threshold_from, skip_missing=args.skip_missing, limit=args.limit,
                               force=args.force, progress=not args.no_progress)
    what = r.method + (f" over {r.region_source} regions" if r.method == "region-vote" else "")
    t_text = f", t = {r.threshold:.2f} ({r.threshold_source})" if r.threshold is not None and \
        r.method != "region-vote" else ""
    print(f"pseudo-masks: {r.dataset} {r.split}, {what}{t_text}: {r.written} written, {r.skipped} already there, "
          f"{len(r.missing_cams)} without CAMs ({r.images_per_second:.2f} images/s) -> {r.out_dir}")
    return 0
