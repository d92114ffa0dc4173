"""`semples eval-masks`: mIoU of a folder of label PNGs (pseudo masks or predictions) against the ground truth."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from semples.commands.train import add_config_arguments, load_cli_config
from semples.errors import UsageError

HELP = "evaluate a folder of label PNGs (pseudo masks, predictions): mIoU, per-class IoU / precision / recall"
DESCRIPTION = """\
Score <masks>/<image id>.png (0 background, 1..K classes, 255 = no label) against the split's ground-truth masks
with the same confusion-matrix code as eval-seeds: IoU over background + K classes, ground truth 255 ignored.
Reported per class: IoU, precision, recall; overall: mIoU, pixel accuracy, the false-positive rate on background
pixels. Predicted 255 counts as a miss; a second view leaves those pixels out ("labelled pixels only", what an
ignore band buys).

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
    from semples.data import build_dataset
    from semples.infer.mask_eval import evaluate_mask_folder
    from semples.utils.checkpoint_io import atomic_write_json, atomic_write_text

    masks_dir = Path(args.masks)
    manifest = {}
    if (masks_dir / "manifest.json").is_file():
        try:
            manifest = json.loads((masks_dir / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = {}
    split = args.split or manifest.get("split") or cfg.data.train_split
    dataset = build_dataset(cfg.data, split)
    ev = evaluate_mask_folder(dataset, masks_dir, skip_missing=args.skip_missing, progress=not args.no_progress)
    out = Path(args.out) if args.out else masks_dir
    s = ev.scores
    metrics = {
        "format": "semples-mask-metrics", "version": 1,
        "what": "label PNGs vs ground truth; IoU over background + K classes, ground truth 255 ignored, "
                "predicted 255 counted as a miss (labelled_pixels_only: left out)",
        "dataset": dataset.name, "split": split, "masks_dir": str(masks_dir),
        "method": manifest.get("method"), "parameters": manifest.get("parameters"),
        "miou": ev.to_dict()["all_pixels"]["miou"],
        **ev.to_dict(),
        "confusion_matrix": s.matrix.tolist(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    title = f"{dataset.name} {split}: {masks_dir}" + (f" ({manifest['method']})" if manifest.get("method") else "")
    atomic_write_text(out / "metrics.md", ev.markdown(title))
    atomic_write_json(out / "metrics.json", metrics)
    print(f"eval-masks: {dataset.name} {split}, {ev.num_images} images: mIoU {100 * (s.miou or 0):.2f}, "
          f"bg false-positive rate {100 * (s.bg_false_positive_rate or 0):.1f}%, "
          f"{100 * ev.ignored_fraction:.1f}% predicted ignore -> {out / 'metrics.json'}")
    return 0
