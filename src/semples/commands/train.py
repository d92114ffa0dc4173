"""`semples train`: one stage, or a whole learning scheme."""

from __future__ import annotations

import argparse

from semples.errors import UsageError

HELP = "train the mask generator: one stage (--stage) or a whole learning scheme (--scheme)"
DESCRIPTION = """\
Train the mask generator S with SemPLeS.

One stage at a time (each run folder is handed explicitly to the next):
  semples train --stage classify --config voc_semples
  semples train --stage match    --config voc_semples --generator runs/semples/classify
  semples train --stage prompt   --config voc_semples --generator runs/semples/match
  semples train --stage refine   --config voc_semples --generator runs/semples/classify --prompts runs/semples/prompt
(refine starts S from the classify result as the reference code does; scheme.refine_init=match uses match's.)

FMA-WSSS prompt learning (CLIP Grad-CAM generator; METHOD.md §2):
  semples train --stage fma-classify --config voc_fma
  semples train --stage fma-segment  --config voc_fma --seeds runs/voc_fma/seeds/coarse
(the coarse seeds come from the fma-classify run: semples run --method fma writes them.) SemPLeS on other mask
generators: --config voc_semples_resnet50 / voc_semples_clipcam.

All stages in order:
  semples train --scheme sequential --config voc_semples
  semples train --scheme alternating --rounds 2 --config voc_semples
  semples train --scheme joint --config voc_semples

Each stage writes <output_dir>/<experiment>/<stage>/ with config.yaml, checkpoint.pt (after every epoch),
metrics.jsonl and manifest.json. A finished stage is skipped when run again; an interrupted one continues with
--resume. Several GPUs: `accelerate launch --multi_gpu --num_processes N -m semples train ...`
(or torchrun). Offline machines pass weights explicitly: --set clip.pretrained=/path/ViT-B-32.pt
--set generator.backbone_checkpoint=/path/deit_small_patch16_224.pth."""


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """--config / --set / --list-presets, shared by the verbs that read an experiment config."""
    p.add_argument("--config", "-c", metavar="YAML",
                   help="experiment config: a YAML file or a preset name (see --list-presets); default: built-in "
                        "defaults (VOC numbers, synthetic data)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set match.epochs=5 --set data.root=/data/VOC (repeatable)")
    p.add_argument("--list-presets", action="store_true", help="list the shipped config presets and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type of counts such as --limit: an integer >= 1 (argparse prints the error as one usage line)."""
    return _whole_number(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type of counts where 0 means "none" (--workers 0: in this process)."""
    return _whole_number(text, 0)


def load_cli_config(args: argparse.Namespace):
    from semples.config import load_config

    return load_config(args.config, args.overrides)


def stage_names() -> list[str]:
    """The stages `semples train` trains (`semples.stage_table`, the one list; read without importing torch)."""
    from semples.stage_table import stages_of_verb

    return stages_of_verb("train")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from semples.stage_table import SCHEMES

    what = p.add_mutually_exclusive_group()
    what.add_argument("--stage", choices=stage_names(), help="train one stage")
    what.add_argument("--scheme", choices=SCHEMES,
                      help="train all stages of a learning scheme in order")
    add_config_arguments(p)
    p.add_argument("--rounds", type=int, help="alternating scheme: (prompt -> refine) rounds (default: config)")
    p.add_argument("--generator", metavar="RUN",
                   help="run folder (or checkpoint.pt) of the mask generator to start from; with --scheme it "
                        "replaces stage classify")
    p.add_argument("--prompts", metavar="RUN", help="run folder of stage prompt (needed by --stage refine)")
    p.add_argument("--seeds", metavar="DIR",
                   help="coarse seeds for --stage fma-segment: label PNGs <id>.png or a CAM folder (default: "
                        "fma.seeds_dir)")
    p.add_argument("--run-dir", metavar="DIR",
                   help="this stage's run folder (default: <output_dir>/<experiment>/<stage>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted stage from its last checkpoint")
    p.add_argument("--force", action="store_true", help="retrain even if the run folder holds a checkpoint")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="accept --generator / --prompts checkpoints of unfinished (interrupted) runs")


def run(args: argparse.Namespace) -> int:
    from semples import steps

    cfg = load_cli_config(args)
    if args.stage is None and args.scheme is None:
        raise UsageError("pass --stage NAME or --scheme NAME (see semples train --help)")
    result = steps.train.run(cfg, stage=args.stage, scheme=args.scheme, rounds=args.rounds, generator=args.generator,
                             prompts=args.prompts, seeds=args.seeds, run_dir=args.run_dir, resume=args.resume,
                             force=args.force, allow_unfinished=args.allow_unfinished)
    if result.is_main_process:
        for folder, r in result.results.items():
            print(f"{folder}: {r.status} ({r.global_step} steps) -> {r.run_dir}")
    return 0
