"""`semples figures`: sample grids (image | ground truth | seed heat maps | seed / pseudo mask | prediction)."""

from __future__ import annotations

import argparse

from semples.commands.train import add_config_arguments, load_cli_config

HELP = "draw sample grids: image | ground truth | seed heat maps | pseudo mask | prediction"
DESCRIPTION = """\
A PNG grid for a sample of images of a split, one row per image: image | ground truth | seed heat maps (the max
over classes, or one panel per labelled class) | seed mask at a background threshold | pseudo mask | prediction.
Every column after the image is optional: give the folders you have. Label folders hold <image id>.png
(uint8 labels 0..K, 255 ignore, palette or grayscale); CAM folders are those of `semples cams`.

  semples figures --config voc_semples --cams runs/voc_semples/cams/train --eval runs/voc_semples/eval_seeds/train
  semples figures --config voc_semples --cams DIR --pseudo-masks DIR --predictions DIR --num 12 --out grid.png
  semples figures --config voc_semples --ids 2007_000032 2007_000039 --cams DIR --heatmaps per-class

--eval takes the threshold of an eval-seeds folder (its metrics.json); --threshold sets one directly."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--split", help="dataset split (default: cams.split, else data.eval_split)")
    p.add_argument("--cams", metavar="DIR", help="CAM folder (seed heat map column)")
    p.add_argument("--eval", metavar="DIR", help="eval-seeds folder: its threshold draws the seed-mask column")
    p.add_argument("--threshold", type=float, metavar="T", help="background threshold of the seed-mask column")
    p.add_argument("--pseudo-masks", metavar="DIR", help="folder of pseudo-mask PNGs <id>.png")
    p.add_argument("--predictions", metavar="DIR", help="folder of prediction PNGs <id>.png")
    p.add_argument("--heatmaps", choices=["max", "per-class"], default="max",
                   help="one heat map (max over classes) or one per labelled class")
    p.add_argument("--num", type=int, default=8, help="number of images (random, reproducible with --seed)")
    p.add_argument("--ids", nargs="+", metavar="ID", help="these images instead of a random sample")
    p.add_argument("--seed", type=int, default=0, help="sample seed")
    p.add_argument("--max-side", type=int, default=256, help="panel size: longer side in pixels")
    p.add_argument("--out", metavar="PNG", help="output file (default: <output_dir>/<experiment>/figures/"
                                                "samples_<split>.png)")


def run(args: argparse.Namespace) -> int:
    from semples import steps

    cfg = load_cli_config(args)
    r = steps.figures.run(cfg, split=args.split, cams=args.cams, eval_dir=args.eval, threshold=args.threshold,
                          pseudo_masks=args.pseudo_masks, predictions=args.predictions, heatmaps=args.heatmaps,
                          num=args.num, ids=args.ids, seed=args.seed, max_side=args.max_side, out=args.out)
    print(f"figures: {len(r.indices)} images -> {r.path}")
    return 0
