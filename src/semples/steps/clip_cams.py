"""Step clip-cams: FMA-WSSS's CLIP Grad-CAM (+ CAA) seeds of a split into a CAM folder (METHOD.md §2).

The generator is a `ClipGradCAM` from a run folder (fma-classify: the coarse seeds; fma-segment: the fine ones; or
SemPLeS stages trained on the CLIP generator) or a fresh one with hand-written prompts (the training-free CLIP-ES
baseline). The work goes through the one inference runner with `semples.infer.clip_cams.ClipCamsTask`; the folder
is the format of `semples cams`, so eval-seeds and pseudo-masks read it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from semples.config import Config
from semples.data import build_dataset
from semples.engine.device import process_state
from semples.errors import ConfigError
from semples.infer.cams import FILE_FORMAT
from semples.infer.clip_cams import ClipCamsTask
from semples.infer.runner import limited_count, run_images
from semples.runs import FolderRecord, data_record

log = logging.getLogger(__name__)

def fma_generator(cfg: Config, source: str | Path | None, classes, clip=None, *, prompts: str | None = None,
                  device: torch.device | str = "cpu"):
    """The `ClipGradCAM` of a run folder / checkpoint (fma-classify, fma-segment, or SemPLeS stages on the CLIP
    generator), or — `source` None — a fresh one from ``cfg.generator.clip_cam`` (`prompts` overrides its prompt
    set; "handcrafted" = the training-free CLIP-ES baseline). Returns (generator, record for manifests)."""
    from semples.models.clip import load_clip
    from semples.models.mask_generators import ClipGradCAM, generator_context, load_generator

    gen_cfg = cfg.generator
    clip_cam = gen_cfg.clip_cam if prompts is None else dataclasses.replace(gen_cfg.clip_cam, prompts=prompts)
    gen_cfg = dataclasses.replace(gen_cfg, name="clip_gradcam", clip_cam=clip_cam)
    if source is None and clip_cam.prompts != "handcrafted":
        log.warning("CLIP Grad-CAM with UNTRAINED %s prompts (no run folder given)", clip_cam.prompts)
    if clip is None:
        clip = load_clip(cfg.clip, device)
    ctx_cfg = dataclasses.replace(cfg, generator=gen_cfg)
    generator, record = load_generator(source, gen_cfg, len(classes), context=generator_context(ctx_cfg, classes, clip),
                                       class_names=classes.names)
    if not isinstance(generator, ClipGradCAM):
        raise ConfigError(f"{source}: holds a {type(generator).__name__}, not a CLIP Grad-CAM generator")
    return generator, record


def run(cfg: Config, source: str | Path | None, out: str | Path, *, phase: str = "coarse", split: str | None = None,
        prompts: str | None = None, clip=None, limit: int | None = None, force: bool = False,
        progress: bool = True) -> dict:
    """CLIP Grad-CAM (+ CAA) seeds of a split into a CAM folder.

    Args:
        cfg: the experiment config (data, clip, generator.clip_cam, cams: scales/flip/eps/mixed_precision, fma: CAA
            and phases).
        source: run folder of fma-classify (phase "coarse"), fma-segment (phase "fine"), or None with
            ``prompts="handcrafted"`` for the training-free CLIP-ES baseline.
        out: the CAM folder.
        phase: "coarse" or "fine": the CAA box threshold (``fma.coarse_box_threshold`` / ``fine_box_threshold``).
        split: dataset split (default ``data.train_split``: FMA seeds feed stage fma-segment and the pseudo masks).
        prompts: override of the generator's prompt set (fresh generators only).
        clip: an already loaded frozen CLIP.
        limit: only the first `limit` images.
        force: recompute every file (and accept a folder made with other settings).
        progress: tqdm bar.

    Returns:
        The CAM folder's manifest.

    Raises:
        ReuseError: the folder holds CAMs made from another generator or other settings (unless `force`).
    """
    split = split or cfg.data.train_split
    dataset = build_dataset(cfg.data, split)
    state = process_state(cfg.device)
    generator, record = fma_generator(cfg, source, dataset.classes, clip, prompts=prompts, device=state.device)
    box, _ = cfg.fma.phase_settings(phase)
    caa = cfg.fma.caa
    task = ClipCamsTask(generator, scales=tuple(cfg.cams.scales), flip=cfg.cams.flip,
                        normalize_name=generator.input_norm, caa=caa if caa.enabled else None, box_threshold=box,
                        eps=cfg.cams.eps, mixed_precision=cfg.cams.mixed_precision)
    folder = FolderRecord(kind="cams", producer="semples.steps.clip_cams", data=data_record(cfg, split, dataset),
                          classes=list(dataset.classes.names), inputs={"generator": record}, settings=task.settings(),
                          file_format=FILE_FORMAT, extra={"phase": phase, "limit": limit})
    n = limited_count(limit, len(dataset))
    workers = cfg.cams.num_workers if cfg.cams.num_workers is not None else cfg.data.num_workers
    summary = run_images(task, dataset, out, indices=range(n), force=force, num_workers=workers,
                         skip_bad=cfg.data.skip_bad, progress=progress, state=state, record=folder)
    log.info("clip cams: %d written, %d already there -> %s", summary.written, summary.skipped, out)
    return summary.manifest


__all__ = ["fma_generator", "run"]
