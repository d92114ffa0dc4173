"""Step cams: multi-scale + flip seeds (CAMs) of a trained mask generator over a split (`semples cams`).

The generator comes from a run folder (or random weights for plumbing tests); the work goes through the one
inference runner (`semples.infer.runner`: groups sharded across processes/GPUs, reading in DataLoader workers,
skip-if-done, atomic files) with `semples.infer.cams.CamsTask`; the folder's manifest (`semples.runs` schema)
records the generator's sha256 and every setting, and a folder made from another generator or other settings is
refused unless ``force``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from semples.config import Config
from semples.data import build_dataset
from semples.engine.device import process_state
from semples.infer.cams import BATCH_SETTINGS, FILE_FORMAT, CamsTask, cams_settings
from semples.infer.runner import limited_count, run_images
from semples.models.mask_generators import generator_context, load_generator
from semples.runs import FolderRecord, RunLayout, data_record

log = logging.getLogger(__name__)


@dataclass
class CamsResult:
    """What `run` did (this process's share) and where.

    Attributes:
        out_dir: the CAM folder.
        split: the split of the images.
        written, skipped, failed: files written, images already done, "id: problem" of unreadable images.
        present, split_images: files in the folder after the run, images in the split.
        images_per_second: of the images computed by this process.
        manifest: the folder's manifest.
    """

    out_dir: Path
    split: str
    written: int
    skipped: int
    failed: list[str]
    present: int
    split_images: int
    images_per_second: float
    computed: int
    manifest: dict


def default_split(cfg: Config) -> str:
    """The split CAMs are made for when none is given: ``cams.split``, else ``data.eval_split``."""
    return cfg.cams.split or cfg.data.eval_split


def run(cfg: Config, generator: str | Path | None, *, split: str | None = None, out: str | Path | None = None,
        limit: int | None = None, force: bool = False, progress: bool = True, allow_unfinished: bool = False
        ) -> CamsResult:
    """Writes the CAMs of a split into a CAM folder (one ``<id>.npz`` per image + manifest.json).

    Args:
        cfg: the experiment config (sections data, generator, cams, device).
        generator: run folder or checkpoint of the mask generator; None for random weights (plumbing only).
        split: dataset split (default `default_split`).
        out: CAM folder (default ``<output_dir>/<experiment>/cams/<split>``, or ``cams.out_dir``).
        limit: only the first `limit` images of the split.
        force: recompute every file (also when the folder's manifest names other inputs or settings).
        progress: tqdm bar.
        allow_unfinished: accept the checkpoint of an unfinished training run (refused otherwise).

    Returns:
        A `CamsResult` (counts of this process; the manifest counts the whole split).

    Raises:
        ReuseError: the folder holds CAMs of another generator or other settings (unless `force`).
        CheckpointError: the generator's checkpoint is missing, unfinished, of other classes, or does not fit.
        RunLockError: another process is writing into the CAM folder.
    """
    split = split or default_split(cfg)
    out_dir = Path(out) if out is not None else RunLayout(cfg).cams(split)
    dataset = build_dataset(cfg.data, split)
    names = list(dataset.classes.names)
    gen_cfg = cfg.generator
    if generator is None:
        torch.manual_seed(cfg.seed)
        gen_cfg = dataclasses.replace(gen_cfg, pretrained=False, backbone_checkpoint=None)
        log.warning("cams from a mask generator with RANDOM weights: for plumbing tests only")
    # class and background names for generators with text prompts (CLIP Grad-CAM); the others ignore them
    model, record = load_generator(generator, gen_cfg, len(names), context=generator_context(cfg, dataset.classes),
                                   class_names=names, allow_unfinished=allow_unfinished)
    state = process_state(cfg.device)
    n = limited_count(limit, len(dataset))
    folder = FolderRecord(kind="cams", producer="semples.steps.cams", data=data_record(cfg, split, dataset),
                          classes=names, inputs={"generator": record}, settings=cams_settings(cfg.cams),
                          uncompared=BATCH_SETTINGS, file_format=FILE_FORMAT, extra={"limit": limit})
    workers = cfg.cams.num_workers if cfg.cams.num_workers is not None else cfg.data.num_workers
    summary = run_images(CamsTask(model, cfg.cams), dataset, out_dir, indices=range(n),
                         group_size=cfg.cams.group_size, force=force, num_workers=workers,
                         skip_bad=cfg.data.skip_bad, progress=progress, state=state, record=folder)
    counts = summary.manifest["counts"]
    return CamsResult(out_dir, split, summary.written, summary.skipped, summary.failed, counts["present"],
                      counts["split_images"], summary.images_per_second, summary.computed, summary.manifest)


__all__ = ["CamsResult", "default_split", "run"]
