"""`semples eval-seeds`: mIoU of seeds (CAMs) over a grid of background thresholds."""

from __future__ import annotations

import argparse

from semples.commands.train import add_config_arguments, load_cli_config

HELP = "evaluate seeds (CAMs): background-threshold sweep, mIoU curve, per-class table"
DESCRIPTION = """\
Evaluate a CAM folder against the split's ground truth (METHOD.md §1.7): prepend a constant background score t,
argmax, mIoU over background + K classes (ground truth 255 ignored), for every t of seeds.thresholds
(start, stop, step; default 0.00..0.95 step 0.01) in one pass over the data. Reports the whole curve, the best t,
the per-class IoU / precision / recall and the false-positive rate on background pixels at that t.
mIoU, mean precision and mean recall are means over the classes present in the ground truth or the prediction
(a class absent from both is left out; precision of a class never predicted and recall of a class predicted but
absent from the ground truth count as 0).

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


def run(args: argparse.Namespace) -> int:
    from semples import steps

    cfg = load_cli_config(args)
    r = steps.seeds.run(cfg, args.cams, split=args.split, out=args.out, threshold=args.threshold,
                        allow_missing=args.allow_missing, limit=args.limit, samples=args.samples,
                        progress=not args.no_progress)
    m = r.metrics
    best = m["best_on_curve"]
    print(f"eval-seeds: {r.dataset} {r.split}, {m['images']} images: mIoU {100 * (m['miou'] or 0):.2f} "
          f"(classes in ground truth or prediction) "
          f"at t = {r.threshold:.2f} ({r.selection}); best on curve t = {best['threshold']:.2f}; "
          f"bg false-positive rate {100 * (m['bg_false_positive_rate'] or 0):.1f}% -> {r.out_dir}")
    return 0
