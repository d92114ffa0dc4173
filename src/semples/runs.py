"""Run folders: every folder name of an experiment, the one manifest schema of output folders, and the rule that a
finished folder is reused only when it was made from the same inputs and settings.

Layout (`RunLayout`; ``<root>`` = ``<output_dir>/<experiment>``, ``<out>`` = ``<root>`` for SemPLeS and
``<root>/<method folder>`` for the other methods of `semples run`, so they share the training runs):

    <root>/<stage>/                    a training stage (classify, match, prompt_r2, refine_r2, fma-classify ...)
    <out>/cams/<split>/                seeds (`semples cams`; cams.out_dir overrides)
    <out>/eval_seeds/<split>/          their evaluation (seeds.out_dir overrides)
    <out>/pseudo_masks/<kind>/<split>/ pseudo masks (pseudo.out_dir overrides)
    <out>/eval_masks/<split>/          their evaluation
    <out>/segment/                     the final model; <out>/segment/eval/<split>/ its evaluation
    <out>/report/                      summary.md and figures.png of `semples run`
    <out>/run.json, run_config.yaml    the run manifest of `semples run` and the config it ran

Output folders of the inference steps hold one file per image and ``manifest.json``::

    format, version      "semples-<kind>" ("semples-cams", "semples-pseudo-masks"), 2
    producer             the module that wrote it
    data                 {dataset, root, split, name}: the images (the one place a folder's split is recorded)
    classes              the dataset's class names
    inputs               what it was made from: {name: {path, sha256}} for checkpoints, {path, settings_sha256}
                         for input folders (the sha256 of that folder's data + inputs + settings), {fresh: ...}
    settings             every setting that changes the files
    status, complete     "running" | "finished" | "interrupted: ..."; every image of the split present
    counts, failed, last_run, updated, and what the step adds (threshold_source, phase, pixel counts ...)

**Reuse is input-checked.** A folder (or a stage's checkpoint, `semples.engine`) is reused only when its recorded
data, settings and the sha256 of every input match; otherwise `ReuseError` names every difference (key with old and
new value, input with both paths and hashes) and the way out: ``--force``, or another folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from semples.errors import ReuseError
from semples.utils.checkpoint_io import atomic_write_json

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2
RUN_MANIFEST = "run.json"
RUN_CONFIG = "run_config.yaml"


def now() -> str:
    """The current UTC time, ISO 8601 to the second (manifest timestamps)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------- layout
class RunLayout:
    """Every folder name of one experiment (see the module docstring).

    Args:
        cfg: the experiment `Config` (output_dir, experiment and the per-step ``out_dir`` overrides).
        method_folder: the sub-folder of a `semples run` method (None: the experiment folder itself).
        overrides: honour ``cams.out_dir`` / ``seeds.out_dir`` / ``pseudo.out_dir`` (the verbs' defaults); `semples
            run` writes several splits and methods, so it never does.
    """

    def __init__(self, cfg, method_folder: str | None = None, *, overrides: bool = True) -> None:
        self.cfg = cfg
        self.root = Path(cfg.output_dir) / cfg.experiment
        self.out = self.root / method_folder if method_folder else self.root
        self.overrides = overrides

    def stage(self, folder: str) -> Path:
        """A training stage's run folder: <root>/<folder> (folder = stage name, or prompt_r2 / refine_r2 ...)."""
        return self.root / folder

    def cams(self, split: str, name: str = "cams") -> Path:
        """A CAM folder: ``cams.out_dir`` (the default folder only), else <out>/<name>/<split>."""
        if name == "cams" and self.overrides and self.cfg.cams.out_dir:
            return Path(self.cfg.cams.out_dir)
        return self.out / name / split

    def eval_seeds(self, split: str) -> Path:
        """<out>/eval_seeds/<split> (or ``seeds.out_dir``)."""
        if self.overrides and self.cfg.seeds.out_dir:
            return Path(self.cfg.seeds.out_dir)
        return self.out / "eval_seeds" / split

    def pseudo_masks(self, kind: str, split: str) -> Path:
        """<out>/pseudo_masks/<kind>/<split> (or ``pseudo.out_dir``); kind = the method ("crf", "sams_fine" ...)."""
        if self.overrides and self.cfg.pseudo.out_dir:
            return Path(self.cfg.pseudo.out_dir)
        return self.out / "pseudo_masks" / kind / split

    def seeds(self, split: str, name: str) -> Path:
        """A folder of seed label maps other than pseudo masks: <out>/<name>/<split> (FMA's seeds_coarse)."""
        return self.out / name / split

    def eval_masks(self, split: str) -> Path:
        return self.out / "eval_masks" / split

    def segment(self) -> Path:
        """The final model's run folder: <out>/segment."""
        return self.out / "segment"

    @staticmethod
    def segment_eval(run_dir: str | Path, split: str) -> Path:
        """<segment run folder>/eval/<split>."""
        return Path(run_dir) / "eval" / split

    def report(self) -> Path:
        return self.out / "report"

    def figures(self, split: str) -> Path:
        """Default file of `semples figures`: <root>/figures/samples_<split>.png."""
        return self.root / "figures" / f"samples_{split}.png"

    @property
    def run_manifest(self) -> Path:
        return self.out / RUN_MANIFEST

    @property
    def run_config(self) -> Path:
        return self.out / RUN_CONFIG


