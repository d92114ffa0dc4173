"""The final segmentation model (METHOD.md §1.7): train it on pseudo masks, evaluate it against ground truth.

    train_segmentation(cfg, pseudo_masks)  -> <output_dir>/<experiment>/segment/  config.yaml, checkpoint.pt,
                                              metrics.jsonl, manifest.json (the engine's run folder)
    evaluate_segmentation(cfg, run_dir)    -> <run_dir>/eval/<split>/  metrics.json, metrics.md [, predictions/]

Training runs stage `segment` (`semples.stages.train_segmenter`) through the one engine, so checkpoints, resume
and several processes work as for every stage. Evaluation reads the last checkpoint — never a checkpoint chosen
by ground truth — and reports single-scale, multi-scale (+flip) and, optionally, dense-CRF-refined predictions
as per-class IoU tables from one confusion matrix each (mergeable across processes). Predictions are written as
index PNGs in the pseudo-mask format, so `semples eval-masks` reads them too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from semples.config import Config, config_to_dict, dump_config
from semples.data import TransformedDataset, build_dataset
from semples.data.base import DataError, item_seed
from semples.data.io import write_mask_png
from semples.data.pseudo import PseudoMaskDataset, recorded_split
from semples.data.seg_transforms import SegTrainTransform
from semples.data.skip import SkipBadItems, bad_items_report
from semples.data.transforms import normalize, to_tensor
from semples.engine import StageResult, make_accelerator, train_stage
from semples.errors import ConfigError
from semples.infer.segment import crf_refine, segment_probs
from semples.metrics import ConfusionMatrix
from semples.models.segmenters import load_segmenter
from semples.stages.train_segmenter import build_segment_stage
from semples.utils.checkpoint_io import CHECKPOINT_NAME, atomic_write_json, atomic_write_text, read_checkpoint

log = logging.getLogger(__name__)

STAGE_NAME = "segment"
# top-level config sections a segment checkpoint depends on (besides its own section minus `eval`): changing
# anything else (CLIP, the SemPLeS stages, evaluation settings) neither blocks a resume nor a finished run
SHARED_KEYS = ("experiment", "seed", "mixed_precision", "deterministic", "data")
SINGLE_SCALE = "single_scale"
MULTI_SCALE = "multi_scale"


def segment_run_dir(cfg: Config) -> Path:
    """<output_dir>/<experiment>/segment."""
    return Path(cfg.output_dir) / cfg.experiment / STAGE_NAME


def training_config_dict(cfg: Config, pseudo_masks: str | Path, split: str) -> dict:
    """What a segment checkpoint records as its config (and what resume compares); `split` = the training images."""
    full = config_to_dict(cfg)
    out = {k: full[k] for k in SHARED_KEYS if k in full}
    out["data"] = {k: v for k, v in full["data"].items() if k != "eval_split"}
    out[STAGE_NAME] = {k: v for k, v in full[STAGE_NAME].items() if k != "eval"}
    out["stage_name"] = STAGE_NAME
    out["pseudo_masks"] = str(Path(pseudo_masks).resolve())
    out["pseudo_masks_split"] = split
    return out


def train_segmentation(cfg: Config, pseudo_masks: str | Path, *, run_dir: str | Path | None = None,
                       resume: bool = False, force: bool = False, skip_missing: bool = False,
                       accelerator=None) -> StageResult:
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
        CheckpointError: see `semples.engine.train_stage`.
    """
    acc = accelerator or make_accelerator(cfg.device, cfg.mixed_precision, cfg.deterministic)
    seg = cfg.segment
    run_dir = Path(run_dir) if run_dir is not None else segment_run_dir(cfg)
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
    stage = build_segment_stage(seg.model, base.num_classes + 1, sync_bn=sync_bn, fetch_weights=not has_checkpoint)
    inputs = {"pseudo_masks": {"path": str(Path(pseudo_masks).resolve()), "split": split, "images": len(pseudo),
                               "missing": pseudo.missing},
              "segmenter": stage.segmenter.source, "sync_bn": sync_bn}
    data = TransformedDataset(dataset, SegTrainTransform(seg.transform), seed=cfg.seed, with_mask=True)
    result = train_stage(stage, data, seg, run_dir=run_dir, accelerator=acc, seed=cfg.seed,
                         num_workers=cfg.data.num_workers, log_every=cfg.log_every,
                         config_dict=training_config_dict(cfg, pseudo_masks, split), config_yaml=dump_config(cfg),
                         inputs=inputs, resume=resume, force=force)
    for line in bad_items_report(dataset):
        log.warning("skipped: %s", line)
    return result


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def _markdown(report: dict, tables: dict[str, str]) -> str:
    """metrics.md: what was evaluated, a summary row per setting, then each setting's per-class table."""
    ck = report["checkpoint"]
    progress = ck.get("progress") or {}
    lines = [f"# Segmentation evaluation on {report['dataset']} / {report['split']}", "",
             f"- checkpoint: `{ck['path']}` (epoch {progress.get('epoch')}, step {progress.get('global_step')}, "
             f"{'finished' if ck.get('finished') else 'UNFINISHED'}), sha256 `{ck['sha256'][:16]}…`",
             f"- model selection: {report['model_selection']}",
             f"- images: {report['num_images']}; inference: {report['settings']['mode']}", "",
             "| setting | scales | flip | CRF | mIoU | pixel acc. |", "|---|---|---|---|---:|---:|"]
    for name, res in report["results"].items():
        s = report["settings"]["runs"][name]
        miou = "—" if res["miou"] is None else f"{100 * res['miou']:.1f}"
        acc = "—" if res["pixel_accuracy"] is None else f"{100 * res['pixel_accuracy']:.1f}"
        lines.append(f"| {name} | {', '.join(f'{x:g}' for x in s['scales'])} | {'yes' if s['flip'] else 'no'} | "
                     f"{'yes' if s['crf'] else 'no'} | {miou} | {acc} |")
    lines.append("")
    lines += list(tables.values())
    return "\n".join(lines)


