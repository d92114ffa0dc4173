"""`semples eval-masks`: mIoU of a folder of label PNGs (pseudo masks or predictions) against the ground truth."""

from __future__ import annotations

import argparse

from semples.commands.train import add_config_arguments, load_cli_config
from semples.errors import UsageError

HELP = "evaluate a folder of label PNGs (pseudo masks, predictions): mIoU, per-class IoU / precision / recall"
DESCRIPTION = """\
Score <masks>/<image id>.png (0 background, 1..K classes, 255 = no label) against the split's ground-truth masks
with the same confusion-matrix code as eval-seeds: IoU over background + K classes, ground truth 255 ignored.
Reported per class: IoU, precision, recall; overall: mIoU, pixel accuracy, the false-positive rate on background
pixels. Predicted 255 counts as a miss; a second view leaves those pixels out ("labelled pixels only", what an
ignore band buys). mIoU, mean precision and mean recall are means over the classes present in the ground truth
or the prediction (a class absent from both is left out; precision of a class never predicted and recall of a
class predicted but absent from the ground truth count as 0).

  semples eval-masks --config voc_semples --masks runs/voc_semples/pseudo_masks/crf/train
  semples eval-masks --config voc_semples --masks runs/voc_semples/segment/predictions --split val --out DIR

The split defaults to the one recorded in the folder's manifest.json (pseudo-masks writes it), else
data.train_split. Output (default: the masks folder itself): metrics.json and metrics.md."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--masks", metavar="DIR", required=False, help="folder of <image id>.png label maps (required)")
    p.add_argument("--split", help="dataset split (default: the folder's manifest, else data.train_split)")
    p.add_argument("--out", metavar="DIR", help="where metrics.json / metrics.md go (default: the masks folder)")
    p.add_argument("--skip-missing", action="store_true",
                   help="score the images that have a PNG (default: every image of the split must have one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if not args.masks:
        raise UsageError("pass --masks DIR (see semples eval-masks --help)")
    cfg = load_cli_config(args)
    from semples import steps

    r = steps.masks.run(cfg, args.masks, split=args.split, out=args.out, skip_missing=args.skip_missing,
                        progress=not args.no_progress)
    print(f"eval-masks: {r.dataset} {r.split}, {r.num_images} images: mIoU {100 * (r.miou or 0):.2f} (classes in "
          f"ground truth or prediction), "
          f"bg false-positive rate {100 * (r.bg_false_positive_rate or 0):.1f}%, "
          f"{100 * r.ignored_fraction:.1f}% predicted ignore -> {r.out_dir / 'metrics.json'}")
    return 0
