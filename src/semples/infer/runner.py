"""The one per-image loop of every inference verb: CAMs, FMA's CLIP CAMs, CAA, pseudo masks.

A step describes what happens to one image as an `ImageTask` (read it, compute its output, write it); `run_images`
does everything around that, the same way for every step:

- **sharding**: images are taken in groups of ``group_size`` consecutive images; with several processes
  (``accelerate launch`` / ``torchrun``; `semples.engine.device.process_state`) group j goes to process
  j % processes, so each GPU or CPU process does its share;
- **reading** in DataLoader workers (decoding and resizing off the main process), **computing** in the main
  process on its device — or, for CPU-bound tasks (dense CRF, superpixels), in a pool of worker processes —, and
  **writing** on writer threads, atomically (semples never leaves half a file);
- **skip-if-done**: images whose output file exists and is whole (`output_complete`: a file cut short by
  something else is computed again) are not recomputed (``force`` redoes them). A task that
  batches images (`ImageTask.batches`) forms its batches over the whole group, also when part of the group is
  done, and recomputes the batches that hold a missing image: every image is always computed in the same batch as
  in an uninterrupted run, so an interrupted and continued folder holds the same bits;
- **one writer per folder**: the main process holds the folder's lock (`semples.utils.locks`) for the whole run;
  a second run into the same folder stops with a `RunLockError` naming the holder; temp files a killed run left
  are removed first;
- **manifests**: given a `FolderRecord`, the folder's ``manifest.json`` (`semples.runs` schema) is checked
  before any work — a folder made from other inputs or settings is refused with a `ReuseError` naming every
  difference — then written before the first file (an interrupted folder still says what it holds) and after the
  last one, with the counts over the whole split.
"""

from __future__ import annotations

import abc
import logging
import multiprocessing
import os
import time
import zipfile
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semples.errors import DataError
from semples.runs import FolderRecord, check_folder_reuse, read_folder_manifest, write_folder_manifest
from semples.utils.locks import FolderLock, remove_orphan_temp_files

if TYPE_CHECKING:
    import torch

    from semples.engine.processes import ProcessState

# No torch at import time: the worker processes of CPU-bound tasks (dense CRF, superpixels) unpickle tasks and items
# defined next to this module and start in a second.

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- the task
@dataclass
class ImageItem:
    """One image on its way through a task: its dataset index and id, what `ImageTask.read` made of it."""

    index: int
    id: str
    data: Any = None
    error: str | None = None  # "unreadable" reason (data.skip_bad): the image is recorded as failed and skipped


class ImageReader(abc.ABC):
    """Reads one image for a task; runs in DataLoader workers, so it holds nothing heavy (no model)."""

    @abc.abstractmethod
    def __call__(self, dataset, index: int) -> Any:
        """What the task's `compute` needs of image `index` (decoded, resized ...); raises DataError if unusable."""


class ImageTask(abc.ABC):
    """What one inference step does to one image (or to a batch of images); `run_images` does the rest.

    Attributes:
        name: shown in the progress bar and logs.
        suffix: the output file's suffix (``<out_dir>/<image id><suffix>``).
        processes: > 1: `compute` runs in that many worker processes (CPU-bound tasks; the task must pickle, and
            batches must be single images); otherwise in this process.
    """

    name: str = "images"
    suffix: str = ".npz"
    processes: int = 0

    def output_path(self, out_dir: Path, image_id: str) -> Path:
        """Where the output of `image_id` lives (ids may contain '/', kept as sub-folders)."""
        return Path(out_dir) / f"{image_id}{self.suffix}"

    def is_complete(self, path: Path) -> bool:
        """Whether an existing output file is whole (`output_complete`); an incomplete one is computed again."""
        return output_complete(path)

    @abc.abstractmethod
    def reader(self) -> ImageReader | Callable[[Any, int], Any]:
        """The (picklable) reader of one image."""

    def batches(self, items: list[ImageItem]) -> list[list[ImageItem]]:
        """How the readable images of one group are batched for `compute` (default: one image per batch)."""
        return [[it] for it in items]

    def setup(self, device: torch.device | str) -> None:  # noqa: B027 (optional hook)
        """Called once, before the first `compute` of this process: move models to `device`, build them."""

    @abc.abstractmethod
    def compute(self, batch: list[ImageItem]) -> list[Any]:
        """The outputs of a batch of images, in order."""

    @abc.abstractmethod
    def write(self, path: Path, item: ImageItem, output: Any) -> None:
        """Writes one output atomically (runs on a writer thread)."""

    def record(self, item: ImageItem, output: Any) -> None:  # noqa: B027 (optional hook)
        """Bookkeeping of one written output, in the main thread (e.g. pixel counts for the manifest). With a
        worker pool (`processes` > 1) outputs arrive in the order they finish, not in image order."""

    def summary(self) -> dict[str, Any]:
        """Extra manifest entries about this run's outputs (e.g. pixel fractions)."""
        return {}


