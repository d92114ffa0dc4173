"""`semples data check` and `semples data export-masks`: verify a dataset, write COCO masks once."""

from __future__ import annotations

import argparse
import os

HELP = "check a dataset (layout, counts per split and class, every bad file) or export COCO masks"

DESCRIPTION = """\
Check a dataset before training: the layout, images / masks / labels per split and per class, and every
problem with its file path. Exit status 0 when the dataset can be used, 1 when it cannot.

  semples data check configs/voc_semples.yaml --set data.root=/data/VOCdevkit
  semples data check /data/VOCdevkit                       (layout detected: voc, coco or folder)
  semples data check /data/coco --dataset coco --split val2014 --quick
  semples data export-masks /data/coco --split train2014 --out /data/coco/masks/train2014

A TARGET is a dataset folder, a YAML config file or a preset name."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_verb", metavar="<action>")
    check = sub.add_parser("check", help="verify a dataset and print counts and problems", description=DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    _target_arguments(check)
    check.add_argument("--quick", action="store_true", help="read file headers only (no full decoding)")
    check.add_argument("--limit", type=int, default=None, help="read at most this many items per split")
    check.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="reading threads")
    check.add_argument("--no-progress", action="store_true", help="no progress bars")
    export = sub.add_parser("export-masks", help="write COCO semantic masks to PNG once (later epochs read them)")
    _target_arguments(export)
    export.add_argument("--out", default=None, help="mask folder (default: data.options.mask_dir, else the cache)")
    export.add_argument("--overwrite", action="store_true", help="rewrite existing PNGs")


def _detectable() -> list[str]:
    """Datasets that live in a folder (those whose registry entry detects a layout)."""
    from semples.data import DATASETS

    return [name for name, spec in DATASETS.items() if spec.detect is not None]


def _target_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="dataset folder, YAML config file or preset name")
    p.add_argument("--dataset", choices=_detectable(), default=None,
                   help="reader for a dataset folder (default: detected from the layout)")
    p.add_argument("--split", action="append", default=None,
                   help="split to check (repeatable; default: every split found, or the config's train/eval splits)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. data.options.labels_file=labels.csv")


def run(args: argparse.Namespace) -> int:
    if args.data_verb is None:
        from semples.errors import UsageError

        raise UsageError("choose an action: check | export-masks (see semples data --help)")
    from semples import steps

    cfg, config_splits = steps.data.target_config(args.target, dataset=args.dataset, overrides=args.set)
    if args.data_verb == "check":
        report = steps.data.check(cfg, args.split or config_splits, decode=not args.quick, limit=args.limit,
                                  workers=args.workers, progress=not args.no_progress)
        from semples.data.check import format_report

        print(format_report(report))
        return 0 if report.usable else 1
    for ds, written, existing in steps.data.export_masks(cfg, args.split, out=args.out, overwrite=args.overwrite):
        print(f"{ds.split}: {written} masks written, {existing} already present in {ds.mask_dir}")
        print(f"read them with: --set data.options.mask_dir={ds.mask_dir}")
    return 0
