"""`semples demo`: SemPLeS end to end on the built-in synthetic world, with a report."""

from __future__ import annotations

import argparse

HELP = "run SemPLeS end to end on the built-in synthetic world (no data, no network, ~10 min CPU) -> report.html"
DESCRIPTION = """\
The embedded default: a synthetic world where every object class co-occurs with a background (boat/water,
plane/sky, cow/grass, train/rails, bird/sand, car/snow; p = 0.8), a small CLIP trained on it that carries the same
bias web-trained CLIPs have (shipped with the package), and the real chain on top:

  classify -> match -> prompt -> refine, and refine with untrained prompts (the control)
  -> cams + eval-seeds (after match, after refine, control) -> pseudo masks (dense CRF) -> eval-masks
  -> train-seg -> eval

Writes DIR/report.html (metrics tables; seed mIoU after match vs after refine, pseudo-mask and final mIoU per class;
the leak rate = share of each class's associated-background pixels labelled as that class; a figure grid image |
ground truth | CAM after match | CAM after refine | pseudo mask | prediction; what each learned background prompt
looks at and which captions it is nearest to; loss curves) and DIR/metrics.json. Run folders go to DIR/runs/.
Re-running skips finished work. About 10 minutes on 2 CPU cores (preset synth_demo).

  semples demo
  semples demo --out /tmp/demo --set refine.epochs=12"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="semples-demo", metavar="DIR", help="output folder")
    p.add_argument("--config", "-c", default="synth_demo", metavar="YAML",
                   help="preset or file (must use the synthetic world)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--force", action="store_true", help="redo everything")


def run(args: argparse.Namespace) -> int:
    from semples.demo import run_demo
    from semples.metrics import MEAN_CONVENTION

    metrics = run_demo(args.out, args.config, args.overrides, force=args.force)

    def pct(x):
        return "—" if x is None else f"{100 * x:.1f}"

    print(f"seeds after match   mIoU {pct(metrics['seeds_after_match']['miou'])}  "
          f"leak {pct(metrics['seeds_after_match']['leak']['mean'])}")
    print(f"seeds after refine  mIoU {pct(metrics['seeds_after_refine']['miou'])}  "
          f"leak {pct(metrics['seeds_after_refine']['leak']['mean'])}")
    print(f"untrained prompts   mIoU {pct(metrics['control_untrained_prompts']['miou'])}  "
          f"leak {pct(metrics['control_untrained_prompts']['leak']['mean'])}  (control: refine without prompt "
          f"learning)")
    print(f"pseudo masks        mIoU {pct(metrics['pseudo_masks']['miou'])}  "
          f"leak {pct(metrics['pseudo_masks']['leak']['mean'])}")
    print(f"final model ({metrics['final']['split']})   mIoU {pct(metrics['final']['miou'])}  "
          f"leak {pct(metrics['final']['leak']['mean'])}")
    print(metrics["verdict"])
    print(f"{MEAN_CONVENTION[0].upper()}{MEAN_CONVENTION[1:]}; leak: share of a class's associated-background "
          "pixels labelled as the class.")
    print(f"{metrics['seconds']['total']:.0f} s -> {args.out}/report.html")
    return 0
