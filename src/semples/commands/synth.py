"""`semples synth`: the synthetic co-occurrence world and its toy CLIP."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from semples.errors import UsageError

HELP = "the synthetic world and its toy CLIP: train-clip, probe-clip, preview"
DESCRIPTION = """\
The synthetic co-occurrence world (objects on backgrounds that usually come with them) and the small CLIP
trained on it, which carries the same class-background bias real CLIP has.

  semples synth train-clip --out runs/synth-clip          # ~10 min on 2 CPU cores; resumable (--resume)
  semples synth probe-clip                                 # the shipped weights (clip.arch: synth-clip)
  semples synth probe-clip --clip runs/synth-clip --json runs/synth-clip/probe.json
  semples synth preview --out synthetic.png

Use trained weights in any verb with --set clip.arch=local-dir:runs/synth-clip (the shipped ones:
--set clip.arch=synth-clip)."""


def _add_clip_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="YAML",
                   help="toy-CLIP config (a YAML of SynthClipConfig fields, or a folder holding training.yaml); "
                        "default: the committed config of the shipped weights")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=300 (repeatable)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="synth_command", metavar="<command>")

    t = sub.add_parser("train-clip", help="train the toy CLIP on generated image-caption pairs",
                       description="Contrastive training of a small open_clip CLIP on the world; writes an open_clip "
                                   "local-dir folder (open_clip_config.json, open_clip_model.safetensors, "
                                   "training.yaml, probe.json).")
    t.add_argument("--out", default="runs/synth-clip", metavar="DIR", help="folder of the trained CLIP")
    _add_clip_config_arguments(t)
    t.add_argument("--run-dir", metavar="DIR", help="training run folder (checkpoint.pt, metrics.jsonl); "
                                                    "default: OUT/run")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    t.add_argument("--force", action="store_true", help="retrain even if the run folder holds a finished run")
    t.add_argument("--no-probe", action="store_true", help="skip the probe after training")
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    t.set_defaults(_run=_train_clip)

    q = sub.add_parser("probe-clip", help="check the properties of a real CLIP the demo relies on (PASS/FAIL)",
                       description="Checks, on held-out images of the world, the numbered properties of a real "
                                   "web-trained CLIP that the demo relies on (semples.synthclip.properties: blank "
                                   "and noise images are not the class, context raises the class score, a "
                                   "co-occurrence bias for every class, describable backgrounds, zero-shot accuracy "
                                   "at the demo's resolution, patch-level object > background, objects alone "
                                   "recognised), each with its threshold and PASS/FAIL, then the probe table "
                                   "(zero-shot accuracy and bias per class). Writes everything to --json. Exit "
                                   "status 1 when a property fails.")
    q.add_argument("--clip", default="synth-clip", metavar="ARCH_OR_DIR",
                   help="a folder with open_clip_config.json (e.g. runs/synth-clip), local-dir:DIR, or an arch "
                        "name load_clip knows (default: the shipped synth-clip)")
    q.add_argument("--config", "-c", metavar="YAML",
                   help="toy-CLIP config whose world to probe (default: the folder's training.yaml, else the "
                        "default world)")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override that config, e.g. --set world.p_cooc=0.5")
    q.add_argument("--per-class", type=int, default=50, help="held-out images per class")
    q.add_argument("--per-background", type=int, default=40, help="images of each background alone")
    q.add_argument("--template", default="a photo of a {}.", help="class text (the demo's clip.class_template)")
    q.add_argument("--norm", choices=["clip", "imagenet"], default="imagenet",
                   help="image normalisation (imagenet: what the demo's masking hands CLIP)")
    q.add_argument("--feed-size", type=int, metavar="PX",
                   help="side the demo feeds CLIP (default: the synth_demo preset's training crop)")
    q.add_argument("--json", default="probe.json", metavar="FILE", help="where to write the result")
    q.set_defaults(_run=_probe_clip)

    v = sub.add_parser("preview", help="a PNG of world items: image | mask | background map, with captions")
    v.add_argument("--out", default="synthetic.png", metavar="PNG")
    v.add_argument("-n", type=int, default=12, help="items")
    v.add_argument("--split", default="train")
    v.add_argument("--config", "-c", metavar="YAML", help="experiment config whose data.synthetic world to show")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override that config, e.g. --set data.synthetic.p_cooc=0.5")
    v.set_defaults(_run=_preview)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "_run", None) is None:
        raise UsageError("pass a command: train-clip, probe-clip or preview (see semples synth --help)")
    return args._run(args)


def _train_clip(args: argparse.Namespace) -> int:
    from semples.synthclip import dump_synth_clip_config, load_synth_clip_config, train_synth_clip

    cfg = load_synth_clip_config(args.config, args.overrides)
    if args.print_config:
        print(dump_synth_clip_config(cfg), end="")
        return 0
    if sys.argv[1:3] == ["synth", "train-clip"]:
        command = "semples " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    else:  # called as main([...]): rebuild it from the arguments
        parts = ["--out", str(args.out)] + ([f"--config={args.config}"] if args.config else []) \
            + [f"--set={o}" for o in args.overrides]
        command = "semples synth train-clip " + " ".join(shlex.quote(p) for p in parts)
    result = train_synth_clip(cfg, args.out, run_dir=args.run_dir, resume=args.resume, force=args.force,
                              command=command)
    print(f"train-clip: {result.status} ({result.steps} steps, {result.seconds / 60:.1f} min) -> {result.out}")
    if not args.no_probe:
        probe = _probe(f"local-dir:{Path(args.out)}", cfg)
        _write_json(Path(args.out) / "probe.json", probe)
        _print_probe(probe)
    return 0


def _write_json(path: Path, obj: dict) -> None:
    from semples.synthclip.train import write_file

    write_file(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def demo_feed_size() -> int:
    """The side the demo (preset synth_demo) feeds CLIP: its training crop."""
    from semples.config import load_config

    return int(load_config("synth_demo").match.transform.crop_size)


def _probe(arch: str, cfg, feed_size: int | None = None, **kwargs) -> dict:
    from semples.config import ClipConfig
    from semples.data.synthetic import SyntheticWorld
    from semples.models.clip import load_clip
    from semples.synthclip import check_properties

    clip = load_clip(ClipConfig(arch=arch, pretrained="none"))
    start = time.perf_counter()
    result = check_properties(clip, SyntheticWorld(cfg.world), feed_size=feed_size or demo_feed_size(), **kwargs)
    result["clip"] = clip.source
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _print_probe(result: dict) -> None:
    from semples.synthclip import format_probe, format_properties

    print(format_properties(result))
    print()
    print(format_probe(result["probe"]))


def _probe_clip(args: argparse.Namespace) -> int:
    from semples.models.clip import ASSET_DIR
    from semples.synthclip import load_synth_clip_config

    arch = args.clip
    folder = None
    if arch.startswith("local-dir:"):
        folder = Path(arch[len("local-dir:"):])
    elif Path(arch).is_dir():
        folder = Path(arch)
        arch = f"local-dir:{folder}"
    elif (ASSET_DIR / arch).is_dir():
        folder = ASSET_DIR / arch
    config = args.config
    if config is None and folder is not None and (folder / "training.yaml").is_file():
        config = folder / "training.yaml"
    cfg = load_synth_clip_config(config, args.overrides)
    result = _probe(arch, cfg, feed_size=args.feed_size, per_class=args.per_class,
                    per_background=args.per_background, template=args.template, norm=args.norm)
    _print_probe(result)
    _write_json(Path(args.json), result)
    print(f"wrote {args.json}")
    return 0 if result["all_pass"] else 1


def _preview(args: argparse.Namespace) -> int:
    from semples.config import load_config
    from semples.data.synthetic import preview_grid

    cfg = load_config(args.config, args.overrides)
    path = preview_grid(cfg.data.synthetic, n=args.n, path=args.out, split=args.split)
    print(f"wrote {path}")
    return 0
