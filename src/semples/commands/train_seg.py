"""`semples train-seg`: train the final segmentation model on pseudo masks, then evaluate it."""

from __future__ import annotations

import argparse

from semples.commands.train import add_config_arguments, load_cli_config
from semples.errors import UsageError

HELP = "train the final segmentation model (DeepLabV3+ or any SMP model, Mask2Former, Segmenter) on pseudo masks"
DESCRIPTION = """\
Train the final segmentation model on pseudo masks (<dir>/<image id>.png from `semples pseudo-masks`) of the
images of segment.train_split (default: the split in <dir>/manifest.json, else data.train_split), through the
same engine as the SemPLeS stages (checkpoint every epoch, --resume, several GPUs), then evaluate the last
checkpoint on a split with ground truth (segment.eval.split, default data.eval_split): single scale, multi-scale
+ flip (segment.eval.scales), and dense CRF on top with --crf. Output: <output_dir>/<experiment>/segment/
(checkpoint.pt, metrics.jsonl, manifest.json) and segment/eval/<split>/metrics.json + metrics.md (per-class IoU).

  semples train-seg --config voc_semples --pseudo-masks runs/voc_semples/pseudo_masks/crf/train_aug
  semples train-seg --config voc_semples_deeplab --pseudo-masks DIR        (DeepLabV3+ R101, DeepLab's SGD recipe)
  semples train-seg --config voc_semples --pseudo-masks DIR --set segment.model.arch=segmenter_mask
  semples train-seg --config voc_semples --pseudo-masks DIR --resume          (continue an interrupted run)
  accelerate launch --multi_gpu --num_processes 4 -m semples train-seg --config voc_semples --pseudo-masks DIR

Models (segment.model.arch): any segmentation_models_pytorch architecture on any timm encoder (deeplabv3plus on
tu-resnet101 at output stride 16 is the default; unet, upernet, segformer ...; segment.model.encoder), mask2former
(HF transformers; the voc_semples preset: Swin-L, the paper's), segmenter_linear / segmenter_mask (DeiT-S/16).
Optimisation defaults: AdamW, lr 1e-4, poly decay, batch 16, 512 crops, random scale 0.5-2.0 + flip, 50 epochs
(segment.*; segment.optimizer=sgd and segment.backbone_lr_mult for DeepLab's recipe). Offline machines pass
weights explicitly: --set segment.model.backbone_checkpoint=/weights/resnet101.pth, or for Mask2Former
--set segment.model.hf_weights=/weights/swin-l (a local folder); segment.model.pretrained=false: random weights,
tests only. --set log.tensorboard=true adds TensorBoard curves and sample predictions. Evaluate again, or another
split: `semples eval-seg --checkpoint <run folder>`; your own images: `semples predict --model <run folder>`."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pseudo-masks", metavar="DIR", help="folder of <image id>.png pseudo masks (required)")
    add_config_arguments(p)
    p.add_argument("--run-dir", metavar="DIR", help="run folder (default: <output_dir>/<experiment>/segment)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--force", action="store_true", help="retrain (and re-evaluate) even if the run folder is done")
    p.add_argument("--skip-missing", action="store_true",
                   help="train on the images that have a pseudo mask (default: every image needs one)")
    p.add_argument("--no-eval", action="store_true", help="train only")
    p.add_argument("--eval-split", metavar="SPLIT", help="split to evaluate on (default: segment.eval.split)")
    p.add_argument("--save-predictions", action="store_true",
                   help="write the predictions as label PNGs under segment/eval/<split>/predictions/<setting>/")
    p.add_argument("--crf", action="store_true", help="also report dense-CRF post-processed predictions")


def run(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args)
    if not args.pseudo_masks:
        raise UsageError("pass --pseudo-masks DIR (see semples train-seg --help)")
    from semples import steps
    from semples.engine import make_accelerator

    acc = make_accelerator(cfg.device, cfg.mixed_precision, cfg.deterministic)
    result = steps.segment.train(cfg, args.pseudo_masks, run_dir=args.run_dir, resume=args.resume, force=args.force,
                                 skip_missing=args.skip_missing, accelerator=acc)
    if acc.is_main_process:
        print(f"segment: {result.status} ({result.global_step} steps) -> {result.run_dir}")
    if args.no_eval:
        return 0
    report = steps.segment.evaluate(cfg, result.run_dir, split=args.eval_split,
                                    save_predictions=args.save_predictions or None, crf=args.crf or None,
                                    force=args.force, accelerator=acc)
    if acc.is_main_process:
        print_report(report)
    return 0


def print_report(report: dict) -> None:
    """One line: the split, its size and the mIoU of each evaluated setting."""
    parts = [f"{name} {100 * r['miou']:.2f}" if r["miou"] is not None else f"{name} —"
             for name, r in report["results"].items()]
    print(f"eval {report['split']} ({report['num_images']} images) mIoU (mean over the classes in the ground truth or "
          f"the prediction): {', '.join(parts)}")
