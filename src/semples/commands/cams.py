"""`semples cams`: multi-scale + flip seeds (CAMs) of a trained mask generator over a split."""

from __future__ import annotations

import argparse

from semples.commands.train import add_config_arguments, load_cli_config
from semples.errors import UsageError

HELP = "write multi-scale + flip seeds (CAMs) of a trained mask generator, one file per image"
DESCRIPTION = """\
Seeds (CAMs) of a trained mask generator S over a dataset split (METHOD.md §1.7): each scale of cams.scales
(VOC 1.0 1.2; COCO 0.8 1.0 1.2) and its horizontal flip, every map upsampled to the full image size, classes
absent from the image label dropped (zero), views summed, each class map min-max normalised.

  semples cams --config voc_semples --generator runs/voc_semples/refine
  semples cams --config voc_semples --generator runs/voc_semples/refine --split val --limit 20
  semples cams --config coco_semples --generator runs/coco_semples/refine --set cams.batch_size=16

Output: <output_dir>/<experiment>/cams/<split>/<image id>.npz (compressed float16 maps (P, H, W) of the P classes
in the label + their 0-based class indices; semples.infer.cam_io reads them) and manifest.json (generator path
and sha256, scales, split, counts; semples.runs). Files are written atomically; a re-run skips images whose file
exists, so an interrupted run continues where it stopped and gives the same files. A folder never mixes CAMs of
different generators or settings (the error names what differs; --force overwrites). Several GPUs or processes:
accelerate launch -m semples cams ... (or torchrun) splits the images.
Next step: semples eval-seeds --config ... (same config)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--generator", metavar="RUN", required=False,
                   help="run folder (or checkpoint.pt) of the trained mask generator; 'random' = random weights "
                        "(plumbing tests only)")
    p.add_argument("--split", help="dataset split (default: cams.split, else data.eval_split)")
    p.add_argument("--out", metavar="DIR", help="CAM folder (default: <output_dir>/<experiment>/cams/<split>)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images of the split (quick looks)")
    p.add_argument("--force", action="store_true", help="recompute and overwrite every file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if not args.generator:
        raise UsageError("pass --generator RUN_FOLDER (or 'random' for random weights)")
    cfg = load_cli_config(args)
    from semples import steps

    source = None if args.generator == "random" else args.generator
    r = steps.cams.run(cfg, source, split=args.split, out=args.out, limit=args.limit, force=args.force,
                       progress=not args.no_progress)
    rate = f", {r.images_per_second:.2f} img/s" if r.computed else ""
    print(f"cams: wrote {r.written}, skipped {r.skipped} (already there), failed {len(r.failed)}{rate}; "
          f"{r.present}/{r.split_images} images of {r.split} done -> {r.out_dir}")
    return 0