def scheme_folders(scheme: str, rounds: int) -> list[tuple[str, str]]:
    """(stage, run-folder name) of every stage of a learning scheme after classify, in order."""
    if scheme == "joint":
        return [("joint", "joint")]
    rounds = 1 if scheme == "sequential" else rounds
    out = [("match", "match")]
    for r in range(1, rounds + 1):
        suffix = "" if rounds == 1 else f"_r{r}"
        out += [("prompt", f"prompt{suffix}"), ("refine", f"refine{suffix}")]
    return out


def final_generator_folder(cfg) -> str:
    """Run-folder name of the mask generator a learning scheme ends with."""
    return scheme_folders(cfg.scheme.scheme, cfg.scheme.rounds)[-1][1]


# ---------------------------------------------------------------------------------------------------- records
def file_record(path: str | Path) -> dict[str, Any]:
    """The input record of a file: its path and sha256."""
    from semples.utils.checkpoint_io import sha256_file

    return {"path": str(path), "sha256": sha256_file(path)}


def canonical(obj: Any) -> Any:
    """`obj` as JSON would give it back (tuples -> lists, paths -> strings): the form records are compared in."""
    return json.loads(json.dumps(obj, default=str))


def folder_fingerprint(manifest: dict | None) -> str | None:
    """sha256 of what made an output folder's files (its data, inputs and the settings compared on reuse), from its
    manifest: the identity downstream folders and checkpoints record for it as an input."""
    if not manifest:
        return None
    what = {k: manifest.get(k) for k in ("format", "data", "inputs", "settings")}
    uncompared = set(manifest.get("uncompared_settings") or ())
    if isinstance(what["settings"], dict) and uncompared:
        what["settings"] = {k: v for k, v in what["settings"].items() if k not in uncompared}
    return hashlib.sha256(json.dumps(canonical(what), sort_keys=True).encode()).hexdigest()


def data_record(cfg, split: str, dataset) -> dict[str, Any]:
    """The `data` entry of an output folder's manifest (`cfg`: the experiment `Config`)."""
    return {"dataset": cfg.data.dataset, "root": cfg.data.root, "split": split, "name": dataset.name}


def folder_record(folder: str | Path) -> dict[str, Any]:
    """The input record of an output folder: its path and the fingerprint of its manifest (None: no manifest)."""
    return {"path": str(folder), "settings_sha256": folder_fingerprint(read_folder_manifest(folder))}


def read_folder_manifest(folder: str | Path) -> dict | None:
    """The manifest.json of an output folder, or None when it has none (or an unreadable one)."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def recorded_split(folder: str | Path) -> str | None:
    """The split an output folder was made for, from its manifest (None when not recorded).

    Reads ``data.split``; folders written before manifest version 2 recorded pseudo masks' split at the top level.
    """
    manifest = read_folder_manifest(folder) or {}
    data = manifest.get("data")
    split = data.get("split") if isinstance(data, dict) else None
    split = split or manifest.get("split")
    return split if isinstance(split, str) and split else None


# ---------------------------------------------------------------------------------------------------- reuse
def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict as {dotted key: value} (empty dicts stay values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def config_differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two nested dicts (keys under `ignore` left out), sorted."""
    a, b = flatten(canonical(old)), flatten(canonical(new))
    return [k for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not any(k == i or k.startswith(i + ".") for i in ignore)]


def describe_config_differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """`config_differences` as "key: old -> new" lines."""
    a, b = flatten(canonical(old)), flatten(canonical(new))
    return [f"{k}: {_short(a.get(k))} -> {_short(b.get(k))}" for k in config_differences(old, new, ignore)]


_IDENTITY = ("sha256", "settings_sha256", "fresh")


def _records(inputs: Any, prefix: str = "") -> dict[str, dict]:
    """name -> input record (a dict holding sha256 / settings_sha256 / fresh) found anywhere in `inputs`."""
    out: dict[str, dict] = {}
    if not isinstance(inputs, dict):
        return out
    if any(k in inputs for k in _IDENTITY):
        return {prefix or "input": inputs}
    for k, v in inputs.items():
        out.update(_records(v, f"{prefix}.{k}" if prefix else k))
    return out


def _describe_record(rec: dict | None) -> str:
    if rec is None:
        return "none"
    if "fresh" in rec:
        return "fresh (not from a checkpoint)"
    digest = rec.get("sha256") or rec.get("settings_sha256")
    return f"{rec.get('path') or rec.get('file') or '?'} (sha256 {digest[:12] if digest else 'unknown'})"


