"""`semples run`: the whole chain from one config."""

from __future__ import annotations

import argparse

from semples.commands.train import add_config_arguments, load_cli_config

HELP = "the whole chain from one config: train -> cams -> eval-seeds -> pseudo-masks -> eval-masks -> train-seg -> eval"
DESCRIPTION = """\
Run every step of the pipeline from one config, each exactly as its own verb would (the same library function,
semples.steps; an error inside a step is reported with its own message):

  train         semples train --scheme <scheme.scheme>          mask generator S (classify, match, prompt, refine)
  cams          semples cams                                     seeds of S on the pseudo-mask split (+ seed split)
  eval-seeds    semples eval-seeds                               threshold sweep, per-class IoU of the seeds
  pseudo-masks  semples pseudo-masks --threshold-from <eval>     pseudo masks (pseudo.method: crf / region-vote /
                                                                 threshold)
  eval-masks    semples eval-masks                               mIoU of the pseudo masks
  train-seg     semples train-seg --no-eval                      final segmentation model on the pseudo masks
  eval          semples eval-seg --save-predictions              its mIoU on segment.eval.split
  report        summary.md and a figure grid (image | ground truth | seeds | pseudo mask | prediction)

  semples run --config voc_semples --set data.root=/data/VOCdevkit
  semples run --config voc_semples --until eval-seeds          (stop after the seeds)
  semples run --config voc_semples --from pseudo-masks --set pseudo.method=region-vote
  semples run --config voc_fma --method fma                   (FMA-WSSS: CLIP + CAA + SAMS)
  semples run --config voc_semples --method semples+fma       (SemPLeS seeds refined by CAA + SAMS)

Outputs live under <output_dir>/<experiment>/; run.json records every step's command, output folder, time and
headline numbers. Re-running is idempotent: finished work is skipped, interrupted training resumes. --from takes
earlier steps' outputs from run.json. Splits: pipeline.pseudo_split (default data.train_split),
pipeline.seed_split (default data.eval_split), segment.eval.split."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    from semples.pipeline import STEPS

    p.add_argument("--from", dest="start", choices=STEPS, help="first step (earlier outputs come from run.json)")
    p.add_argument("--until", choices=STEPS, help="last step")
    from semples.methods import METHODS

    p.add_argument("--method", choices=list(METHODS),
                   help="which seeds: SemPLeS, FMA-WSSS (CLIP + CAA + SAMS), or SemPLeS seeds refined by CAA + SAMS "
                        "(default: pipeline.method)")
    p.add_argument("--force", action="store_true", help="redo every step from scratch")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from semples.pipeline import Pipeline

    cfg = load_cli_config(args)
    if args.method:
        cfg = dataclasses.replace(cfg, pipeline=dataclasses.replace(cfg.pipeline, method=args.method))
    pipe = Pipeline(cfg, force=args.force)
    manifest = pipe.run(start=args.start, until=args.until)  # a step's error reaches cli.main as it was raised
    for step, rec in manifest["steps"].items():
        if rec.get("status") == "done":
            outputs = rec.get("outputs", {})
            miou = outputs.get("miou")
            extra = ""
            if isinstance(miou, float):
                extra = f"  mIoU {100 * miou:.1f}"
            elif isinstance(miou, dict):
                extra = "  mIoU " + ", ".join(f"{k} {100 * v:.1f}" for k, v in miou.items() if v is not None)
            if outputs.get("stages"):
                extra += "  " + ", ".join(f"{k} {v}" for k, v in outputs["stages"].items())
            print(f"{step:<13s} {rec.get('seconds', 0):7.1f} s{extra}")
    if any("miou" in rec.get("outputs", {}) for rec in manifest["steps"].values() if rec.get("status") == "done"):
        from semples.metrics import MEAN_CONVENTION

        print(f"({MEAN_CONVENTION})")
    print(f"run manifest: {pipe.manifest_path}")
    return 0
