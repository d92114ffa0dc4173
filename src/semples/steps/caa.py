"""Step caa: CAA refinement of any CAM folder with a frozen CLIP's attention (SemPLeS + FMA, METHOD.md §2).

SemPLeS seeds of `semples cams` are refined with the class-aware attention affinity of the experiment's frozen CLIP
(``clip`` section; FMA-WSSS: ViT-B-16) at the box threshold of a phase, into a new CAM folder, through the one
inference runner with `semples.infer.caa.CaaTask`. Follow with the SAMS pseudo masks of `semples.methods.fma`.
"""

from __future__ import annotations

from pathlib import Path

from semples.config import Config
from semples.data import build_dataset
from semples.engine.device import process_state
from semples.errors import MissingInputError
from semples.infer.caa import CaaTask
from semples.infer.cam_io import cam_path
from semples.infer.cams import FILE_FORMAT
from semples.infer.runner import limited_count, run_images, unwrap_dataset
from semples.runs import FolderRecord, data_record, folder_record, read_folder_manifest


def run(cfg: Config, cams_in: str | Path, out: str | Path, *, phase: str = "fine", split: str | None = None,
        clip=None, scale: float = 1.0, limit: int | None = None, force: bool = False, progress: bool = True) -> dict:
    """CAA of the CAM folder `cams_in` (every image of the split must have a file) into the CAM folder `out`.

    Args:
        cfg: the experiment config (data, clip, cams.eps, fma.caa and the phases' box thresholds).
        cams_in: the CAM folder to refine.
        out: the new CAM folder.
        phase: "coarse" or "fine" (box threshold ``fma.coarse_box_threshold`` / ``fine_box_threshold``).
        split: dataset split (default ``data.train_split``).
        clip: an already loaded frozen CLIP.
        scale: resize factor of the image CLIP sees.
        limit, force, progress: as for every inference step.

    Returns:
        The new folder's manifest.

    Raises:
        MissingInputError: an image of the split has no CAM file in `cams_in`.
        ReuseError: `out` holds CAMs made from other inputs or settings (unless `force`).
    """
    from semples.models.clip import load_clip

    split = split or cfg.data.train_split
    dataset = unwrap_dataset(build_dataset(cfg.data, split))
    state = process_state(cfg.device)
    if clip is None:
        clip = load_clip(cfg.clip, state.device)
    box, _ = cfg.fma.phase_settings(phase)
    cams_in = Path(cams_in)
    n = limited_count(limit, len(dataset))
    missing = [dataset.ids[i] for i in range(n) if not cam_path(cams_in, dataset.ids[i]).is_file()]
    if missing:
        raise MissingInputError(f"{cams_in}: no CAM file for {len(missing)} of {n} images (first: {missing[0]}); "
                                f"run `semples cams` on this split first")
    task = CaaTask(clip, cams_in, caa=cfg.fma.caa, box_threshold=box, scale=scale, eps=cfg.cams.eps)
    source = read_folder_manifest(cams_in) or {}
    folder = FolderRecord(kind="cams", producer="semples.steps.caa", data=data_record(cfg, split, dataset),
                          classes=list(dataset.classes.names),
                          inputs={"cams": folder_record(cams_in), "clip": getattr(clip, "source", None) or {}},
                          settings=task.settings(), file_format=FILE_FORMAT,
                          extra={"phase": phase, "limit": limit,
                                 "source_manifest": {k: source.get(k) for k in ("inputs", "settings")}})
    workers = cfg.cams.num_workers if cfg.cams.num_workers is not None else cfg.data.num_workers
    summary = run_images(task, dataset, out, indices=range(n), force=force, num_workers=workers, progress=progress,
                         state=state, record=folder)
    return summary.manifest


__all__ = ["run"]