def input_differences(old: dict, new: dict, only_recorded: bool = False) -> list[str]:
    """Inputs whose identity (sha256 of a file, fingerprint of a folder, fresh parameters) differs, as lines
    "input NAME: OLD -> NEW" naming both paths and hashes. Moving an input (same hash, other path) is no change.

    `only_recorded`: compare only the inputs `old` holds an identity for (records of an older format).
    """
    a, b = _records(canonical(old)), _records(canonical(new))
    diffs = []
    for name in sorted(set(a) | set(b)):
        ra, rb = a.get(name), b.get(name)
        if only_recorded and ra is None:
            continue
        ida = None if ra is None else tuple(ra.get(k) for k in _IDENTITY)
        idb = None if rb is None else tuple(rb.get(k) for k in _IDENTITY)
        if ida != idb:
            diffs.append(f"input {name}: {_describe_record(ra)} -> {_describe_record(rb)}")
    return diffs


def reuse_error(what: str, diffs: list[str], way_out: str) -> ReuseError:
    """The one message of a refused reuse: what, every difference, and the way out."""
    return ReuseError(f"{what}: made from other inputs or settings ({'; '.join(diffs)}); pass --force to redo it, "
                      f"or {way_out}")


@dataclass
class FolderRecord:
    """What an output folder holds, for its manifest and the reuse check (see the module docstring).

    Attributes:
        kind: "cams", "pseudo-masks" ... (the manifest's format is "semples-<kind>").
        producer: the module writing the folder.
        data: {dataset, root, split, name} of the images.
        classes: the dataset's class names.
        inputs: input records (`file_record`, `folder_record`, generator records).
        settings: every setting that changes the files.
        uncompared: settings recorded but not compared on reuse (batch sizes: same maps up to the last bits).
        file_format: one line on the files.
        extra: anything else the manifest records (phase, threshold source ...).
    """

    kind: str
    producer: str
    data: dict
    classes: list[str]
    inputs: dict
    settings: dict
    uncompared: tuple[str, ...] = ()
    file_format: str = ""
    extra: dict = field(default_factory=dict)

    def manifest(self) -> dict:
        return canonical({"format": f"semples-{self.kind}", "version": MANIFEST_VERSION, "producer": self.producer,
                          "data": self.data, "classes": self.classes, "inputs": self.inputs,
                          "settings": self.settings, "uncompared_settings": list(self.uncompared),
                          "file_format": self.file_format, **self.extra})


def check_folder_reuse(old: dict, record: FolderRecord, folder: str | Path) -> None:
    """Raises `ReuseError` unless the folder's manifest `old` names the same data, inputs and settings as `record`."""
    new = record.manifest()
    what = f"{folder} ({old.get('format', 'an output folder')})"
    if old.get("version") != MANIFEST_VERSION or old.get("format") != new["format"]:
        raise reuse_error(what, [f"format {old.get('format')} version {old.get('version')} -> {new['format']} "
                                 f"version {MANIFEST_VERSION} (written by another semples or another step)"],
                          "write elsewhere (--out)")
    diffs = [f"data {d}" for d in describe_config_differences(
        {k: (old.get("data") or {}).get(k) for k in ("dataset", "root", "split")},
        {k: new["data"].get(k) for k in ("dataset", "root", "split")})]
    diffs += input_differences(old.get("inputs") or {}, new["inputs"])
    diffs += describe_config_differences(old.get("settings") or {}, new["settings"], record.uncompared)
    if diffs:
        raise reuse_error(what, diffs, "write elsewhere (--out)")


def write_folder_manifest(folder: str | Path, record: FolderRecord, *, complete: bool, previous: dict | None = None,
                          counts: dict | None = None, failed: list[str] | None = None, last_run: dict | None = None,
                          extra: dict | None = None, status: str | None = None, write: bool = True) -> dict:
    """Writes (when `write`) and returns an output folder's manifest: the record, status and counts."""
    manifest = {**record.manifest(), **(extra or {})}
    if counts is None:  # before the work: keep what an earlier run counted
        manifest["status"] = "running"
        for key in ("counts", "failed", "last_run"):
            if previous and previous.get("version") == MANIFEST_VERSION and key in previous:
                manifest[key] = previous[key]
    else:
        manifest.update(status="finished", counts=counts, failed=failed or [], last_run=last_run or {})
    if status is not None:
        manifest["status"] = status
    manifest.update(complete=complete, updated=now())
    if write:
        atomic_write_json(Path(folder) / MANIFEST_NAME, manifest)
    return manifest


__all__ = ["MANIFEST_NAME", "MANIFEST_VERSION", "RUN_CONFIG", "RUN_MANIFEST", "FolderRecord", "RunLayout",
           "canonical", "check_folder_reuse", "config_differences", "data_record", "describe_config_differences",
           "file_record", "final_generator_folder", "flatten", "folder_fingerprint", "folder_record",
           "input_differences", "now", "read_folder_manifest", "recorded_split", "reuse_error", "scheme_folders",
           "write_folder_manifest"]