# ---------------------------------------------------------------------------------------------------- the run
@dataclass
class RunSummary:
    """What a `run_images` call did (this process's share).

    Attributes:
        out_dir: the output folder.
        total: images asked for (after `indices` / a limit).
        written: files written by this call.
        skipped: images whose file already existed (not rewritten).
        computed: images run through `compute` (includes finished images of partly done batches).
        failed: "id: problem" for unreadable images (only with skip_bad).
        seconds: wall time of the loop.
        manifest: the manifest written (when a `FolderRecord` was given), else None.
    """

    out_dir: Path
    total: int
    written: int = 0
    skipped: int = 0
    computed: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    manifest: dict | None = None

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every PNG ends with


def output_complete(path: str | os.PathLike) -> bool:
    """Whether an output file is whole, from its end: an ``.npz`` (a zip) must open (its central directory is the
    last thing written), a ``.png`` must end with the IEND chunk, anything else must be non-empty.

    semples writes atomically, so its own files are always whole; this catches files cut short by anything else
    (a copy or sync that stopped, a full disk under another writer) — existence alone is no proof.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return False
        suffix = os.path.splitext(str(path))[1].lower()
        if suffix == ".npz":
            with zipfile.ZipFile(path) as z:
                return bool(z.namelist())
        if suffix == ".png":
            with open(path, "rb") as f:
                f.seek(max(size - len(_PNG_END), 0))
                return f.read() == _PNG_END
        return True
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile):
        return False


def limited_count(limit: int | None, total: int) -> int:
    """How many of `total` images a ``limit`` (a step's "only the first N") selects; `ConfigError` unless >= 1."""
    if limit is None:
        return total
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        from semples.errors import ConfigError

        raise ConfigError(f"limit must be a whole number >= 1 (the first N images), got {limit!r}")
    return min(limit, total)


def make_groups(indices: Sequence[int], group_size: int) -> list[list[int]]:
    """Consecutive runs of `group_size` indices (the last may be shorter)."""
    indices = list(indices)
    return [indices[i: i + group_size] for i in range(0, len(indices), group_size)]


def unwrap_dataset(dataset):
    """The reader under `SkipBadItems` wrappers: inference never substitutes another image for a bad one."""
    from semples.data.skip import SkipBadItems

    while isinstance(dataset, SkipBadItems):
        dataset = dataset.dataset
    return dataset


class GroupReader:
    """Item j = the images of group j, read by a task's reader (a map-style dataset for DataLoader workers)."""

    def __init__(self, dataset, groups: list[list[int]], read, skip_bad: bool) -> None:
        self.dataset, self.groups, self.read, self.skip_bad = dataset, groups, read, skip_bad

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, j: int) -> list[ImageItem]:
        items = []
        for index in self.groups[j]:
            item = ImageItem(index, self.dataset.ids[index])
            try:
                item.data = self.read(self.dataset, index)
            except DataError as e:
                if not self.skip_bad:
                    raise
                item.error = str(e)
            items.append(item)
        return items


def _identity(batch):
    return batch


def image_loader(dataset, groups: list[list[int]], read, *, num_workers: int = 0, skip_bad: bool = False):
    """The DataLoader the runner reads through: one item per group (a list of `ImageItem`), read by `read`
    (``read(dataset, index)``) in `num_workers` worker processes, two groups prefetched per worker. Without
    workers the groups are read in turn in this process (what a DataLoader without workers does), without torch."""
    reader = GroupReader(dataset, groups, read, skip_bad)
    if num_workers == 0:
        return (reader[j] for j in range(len(reader)))
    import torch

    return torch.utils.data.DataLoader(reader, batch_size=None, shuffle=False,
                                       num_workers=num_workers, collate_fn=_identity,
                                       prefetch_factor=2 if num_workers else None, persistent_workers=False)


