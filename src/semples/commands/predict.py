"""`semples predict`: a trained segmentation model (or a mask generator's seeds) on your own images."""

from __future__ import annotations

import argparse

from semples.errors import UsageError

HELP = "segment your own images with a trained model: index PNG, colour overlay and class areas per image"
DESCRIPTION = """\
Run a trained segmentation model (a `semples train-seg` run folder) — or, with --seeds, a mask generator's CAMs —
on your own images: files, folders (searched recursively) or glob patterns, of any size and mode (grayscale,
palette, RGBA, CMYK, 16-bit; EXIF-rotated as a viewer shows them). Per image <id> (its path under the folder
given, without the extension):

  <out>/masks/<id>.png      index PNG in the VOC palette (0 background, k = class k of the model)
  <out>/overlays/<id>.png   the image with every labelled pixel tinted in its class colour
  <out>/areas/<id>.json     pixels and fraction of the image per class present; <out>/areas.json: all images

  semples predict --model semples-demo/runs/synth_demo/segment --images photos/ --out preds/
  semples predict --model runs/voc_semples/segment --images "shots/*.jpg" --out preds/ --scales 0.75 1 1.25 --flip
  semples predict --model runs/voc_semples/segment --images a.jpg b.png --out preds/ --crf
  semples predict --seeds runs/voc_semples/refine --config voc_semples --images photos/ --out seeds/ --threshold 0.4

Images are resized so their longer side is at most --max-side for the model (predictions come back at the image's
own size). Default: one scale, no flip; --scales/--flip/--crf as in eval-seg. The config defaults to the run
folder's config.yaml (device, mixed precision, workers; --set overrides). Finished images are skipped (their
areas JSON exists; --force redoes them); a folder made by another model or other settings is refused. Several GPUs:
accelerate launch -m semples predict ... (or torchrun) splits the images. Masks go on to `semples export`."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="RUN", help="segment run folder (semples train-seg) or its checkpoint.pt")
    src.add_argument("--seeds", metavar="RUN", help="mask generator run folder: seeds (CAMs + background threshold)")
    p.add_argument("--images", nargs="+", metavar="PATH", help="image files, folders or glob patterns (required)")
    p.add_argument("--out", metavar="DIR", help="output folder (required)")
    p.add_argument("--config", "-c", metavar="YAML",
                   help="experiment config (YAML file or preset); default: the run folder's config.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set device=cpu (repeatable)")
    p.add_argument("--scales", nargs="+", type=float, default=[1.0], metavar="S", help="inference scales")
    p.add_argument("--flip", action="store_true", help="also average the horizontal flip of every scale")
    p.add_argument("--crf", action="store_true", help="dense-CRF post-processing (segmentation models)")
    p.add_argument("--max-side", type=int, default=1024, metavar="PX",
                   help="resize images whose longer side is larger to this for the model (0: never)")
    p.add_argument("--batch-size", type=int, default=4, help="images of one size per forward")
    p.add_argument("--slide", action="store_true", help="sliding-window inference (segment.eval crop_size, stride)")
    p.add_argument("--threshold", type=float, default=0.5, help="seeds: background score t")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="seeds: the classes to segment (default: those the generator finds in each image)")
    p.add_argument("--force", action="store_true", help="recompute every image")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    source = args.model or args.seeds
    if not source:
        raise UsageError("pass --model RUN (a train-seg run folder) or --seeds RUN (a mask generator run folder)")
    if not args.images or not args.out:
        raise UsageError("pass --images PATH... and --out DIR (see semples predict --help)")
    from semples import steps
    from semples.config import load_config
    from semples.infer.predict import PredictSettings
    from semples.utils.checkpoint_io import resolve_checkpoint

    ckpt = resolve_checkpoint(source)
    config = args.config
    if config is None and (ckpt.parent / "config.yaml").is_file():  # the config the model was trained with
        config = ckpt.parent / "config.yaml"
    cfg = load_config(config, args.overrides)
    ev = cfg.segment.eval
    settings = PredictSettings(scales=tuple(args.scales), flip=args.flip, crf=args.crf,
                               crf_params=dict(ev.crf_params), mode="slide" if args.slide else "whole",
                               crop_size=ev.crop_size, stride=ev.stride, max_side=args.max_side,
                               batch_size=args.batch_size, mixed_precision=cfg.mixed_precision,
                               threshold=args.threshold)
    r = steps.predict.run(cfg, ckpt, args.images, args.out, seeds=bool(args.seeds), settings=settings,
                          class_names=args.classes, force=args.force, progress=not args.no_progress)
    rate = f", {r.images_per_second:.2f} img/s" if r.computed else ""
    print(f"predict: wrote {r.written}, skipped {r.skipped} (already there), failed {len(r.failed)}{rate}; "
          f"{r.images} images -> {r.out_dir}")
    return 0
