"""`semples data check`: read every item of a dataset's splits and report counts and every problem.

A split is checked by building its reader (list/label entries that cannot be used are collected rather than
stopping at the first), then reading every item fully (``decode=False``: file headers only) on a few threads.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from semples.data.base import ClassTable, DataError, SegmentationDataset
from semples.data.config import DataConfig

log = logging.getLogger(__name__)


@dataclass
class SplitReport:
    """What `check_split` found in one split."""

    split: str
    images: int = 0  # items in the split
    masks: int | None = None  # items with a mask (None: the split has no masks)
    labelled: int = 0  # items with at least one foreground label
    bad: int = 0  # items that cannot be read
    checked: int = 0  # items actually read (all unless a limit was given)
    class_counts: list[int] = field(default_factory=list)  # images per class
    problems: list[str] = field(default_factory=list)  # errors, one line each, naming the file
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the split could not be built at all


@dataclass
class CheckReport:
    """The whole check: per-split reports and the class table."""

    dataset: str
    root: str | None
    classes: ClassTable | None
    splits: list[SplitReport]

    @property
    def usable(self) -> bool:
        """True when every split was built, is non-empty and has no unreadable item."""
        return bool(self.splits) and all(s.error is None and s.images > 0 and not s.problems for s in self.splits)

    @property
    def num_problems(self) -> int:
        return sum(len(s.problems) + (s.error is not None) for s in self.splits)


def default_splits(cfg: DataConfig) -> list[str]:
    """Splits to check when none are named: every split the reader finds, else the config's train/eval splits."""
    from semples.data import dataset_spec

    finder = dataset_spec(cfg.dataset).splits if cfg.root else None
    if finder is not None:
        try:
            found = finder(cfg.root, cfg.options)
            if found:
                return found
        except DataError:
            pass
    return list(dict.fromkeys([cfg.train_split, cfg.eval_split]))


def _build_for_check(cfg: DataConfig, split: str) -> SegmentationDataset:
    from semples.data import dataset_spec

    # skip_bad collects every bad list/labels entry instead of stopping at the first
    return dataset_spec(cfg.dataset).build(dataclasses.replace(cfg, skip_bad=True), split)


def _item_problems(dataset: SegmentationDataset, index: int, decode: bool) -> list[str]:
    check = getattr(dataset, "check_item", None)
    if check is not None:
        return check(index, decode=decode)
    try:
        item = dataset[index]
        if item.mask is not None and item.mask.shape != (item.image.height, item.image.width):
            return [f"item {item.id!r}: mask is {item.mask.shape[1]}x{item.mask.shape[0]}, image is "
                    f"{item.image.width}x{item.image.height}"]
    except DataError as e:
        return [str(e)]
    return []


def check_split(cfg: DataConfig, split: str, decode: bool = True, limit: int | None = None, workers: int = 4,
                progress: bool = True) -> tuple[SplitReport, ClassTable | None]:
    """Builds split `split` of `cfg` and reads its items; never raises DataError (it lands in the report)."""
    from tqdm.auto import tqdm

    report = SplitReport(split)
    try:
        dataset = _build_for_check(cfg, split)
    except DataError as e:
        report.error = str(e)
        return report, None
    n = len(dataset)
    report.images = n
    report.warnings.extend(getattr(dataset, "warnings", []))
    report.notes.extend(getattr(dataset, "notes", []))
    report.problems.extend(getattr(dataset, "bad_entries", []))
    has_mask_file = getattr(dataset, "has_mask_file", None)
    if dataset.has_masks:
        report.masks = sum(bool(has_mask_file(i)) for i in range(n)) if has_mask_file else n
    k = len(dataset.classes)
    counts = np.zeros(k, dtype=np.int64)
    known = dataset.known_labels() if hasattr(dataset, "known_labels") else None
    known_errors = dataset.known_errors() if hasattr(dataset, "known_errors") else {}
    for i in range(n):
        if i in known_errors:
            continue
        try:
            vec = known[i] if known is not None else dataset.labels(i)
        except DataError:
            continue
        vec = np.asarray(vec) > 0
        counts += vec
        report.labelled += int(vec.any())
    report.class_counts = counts.tolist()

    indices = range(n if limit is None else min(n, limit))
    report.checked = len(indices)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda i: _item_problems(dataset, i, decode), indices)
        for problems in tqdm(results, total=len(indices), desc=f"{cfg.dataset} {split}", disable=not progress,
                             leave=False):
            if problems:
                report.bad += 1
                report.problems.extend(problems)
    return report, dataset.classes


def check_dataset(cfg: DataConfig, splits: Sequence[str] | None = None, decode: bool = True,
                  limit: int | None = None, workers: int = 4, progress: bool = True) -> CheckReport:
    """Checks `splits` (default: `default_splits(cfg)`) of the dataset described by `cfg`."""
    names = list(splits) if splits else default_splits(cfg)
    reports, classes = [], None
    for split in names:
        rep, table = check_split(cfg, split, decode, limit, workers, progress)
        reports.append(rep)
        classes = classes or table
    return CheckReport(cfg.dataset, cfg.root, classes, reports)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    def line(r: list[str]) -> str:
        return "  ".join(str(v).ljust(w) if c == 0 else str(v).rjust(w) for c, (v, w) in enumerate(zip(r, widths))
                         ).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def format_report(report: CheckReport) -> str:
    """The report as text: split table, class table, problems, warnings and a verdict."""
    out = [f"dataset {report.dataset}" + (f" at {report.root}" if report.root else ""), ""]
    rows = []
    for s in report.splits:
        if s.error is not None:
            rows.append([s.split, "-", "-", "-", "-", "cannot be built"])
            continue
        masks = "-" if s.masks is None else str(s.masks)
        checked = "" if s.checked == s.images else f"{s.checked} read"
        rows.append([s.split, str(s.images), masks, str(s.labelled), str(s.bad), checked])
    out.append(_table(["split", "images", "masks", "labelled", "bad", ""], rows))
    built = [s for s in report.splits if s.error is None]
    if report.classes is not None and built:
        out.append("")
        out.append("images per class")
        rows = [[f"{k + 1:>3} {name}", *(str(s.class_counts[k]) if s.class_counts else "-" for s in built)]
                for k, name in enumerate(report.classes.names)]
        out.append(_table(["class", *(s.split for s in built)], rows))
    for s in report.splits:
        if s.notes:
            out.append("")
            out.append(f"notes ({s.split}):")
            out.extend(f"  {n}" for n in s.notes)
    for s in report.splits:
        if s.error is not None or s.problems:
            out.append("")
            count = 1 if s.error is not None else len(s.problems)
            out.append(f"problems ({s.split}, {count}):")
            if s.error is not None:
                out.append(f"  {s.error}")
            out.extend(f"  {p}" for p in s.problems)
    for s in report.splits:
        if s.warnings:
            out.append("")
            out.append(f"warnings ({s.split}, {len(s.warnings)}):")
            out.extend(f"  {w}" for w in s.warnings)
    out.append("")
    if report.usable:
        warn = sum(len(s.warnings) for s in report.splits)
        out.append("OK: the dataset can be used" + (f" ({warn} warnings above)" if warn else ""))
    else:
        empty = [s.split for s in report.splits if s.error is None and s.images == 0]
        n = report.num_problems
        msg = f"UNUSABLE: {n} problem{'' if n == 1 else 's'}"
        if empty:
            msg += f"; empty splits: {', '.join(empty)}"
        if any(s.problems for s in report.splits):
            msg += ". Fix them, or set data.skip_bad: true to skip unreadable items during training"
        out.append(msg)
    return "\n".join(out)