_WORKER_TASK: ImageTask | None = None
# images handed to the worker pool ahead of its results, per worker process: enough that a worker never waits for
# the main process while images of very different cost (a 2-class and a 6-class CRF) are in flight, few enough
# that the images held in memory stay a handful (~3 MB each at VOC size)
IN_FLIGHT_PER_PROCESS = 4


def _init_worker(task: ImageTask) -> None:
    global _WORKER_TASK
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER_TASK = task
    task.setup("cpu")


def _compute_in_worker(item: ImageItem) -> Any:
    assert _WORKER_TASK is not None
    return _WORKER_TASK.compute([item])[0]


def run_images(task: ImageTask, dataset, out_dir: str | Path, *, indices: Sequence[int] | None = None,
               group_size: int = 1, force: bool = False, num_workers: int = 0, skip_bad: bool = False,
               progress: bool = True, state: ProcessState | None = None, record: FolderRecord | None = None,
               device: str = "auto") -> RunSummary:
    """Runs `task` over the images of `dataset` into `out_dir` (see the module docstring).

    Args:
        task: what to do to each image.
        dataset: the split (a `SegmentationDataset`; `SkipBadItems` wrappers are removed).
        out_dir: the output folder.
        indices: dataset indices to process (default: all), in order; groups are formed over this list.
        group_size: images per group (the unit of sharding, reading and resumption).
        force: recompute and overwrite every file (and accept a folder made with other settings).
        num_workers: DataLoader workers reading images.
        skip_bad: record unreadable images and go on (else the first one stops the run).
        progress: a tqdm bar (images/second) on the main process.
        state: this process's device and share (default: `process_state(device)`).
        record: what the folder holds (inputs, settings, data); given, the folder's manifest is checked and written.
        device: the ``device`` setting, when `state` is not given.

    Returns:
        This process's `RunSummary` (with the manifest when `record` was given).

    Raises:
        ReuseError: `out_dir` holds outputs made from other inputs or settings (unless `force`).
        RunLockError: another process is writing into `out_dir`.
    """
    out_dir = Path(out_dir)
    if state is None:
        from semples.engine.device import process_state

        state = process_state(device)
    # one writer per folder: the main process holds the folder's lock from the reuse check to the last manifest
    with FolderLock(out_dir, "output folder", enabled=state.is_main_process):
        if state.is_main_process:
            remove_orphan_temp_files(out_dir, recursive=True)
        return _run_locked(task, dataset, out_dir, indices=indices, group_size=group_size, force=force,
                           num_workers=num_workers, skip_bad=skip_bad, progress=progress, state=state, record=record)


def _run_locked(task: ImageTask, dataset, out_dir: Path, *, indices: Sequence[int] | None, group_size: int,
                force: bool, num_workers: int, skip_bad: bool, progress: bool, state: ProcessState,
                record: FolderRecord | None) -> RunSummary:
    dataset = unwrap_dataset(dataset)
    indices = list(range(len(dataset))) if indices is None else list(indices)
    summary = RunSummary(out_dir=out_dir, total=len(indices))
    old = read_folder_manifest(out_dir) if record is not None else None
    if record is not None:
        if old is not None and not force:
            check_folder_reuse(old, record, out_dir)
        if state.is_main_process:  # before the first file: an interrupted folder still says what it holds
            write_folder_manifest(out_dir, record, complete=False, previous=old)
        state.wait_for_everyone()

    groups = [g for j, g in enumerate(make_groups(indices, group_size)) if j % state.count == state.index]
    done, incomplete = set(), []
    for i in (i for g in groups for i in g) if not force else ():
        path = task.output_path(out_dir, dataset.ids[i])
        if not path.is_file():
            continue
        if task.is_complete(path):
            done.add(i)
        else:
            incomplete.append(path)
    if incomplete:
        log.warning("%s: %d output file(s) are incomplete (cut short) and are computed again, e.g. %s", out_dir,
                    len(incomplete), incomplete[0])
    todo = [g for g in groups if any(i not in done for i in g)]
    summary.skipped = sum(1 for g in groups for i in g if i in done)
    start = time.perf_counter()
    try:
        if todo:
            _run_groups(task, dataset, out_dir, todo, done, summary, num_workers=num_workers, skip_bad=skip_bad,
                        progress=progress and state.is_main_process, device=state.device)
    except BaseException as e:
        if record is not None and state.is_main_process:
            write_folder_manifest(out_dir, record, complete=False, previous=old,
                                  status=f"interrupted: {type(e).__name__}: {e}"[:500])
        raise
    summary.seconds = time.perf_counter() - start

    if record is not None:
        state.wait_for_everyone()
        present = sum(1 for i in range(len(dataset)) if task.output_path(out_dir, dataset.ids[i]).is_file())
        counts = {"split_images": len(dataset), "requested": len(indices), "present": present,
                  "written_this_run": summary.written, "skipped_this_run": summary.skipped,
                  "failed_this_run": len(summary.failed),
                  "this_run_counts_cover": "all processes" if state.count == 1 else "the main process only"}
        last_run = {"seconds": round(summary.seconds, 3), "images_per_second": round(summary.images_per_second, 3),
                    "device": str(state.device), "processes": state.count,
                    "compute_processes": max(task.processes, 1)}
        summary.manifest = write_folder_manifest(
            out_dir, record, complete=present == len(dataset), previous=old, counts=counts, failed=summary.failed,
            last_run=last_run, extra=task.summary(), write=state.is_main_process)
    return summary


