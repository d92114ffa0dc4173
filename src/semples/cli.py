"""`semples <verb> ...`: the command line. `main(argv)` returns an exit status, so tests can call it.

The only place that knows argv and exit codes: each verb module (`semples.commands`) parses its flags, calls one
library function (`semples.steps`, `semples.pipeline`, `semples.demo`) and prints its result. Any
`semples.errors.SemplesError` is printed as ``semples <verb>: error: <message>`` (exit 1; a `UsageError` exits 2);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from semples import __version__

# verb -> module under semples.commands. Order = order in `semples --help`.
VERBS: dict[str, str] = {
    "demo": "semples.commands.demo",
    "run": "semples.commands.run",
    "train": "semples.commands.train",
    "data": "semples.commands.data",
    "cams": "semples.commands.cams",
    "eval-seeds": "semples.commands.eval_seeds",
    "pseudo-masks": "semples.commands.pseudo_masks",
    "eval-masks": "semples.commands.eval_masks",
    "train-seg": "semples.commands.train_seg",
    "eval-seg": "semples.commands.eval_seg",
    "predict": "semples.commands.predict",
    "export": "semples.commands.export",
    "figures": "semples.commands.figures",
    "synth": "semples.commands.synth",
}

DESCRIPTION = """\
Weakly-supervised semantic segmentation from image-level labels with a frozen CLIP (SemPLeS, FMA-WSSS).

Start here:
  semples demo                                   the whole chain on the built-in synthetic world -> report.html
  semples run --config voc_semples --set data.root=/data/VOCdevkit      the whole chain on your data

Or step by step (each step writes a folder that the next one is handed explicitly):
  semples train --scheme sequential --config voc_semples       classify -> match -> prompt -> refine
  semples cams --config voc_semples --generator runs/voc_semples/refine
  semples eval-seeds / pseudo-masks / eval-masks / train-seg / eval-seg / figures
  semples predict --model runs/voc_semples/segment --images photos/ --out preds/     your own images
  semples export --masks preds/masks --to coco --out preds.json                     COCO / VOC server formats

Every verb has its own --help. Configs are YAML presets (`semples train --list-presets`) or files;
`--set key.sub=value` overrides any value; `--print-config` shows the resolved config."""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser(verbs: list[str] | None = None) -> argparse.ArgumentParser:
    """The `semples` parser. Every verb is listed (with its one-line help); only the verbs in `verbs` (default: all)
    get their own arguments, which is where a verb imports what its choices come from (stages, presets...)."""
    parser = argparse.ArgumentParser(prog="semples", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"semples {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for verb, module_name in VERBS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(verb, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=_Formatter)
        if verbs is None or verb in verbs:
            module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def _verb_of(argv: list[str]) -> str | None:
    """The verb of a command line (the first word that is no option of `semples` itself), if it is one."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in VERBS else None
    return None


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (0 success, 1 failure, 2 usage error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = _verb_of(argv)
    # only the verb given builds its arguments: a verb that needs no torch (pseudo masks by CRF, mask evaluation,
    # every --help) then starts in half a second instead of three
    parser = build_parser([verb] if verb else [])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.verb is None:
        parser.print_help()
        return 2
    from semples.errors import SemplesError, UsageError

    previous = _handle_sigterm()
    try:
        handled = _config_flags(args)  # --list-presets / --print-config of the verbs that read a config
        if handled is not None:
            return handled
        return int(args._module.run(args) or 0)
    except UsageError as e:
        print(f"semples {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except SemplesError as e:
        print(f"semples {args.verb}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except OSError as e:
        if not _environment_error(e) or args.verbose:
            raise
        # the machine, not the code: a full disk, a read-only or missing folder, a file where a folder should be
        where = f"{e.filename}: " if e.filename else ""
        print(f"semples {args.verb}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except Terminated:
        print(f"semples {args.verb}: terminated (SIGTERM); an interrupted step continues with the same command "
              "(training: --resume)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"semples {args.verb}: interrupted", file=sys.stderr)
        return 130
    finally:
        _restore_sigterm(previous)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so that every step winds down as on Ctrl-C: manifests say
    "interrupted", nothing half-written stays (exit status 143, as a shell reports a SIGTERM)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated("SIGTERM")


def _handle_sigterm():
    """Installs the SIGTERM handler (main thread only); returns the previous one (None: not installed)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _restore_sigterm(previous) -> None:
    if previous is not None:
        import signal

        signal.signal(signal.SIGTERM, previous)


def _environment_error(e: OSError) -> bool:
    """An OSError that a user fixes on the machine (space, permissions, paths), not a bug of semples."""
    import errno

    return e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                       errno.EISDIR, errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.EMFILE)


def _one_line(e: Exception) -> str:
    """The error's message on one line (a message that quotes a multi-line library error is folded)."""
    return " ".join(str(e).split()) if "\n" in str(e) else str(e)


def _config_flags(args: argparse.Namespace) -> int | None:
    if getattr(args, "list_presets", False):
        from semples.config import preset_names

        print("\n".join(preset_names()))
        return 0
    if getattr(args, "print_config", False) and hasattr(args, "overrides") and args.verb != "synth":
        from semples.commands.train import load_cli_config
        from semples.config import dump_config

        print(dump_config(load_cli_config(args)), end="")
        return 0
    return None


if __name__ == "__main__":
    sys.exit(main())
