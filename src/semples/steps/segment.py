"""Steps train-seg and eval-seg: the final segmentation model (METHOD.md §1.7) on pseudo masks, and its evaluation.

    train(cfg, pseudo_masks)   -> <output_dir>/<experiment>/segment/  config.yaml, checkpoint.pt, metrics.jsonl,
                                  manifest.json (the engine's run folder)
    evaluate(cfg, run_dir)     -> <run_dir>/eval/<split>/  metrics.json, metrics.md [, predictions/]
                                  (`semples.evaluate.segmenter`)

Training runs stage `segment` (`semples.stages.SegmentStage`) through the one engine, so checkpoints, resume and
several processes work as for every stage; a finished run is reused only when its recorded config and the
fingerprint of its pseudo-mask folder match.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from pathlib import Path

import torch

from semples.config import Config, dump_config
from semples.data import TransformedDataset, build_dataset
from semples.data.base import item_seed
from semples.data.pseudo import PseudoMaskDataset
from semples.data.seg_transforms import SegTrainTransform
from semples.data.skip import SkipBadItems, bad_items_report
from semples.engine import StageResult, make_accelerator, train_stage
from semples.evaluate.segmenter import evaluate_segmentation
from semples.runs import RunLayout, folder_fingerprint, read_folder_manifest, recorded_split
from semples.stages import SegmentStage
from semples.utils.checkpoint_io import CHECKPOINT_NAME, resolve_checkpoint

log = logging.getLogger(__name__)

STAGE_NAME = SegmentStage.name


def training_config_dict(cfg: Config, pseudo_masks: str | Path, split: str, classes=None) -> dict:
    """What a segment checkpoint records as its config (and what resume compares); `split` = the training images,
    `classes` = the foreground class names (label k + 1 = classes[k])."""
    out = SegmentStage.recorded_config(cfg)
    out["pseudo_masks"] = str(Path(pseudo_masks).resolve())
    out["pseudo_masks_split"] = split
    if classes is not None:  # what `semples predict` names the model's outputs with
        out["classes"] = list(classes)
    return out


def train(cfg: Config, pseudo_masks: str | Path, *, run_dir: str | Path | None = None, resume: bool = False,
          force: bool = False, skip_missing: bool = False, accelerator=None) -> StageResult:
    """Trains the final segmentation model on pseudo masks of the training split (stage segment).

    Args:
        cfg: the experiment config (section ``segment``: optimisation, augmentation, model).
        pseudo_masks: folder of ``<image id>.png`` label maps for the images of ``segment.train_split``, else the
            split recorded in the folder's manifest.json (`semples pseudo-masks` writes it), else
            ``data.train_split``.
        run_dir: the run folder (default ``<output_dir>/<experiment>/segment``).
        resume: continue an unfinished run; force: start over; a finished run is skipped otherwise.
        skip_missing: leave out images without a pseudo mask instead of failing.
        accelerator: shared `make_accelerator` result (one per process); made from the config when None.

    Returns:
        The engine's `StageResult`.

    Raises:
        DataError: the pseudo-mask folder lacks images (names the first missing file) or holds bad files.
        WeightsError: pretrained backbone weights are unavailable (says what to pass).
        ReuseError: the run folder holds a run of other settings or other pseudo masks (unless `force`).
    """
    acc = accelerator or make_accelerator(cfg.device, cfg.mixed_precision, cfg.deterministic)
    seg = cfg.segment
    run_dir = Path(run_dir) if run_dir is not None else RunLayout(cfg).stage(STAGE_NAME)
    split = seg.train_split or recorded_split(pseudo_masks) or cfg.data.train_split
    # bad items are skipped (data.skip_bad) around the pairing, so an unreadable pseudo mask is skipped as well
    base = build_dataset(dataclasses.replace(cfg.data, skip_bad=False), split)
    pseudo = PseudoMaskDataset(base, pseudo_masks, skip_missing=skip_missing)
    dataset = SkipBadItems(pseudo, run_dir) if cfg.data.skip_bad else pseudo
    # fresh weights are a function of (seed, stage): every process and every re-run builds the same model
    torch.manual_seed(item_seed(cfg.seed, zlib.crc32(STAGE_NAME.encode()), 0))
    sync_bn = bool(seg.model.sync_bn and acc.num_processes > 1 and acc.device.type == "cuda")
    # a checkpoint in the run folder replaces every weight (finished: skipped; unfinished: resumed or refused), so
    # the backbone's ImageNet weights are not fetched again (an offline re-run of a finished run just works)
    has_checkpoint = (run_dir / CHECKPOINT_NAME).is_file() and not force
    built = SegmentStage.from_config(cfg, base.classes, sync_bn=sync_bn, fetch_weights=not has_checkpoint)
    masks = {"path": str(Path(pseudo_masks).resolve()), "split": split, "images": len(pseudo),
             "missing": pseudo.missing}
    manifest = read_folder_manifest(pseudo_masks)
    if manifest is not None:  # the folder's identity, checked when a finished run is reused
        masks["settings_sha256"] = folder_fingerprint(manifest)
    inputs = {"pseudo_masks": masks, **built.inputs}
    data = TransformedDataset(dataset, SegTrainTransform(seg.transform), seed=cfg.seed, with_mask=True)
    result = train_stage(built.stage, data, seg, run_dir=run_dir, accelerator=acc, seed=cfg.seed,
                         num_workers=cfg.data.num_workers, log_every=cfg.log_every,
                         config_dict=training_config_dict(cfg, pseudo_masks, split, base.classes.names),
                         config_yaml=dump_config(cfg),
                         inputs=inputs, resume=resume, force=force, tensorboard=cfg.log.tensorboard,
                         sample_images=cfg.log.sample_images)
    for line in bad_items_report(dataset):
        log.warning("skipped: %s", line)
    return result


def evaluate(cfg: Config, checkpoint: str | Path, *, split: str | None = None, out: str | Path | None = None,
             save_predictions: bool | None = None, crf: bool | None = None, force: bool = False,
             accelerator=None) -> dict:
    """Evaluates a trained segmentation model (a train-seg run folder or its checkpoint) on a split.

    See `semples.evaluate.segmenter.evaluate_segmentation`; returns its report (what metrics.json holds).
    """
    acc = accelerator or make_accelerator(cfg.device, cfg.mixed_precision, cfg.deterministic)
    return evaluate_segmentation(cfg, resolve_checkpoint(checkpoint), split=split,
                                 out_dir=Path(out) if out is not None else None, save_predictions=save_predictions,
                                 crf=crf, force=force, accelerator=acc)


__all__ = ["STAGE_NAME", "evaluate", "train", "training_config_dict"]