def _run_groups(task: ImageTask, dataset, out_dir: Path, todo: list[list[int]], done: set[int],
                summary: RunSummary, *, num_workers: int, skip_bad: bool, progress: bool,
                device: torch.device) -> None:
    from tqdm.auto import tqdm

    task.setup(device)
    loader = image_loader(dataset, todo, task.reader(), num_workers=num_workers, skip_bad=skip_bad)
    bar = tqdm(total=sum(len(g) for g in todo), desc=task.name, unit="img", disable=not progress,
               dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
                                              "{rate_noinv_fmt}]")
    pending: deque[Future] = deque()
    in_pool = task.processes > 1 and sum(len(g) for g in todo) >= 4 * task.processes  # a few images: no pool
    pool = None
    if in_pool:  # spawn: no fork after torch/OpenMP threads have started
        pool = ProcessPoolExecutor(max_workers=task.processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(task,))
    computing: dict[Future, ImageItem] = {}

    def written(item: ImageItem, output: Any) -> None:
        pending.append(writer.submit(task.write, task.output_path(out_dir, item.id), item, output))
        task.record(item, output)
        summary.written += 1

    def collect(limit: int) -> None:
        """Writes the pool's results as they finish (any order: one slow image must not leave a worker idle
        behind it) until at most `limit` images are in the pool."""
        while len(computing) > limit:
            finished, _ = wait(computing, return_when=FIRST_COMPLETED)
            for fut in finished:
                written(computing.pop(fut), fut.result())
                bar.update(1)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"{task.name}-writer") as writer:
        try:
            for items in loader:
                for bad in (it for it in items if it.error is not None):
                    summary.failed.append(f"{bad.id}: {bad.error}")
                    log.warning("skipping unreadable image %s", bad.error)
                    bar.update(1)
                for batch in task.batches([it for it in items if it.error is None]):
                    if all(it.index in done for it in batch):  # (batches are fixed by the whole group)
                        bar.update(len(batch))
                        continue
                    if pool is not None:
                        for it in batch:
                            summary.computed += 1
                            if it.index in done:
                                bar.update(1)
                                continue
                            computing[pool.submit(_compute_in_worker, it)] = it
                        collect(IN_FLIGHT_PER_PROCESS * task.processes)
                        continue
                    outputs = task.compute(batch)
                    for it, output in zip(batch, outputs, strict=True):
                        summary.computed += 1
                        if it.index not in done:
                            written(it, output)
                    bar.update(len(batch))
                # keep the writers a bounded number of images behind, surface their errors early
                while len(pending) > 128:
                    pending.popleft().result()
            collect(0)
            for f in pending:
                f.result()
        finally:
            for f in pending:
                f.cancel()
            for f in computing:
                f.cancel()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            bar.close()


__all__ = ["GroupReader", "ImageItem", "ImageReader", "ImageTask", "RunSummary", "image_loader", "limited_count",
           "make_groups", "output_complete", "run_images", "unwrap_dataset"]
