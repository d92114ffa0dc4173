"""The one per-image loop (`semples.infer.runner`): shards across processes, skips what is done, writes manifests,
refuses other settings, and gives the same files with a worker pool as without."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semples.engine.device import ProcessState
from semples.errors import ReuseError
from semples.infer.cam_io import cam_path, load_cam, save_cam
from semples.infer.config import PseudoMaskConfig
from semples.infer.pseudo_masks import generate_pseudo_masks
from semples.infer.runner import ImageItem, ImageTask, run_images
from semples.runs import FolderRecord
from tests.conftest import ToyDataset


def read_label(dataset, index):
    return np.flatnonzero(dataset.labels(index))


class LabelTask(ImageTask):
    """Writes each image's label classes as a one-pixel CAM file (what it read, nothing computed)."""

    name = "labels"

    def __init__(self) -> None:
        self.computed: list[str] = []

    def reader(self):
        return read_label

    def compute(self, batch: list[ImageItem]) -> list[np.ndarray]:
        self.computed += [it.id for it in batch]
        return [np.ones((len(it.data), 1, 1), np.float32) for it in batch]

    def write(self, path, item, output) -> None:
        save_cam(path, output, item.data)


def record(value: int) -> FolderRecord:
    return FolderRecord(kind="labels", producer="test", data={"dataset": "toy", "root": None, "split": "all",
                                                             "name": "toy"},
                        classes=["cat", "dog", "boat"], inputs={}, settings={"value": value})


def test_processes_share_the_groups_and_the_manifest_counts_the_split(tmp_path):
    ds = ToyDataset(n=7)
    tasks = [LabelTask(), LabelTask()]
    for rank, task in enumerate(tasks):  # what two launched processes do, one after the other here
        run_images(task, ds, tmp_path, group_size=2, progress=False, state=ProcessState("cpu", rank, 2),
                   record=record(1))
    assert tasks[0].computed == ["toy000", "toy001", "toy004", "toy005"]  # groups 0 and 2
    assert tasks[1].computed == ["toy002", "toy003", "toy006"]
    for i, image_id in enumerate(ds.ids):
        _, classes = load_cam(cam_path(tmp_path, image_id))
        assert classes.tolist() == read_label(ds, i).tolist()
    again = LabelTask()
    summary = run_images(again, ds, tmp_path, progress=False, state=ProcessState("cpu"), record=record(1))
    assert again.computed == [] and summary.skipped == 7
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["counts"]["present"] == 7 and manifest["status"] == "finished"
    assert manifest["format"] == "semples-labels" and manifest["data"]["split"] == "all"
    with pytest.raises(ReuseError, match="value: 1 -> 2"):
        run_images(LabelTask(), ds, tmp_path, progress=False, state=ProcessState("cpu"), record=record(2))
    forced = LabelTask()
    run_images(forced, ds, tmp_path, force=True, progress=False, state=ProcessState("cpu"), record=record(2))
    assert len(forced.computed) == 7


def test_an_interrupted_run_says_so_in_its_manifest(tmp_path):
    class Dying(LabelTask):
        def compute(self, batch):
            if batch[0].index == 3:
                raise KeyboardInterrupt
            return super().compute(batch)

    ds = ToyDataset(n=5)
    with pytest.raises(KeyboardInterrupt):
        run_images(Dying(), ds, tmp_path, progress=False, state=ProcessState("cpu"), record=record(1))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"].startswith("interrupted") and not manifest["complete"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_pseudo_masks_in_worker_processes_equal_those_made_in_process(tmp_path):
    ds = ToyDataset(n=8)
    cams = tmp_path / "cams"
    rng = np.random.default_rng(0)
    for i, image_id in enumerate(ds.ids):
        classes = read_label(ds, i)
        mask = ds.load_mask(i)
        maps = np.stack([(mask == k + 1).astype(np.float32) * 0.8 + 0.2 * rng.random(mask.shape, np.float32)
                         for k in classes])
        save_cam(cam_path(cams, image_id), maps, classes)
    assert PseudoMaskConfig().workers == 2  # parallel by default
    one = generate_pseudo_masks(ds, cams, tmp_path / "one", PseudoMaskConfig(workers=1), 0.4, progress=False)
    two = generate_pseudo_masks(ds, cams, tmp_path / "two", PseudoMaskConfig(), 0.4, progress=False)
    assert one.written == two.written == 8
    assert two.manifest["last_run"]["compute_processes"] == 2 and one.manifest["last_run"]["compute_processes"] == 1
    def png(folder, image_id):
        return (tmp_path / folder / f"{image_id}.png").read_bytes()

    assert all(png("one", i) == png("two", i) for i in ds.ids)  # the same files, byte for byte
    assert one.pixels == two.pixels and sum(one.pixels.values()) > 0
    assert one.manifest["pixels_written"] == two.manifest["pixels_written"]
    # an interrupted parallel folder, continued: the missing files come back the same, the others are kept
    for image_id in ds.ids[2:5]:
        (tmp_path / "two" / f"{image_id}.png").unlink()
    again = generate_pseudo_masks(ds, cams, tmp_path / "two", PseudoMaskConfig(), 0.4, progress=False)
    assert (again.written, again.skipped_existing) == (3, 5) and again.manifest["complete"]
    assert all(png("one", i) == png("two", i) for i in ds.ids)


