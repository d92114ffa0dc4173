"""`semples eval-seg`: evaluate a trained segmentation model (a train-seg run folder) on a split."""

from __future__ import annotations

import argparse

from semples.errors import UsageError

HELP = "evaluate a trained segmentation model: single-/multi-scale (+flip), optional CRF, per-class mIoU"
DESCRIPTION = """\
Evaluate the last checkpoint of a `semples train-seg` run on a split with ground-truth masks: single scale,
multi-scale + flip (segment.eval.scales, segment.eval.flip) and, with --crf, dense CRF on the multi-scale
probabilities. The architecture comes from the checkpoint; the config defaults to the run folder's config.yaml
(--config replaces it, --set overrides either). Output (default <run folder>/eval/<split>/): metrics.json and
metrics.md with per-class IoU / precision / recall (mIoU and the means: over the classes present in the ground
truth or the prediction, absent from both = left out); --save-predictions also writes label PNGs (the pseudo-mask
format, so `semples eval-masks` reads them) under predictions/<setting>/.

  semples eval-seg --checkpoint runs/voc_semples/segment
  semples eval-seg --checkpoint runs/voc_semples/segment --split val --set "segment.eval.scales=[1.0]" --crf
  semples eval-seg --checkpoint runs/voc_semples/segment --set segment.eval.mode=slide --save-predictions

Re-running with the same checkpoint and settings returns the stored metrics (--force evaluates again).
Several GPUs: `accelerate launch --multi_gpu --num_processes N -m semples eval-seg ...` (images are sharded,
confusion matrices summed)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="RUN", help="segment run folder or its checkpoint.pt (required)")
    p.add_argument("--config", "-c", metavar="YAML",
                   help="experiment config (YAML file or preset); default: the run folder's config.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set segment.eval.scales=[0.75,1.0,1.25] (repeatable)")
    p.add_argument("--split", help="split to evaluate (default: segment.eval.split, then data.eval_split)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <run folder>/eval/<split>)")
    p.add_argument("--save-predictions", action="store_true", help="write predictions as label PNGs")
    p.add_argument("--crf", action="store_true", help="also report dense-CRF post-processed predictions")
    p.add_argument("--force", action="store_true", help="evaluate again even if matching metrics exist")


def run(args: argparse.Namespace) -> int:
    if not args.checkpoint:
        raise UsageError("pass --checkpoint RUN (see semples eval-seg --help)")
    from semples import steps
    from semples.commands.train_seg import print_report
    from semples.config import load_config
    from semples.engine import make_accelerator
    from semples.utils.checkpoint_io import resolve_checkpoint

    ckpt = resolve_checkpoint(args.checkpoint)
    source = args.config
    if source is None and (ckpt.parent / "config.yaml").is_file():  # the config the model was trained with
        source = ckpt.parent / "config.yaml"
    cfg = load_config(source, args.overrides)
    acc = make_accelerator(cfg.device, cfg.mixed_precision, cfg.deterministic)
    report = steps.segment.evaluate(cfg, ckpt, split=args.split, out=args.out,
                                    save_predictions=args.save_predictions or None, crf=args.crf or None,
                                    force=args.force, accelerator=acc)
    if acc.is_main_process:
        print_report(report)
    return 0