def evaluate_segmentation(cfg: Config, checkpoint: str | Path, *, split: str | None = None,
                          out_dir: str | Path | None = None, save_predictions: bool | None = None,
                          crf: bool | None = None, force: bool = False, accelerator=None) -> dict:
    """Evaluates a trained segmentation model (its last checkpoint) on a split with ground-truth masks.

    Runs, per image: single scale (1.0, no flip) and multi-scale (``segment.eval.scales`` + flip when
    ``segment.eval.flip``), plus dense CRF on the multi-scale probabilities when ``crf``. Each gets a confusion
    matrix (ignore 255) summed over processes; the main process writes ``metrics.json`` and ``metrics.md``.
    Re-running with the same checkpoint, split and settings returns the stored metrics unless `force`.

    Args:
        cfg: the experiment config (data, ``segment.eval``; the architecture comes from the checkpoint).
        checkpoint: a segment run folder or its checkpoint.pt.
        split: split to evaluate (default ``segment.eval.split``, then ``data.eval_split``).
        out_dir: default ``<run folder>/eval/<split>``.
        save_predictions / crf: override ``segment.eval.save_predictions`` / ``segment.eval.crf``.
        force: evaluate again even if matching metrics exist.
        accelerator: shared accelerator; made from the config when None.

    Returns:
        The metrics report (what metrics.json holds).

    Raises:
        DataError: the split has no ground-truth masks.
        CheckpointError: no segmentation model in the checkpoint, or one that does not fit the dataset.
        ConfigError: CRF requested but unavailable.
    """
    ev = cfg.segment.eval
    split = split or ev.split or cfg.data.eval_split
    crf = ev.crf if crf is None else crf
    save_predictions = ev.save_predictions if save_predictions is None else save_predictions
    dataset = build_dataset(dataclasses.replace(cfg.data, skip_bad=False), split)
    if not dataset.has_masks:
        raise DataError(f"{dataset.name} split {split!r} has no ground-truth masks to evaluate against; pick a "
                        "split with masks (--split, segment.eval.split)")
    if crf:
        try:
            from semples.infer.crf import dense_crf_probs  # noqa: F401  (fail before the loop, not after it)
        except ImportError as e:
            raise ConfigError(f"segment.eval.crf=true needs semples.infer.crf.dense_crf_probs and pydensecrf2 "
                              f"(pip install 'semples[infer]'), which cannot be imported: {e}") from e
    ckpt = read_checkpoint(checkpoint)
    if ckpt.get("stage") != STAGE_NAME:
        log.warning("%s is a %s checkpoint, not a segment run", ckpt["path"], ckpt.get("stage"))
    if not ckpt.get("finished"):
        log.warning("%s is UNFINISHED (epoch %s): evaluating it anyway", ckpt["path"],
                    ckpt.get("progress", {}).get("epoch"))
    num_classes = dataset.num_classes + 1
    model, record = load_segmenter(ckpt, cfg.segment.model, num_classes)
    norm = record["config"].get("transform", {}).get("normalize", cfg.segment.transform.normalize)
    out_dir = Path(out_dir) if out_dir is not None else Path(ckpt["path"]).parent / "eval" / split

    runs = {SINGLE_SCALE: {"scales": [1.0], "flip": False, "crf": False},
            MULTI_SCALE: {"scales": [float(s) for s in ev.scales], "flip": ev.flip, "crf": False}}
    if crf:
        runs[f"{MULTI_SCALE}_crf"] = {**runs[MULTI_SCALE], "crf": True, "crf_params": dict(ev.crf_params)}
    settings = _jsonable({"mode": ev.mode, "crop_size": ev.crop_size, "stride": ev.stride, "normalize": norm,
                          "runs": runs})
    metrics_path = out_dir / "metrics.json"
    if metrics_path.is_file() and not force:
        try:
            stored = json.loads(metrics_path.read_text())
        except (OSError, json.JSONDecodeError):
            stored = {}
        if (stored.get("checkpoint", {}).get("sha256") == record["sha256"] and stored.get("settings") == settings
                and stored.get("num_images") == len(dataset) and stored.get("split") == split
                and (stored.get("predictions") is not None or not save_predictions)):
            log.info("already evaluated: %s (--force evaluates again)", metrics_path)
            return stored

    acc = accelerator or make_accelerator(cfg.device, cfg.mixed_precision, cfg.deterministic)
    model.to(acc.device).eval()
    names = ["background", *dataset.classes.names]
    matrices = {name: ConfusionMatrix(num_classes) for name in runs}
    indices = range(acc.process_index, len(dataset), acc.num_processes)
    start = time.perf_counter()
    bar = tqdm(indices, desc=f"eval {split}", unit="img", disable=not acc.is_main_process, dynamic_ncols=True)
    for i in bar:
        image = dataset.load_image(i).convert("RGB")
        gt = dataset.load_mask(i)
        x = normalize(to_tensor(image), norm)[None].to(acc.device)
        probs = {}
        with acc.autocast():
            for name, run in runs.items():
                if run["crf"]:
                    continue
                probs[name] = segment_probs(model, x, scales=run["scales"], flip=run["flip"], mode=ev.mode,
                                            crop_size=ev.crop_size, stride=ev.stride)[0]
        preds = {name: p.argmax(0).to(torch.uint8).cpu().numpy() for name, p in probs.items()}
        if crf:
            refined = crf_refine(np.asarray(image), probs[MULTI_SCALE].cpu().numpy(), ev.crf_params)
            preds[f"{MULTI_SCALE}_crf"] = refined.argmax(0).astype(np.uint8)
        for name, pred in preds.items():
            matrices[name].update(pred, gt)
            if save_predictions:
                write_mask_png(out_dir / "predictions" / name / f"{dataset.ids[i]}.png", pred)
    bar.close()
    elapsed = time.perf_counter() - start
    for cm in matrices.values():
        cm.reduce_across_processes()
    scores = {name: cm.scores(names) for name, cm in matrices.items()}
    report = {
        "dataset": dataset.name, "split": split, "num_images": len(dataset), "classes": names,
        "checkpoint": {k: record[k] for k in ("path", "sha256", "stage", "finished", "progress")},
        "model_selection": "last checkpoint (no ground truth used)",
        "settings": settings,
        "results": {name: {**s.to_dict(), "confusion_matrix": s.matrix.tolist()} for name, s in scores.items()},
        "predictions": str(out_dir / "predictions") if save_predictions else None,
        "processes": acc.num_processes, "seconds": elapsed,
        "images_per_s": len(indices) * acc.num_processes / max(elapsed, 1e-9),
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    report = _jsonable(report)
    if acc.is_main_process:
        tables = {name: s.markdown(title=name) for name, s in scores.items()}
        if save_predictions:  # lets `semples eval-masks --masks <folder>` find the split by itself
            for name, run in runs.items():
                atomic_write_json(out_dir / "predictions" / name / "manifest.json", {
                    "split": split, "dataset": dataset.name, "method": f"segmentation model, {name}",
                    "parameters": {**run, "mode": ev.mode}, "checkpoint": record["path"]})
        atomic_write_json(metrics_path, report)
        atomic_write_text(out_dir / "metrics.md", _markdown(report, tables))
        summary = ", ".join(f"{n} {100 * (r['miou'] or 0):.1f}" for n, r in report["results"].items())
        log.info("mIoU on %s: %s -> %s", split, summary, out_dir / "metrics.md")
    acc.wait_for_everyone()
    return report