def test_a_truncated_output_file_is_computed_again_not_kept(tmp_path):
    """Issue 12, item 7: completeness is judged by the file's end, not by its existence."""
    ds = ToyDataset(n=4)
    run_images(LabelTask(), ds, tmp_path, progress=False, state=ProcessState("cpu"), record=record(1))
    path = cam_path(tmp_path, "toy002")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy that stopped half-way
    (tmp_path / "toy003.npz").write_bytes(b"")
    again = LabelTask()
    summary = run_images(again, ds, tmp_path, progress=False, state=ProcessState("cpu"), record=record(1))
    assert again.computed == ["toy002", "toy003"] and summary.skipped == 2
    assert load_cam(path)[1].tolist() == read_label(ds, 2).tolist()


def test_output_complete_reads_the_end_of_npz_and_png_files(tmp_path):
    from semples.data.io import write_mask_png
    from semples.infer.runner import output_complete

    save_cam(tmp_path / "a.npz", np.ones((1, 4, 4), np.float32), [0])
    write_mask_png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    for name in ("a.npz", "a.png"):
        assert output_complete(tmp_path / name)
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[:-5])
        assert not output_complete(tmp_path / f"cut_{name}")
    assert not output_complete(tmp_path / "missing.npz")


def test_limits_below_one_are_an_error_not_an_empty_run():
    from semples.errors import ConfigError
    from semples.infer.runner import limited_count

    assert limited_count(None, 7) == 7 and limited_count(3, 7) == 3 and limited_count(30, 7) == 7
    for bad in (0, -3):
        with pytest.raises(ConfigError, match=f"limit must be a whole number >= 1.*got {bad}"):
            limited_count(bad, 7)


def test_the_output_folder_is_locked_and_a_killed_runs_temp_files_are_cleared(tmp_path):
    import subprocess
    import sys
    import time

    from semples.errors import RunLockError

    ds = ToyDataset(n=3)
    out = tmp_path / "cams"
    (out / "sub").mkdir(parents=True)
    orphan = out / "sub" / ".toy001.npz.k2j4x9_a.tmp"  # what a killed writer thread leaves
    orphan.write_bytes(b"half")
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from semples.utils.locks import FolderLock; FolderLock(sys.argv[1], 'CAM folder')"
                               ".acquire(); Path(sys.argv[2]).touch(); time.sleep(300)", str(out), str(ready)])
    try:
        while not ready.exists():
            assert holder.poll() is None
            time.sleep(0.05)
        with pytest.raises(RunLockError, match=f"{out}: process {holder.pid}"):
            run_images(LabelTask(), ds, out, progress=False, state=ProcessState("cpu"), record=record(1))
        assert orphan.exists() and not (out / "manifest.json").exists()  # the loser touched nothing
    finally:
        holder.kill()
        holder.wait()
    run_images(LabelTask(), ds, out, progress=False, state=ProcessState("cpu"), record=record(1))
    assert not orphan.exists() and json.loads((out / "manifest.json").read_text())["complete"]
