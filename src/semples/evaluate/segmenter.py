"""Evaluation of the final segmentation model (METHOD.md §1.7) on a split with ground truth.

`evaluate_segmentation` reads the last checkpoint of a segment run — never a checkpoint chosen by ground truth — and
reports single-scale, multi-scale (+flip) and, optionally, dense-CRF-refined predictions as per-class IoU tables
from one confusion matrix each (images sharded across processes, matrices summed). Predictions are written as index
PNGs in the pseudo-mask format (with a `semples.runs` manifest), so `semples eval-masks` reads them too.

    evaluate_segmentation(cfg, run_dir)    -> <run_dir>/eval/<split>/  metrics.json, metrics.md [, predictions/]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from semples.config import Config
from semples.data import build_dataset
from semples.data.io import write_mask_png
from semples.data.transforms import normalize, to_tensor
from semples.engine.device import make_accelerator
from semples.errors import ConfigError, DataError
from semples.infer.crf import crf_prob_labels
from semples.infer.segment import segment_probs
from semples.metrics import MEAN_CONVENTION, ConfusionMatrix
from semples.models.segmenters import load_segmenter
from semples.runs import RunLayout, write_folder_manifest
from semples.utils.checkpoint_io import atomic_write_json, atomic_write_text, read_checkpoint

log = logging.getLogger(__name__)

STAGE_NAME = "segment"
SINGLE_SCALE = "single_scale"
MULTI_SCALE = "multi_scale"


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
             f"- images: {report['num_images']}; inference: {report['settings']['mode']}",
             f"- {MEAN_CONVENTION}", "",
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
    out_dir = Path(out_dir) if out_dir is not None else RunLayout.segment_eval(Path(ckpt["path"]).parent, split)

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

    def keep(i: int, name: str, pred: np.ndarray, gt: np.ndarray) -> None:
        matrices[name].update(pred, gt)
        if save_predictions:
            write_mask_png(out_dir / "predictions" / name / f"{dataset.ids[i]}.png", pred)

    # the CRF (CPU-bound, ~1-2 s per image) runs in worker processes while the model runs here on the next images;
    # results are taken in order, a bounded number behind (the confusion matrices are sums: order-free anyway)
    workers = ev.crf_workers if crf and ev.crf_workers > 1 and len(indices) >= 4 * ev.crf_workers else 0
    crf_name = f"{MULTI_SCALE}_crf"
    pool = None
    if workers:  # spawn: no fork after torch/OpenMP threads (or CUDA) have started
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    waiting: deque[tuple[int, np.ndarray, Future]] = deque()

    def collect(limit: int) -> None:
        while len(waiting) > limit:
            i, gt, fut = waiting.popleft()
            keep(i, crf_name, fut.result(), gt)

    try:
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
            for name, p in probs.items():
                keep(i, name, p.argmax(0).to(torch.uint8).cpu().numpy(), gt)
            if crf:
                image_np, probs_np = np.asarray(image), probs[MULTI_SCALE].float().cpu().numpy()
                if pool is None:
                    keep(i, crf_name, crf_prob_labels(image_np, probs_np, ev.crf_params), gt)
                else:
                    waiting.append((i, gt, pool.submit(crf_prob_labels, image_np, probs_np, dict(ev.crf_params))))
                    collect(2 * workers)
        collect(0)
    finally:
        for _, _, fut in waiting:
            fut.cancel()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    elapsed = time.perf_counter() - start
    for cm in matrices.values():
        cm.reduce_across_processes()
    scores = {name: cm.scores(names) for name, cm in matrices.items()}
    report = {
        "dataset": dataset.name, "split": split, "num_images": len(dataset), "classes": names,
        "checkpoint": {k: record[k] for k in ("path", "sha256", "stage", "finished", "progress")},
        "model_selection": "last checkpoint (no ground truth used)",
        "mean_convention": MEAN_CONVENTION,
        "settings": settings,
        "results": {name: {**s.to_dict(), "confusion_matrix": s.matrix.tolist()} for name, s in scores.items()},
        "predictions": str(out_dir / "predictions") if save_predictions else None,
        "processes": acc.num_processes, "crf_processes": (workers or 1) if crf else None, "seconds": elapsed,
        "images_per_s": len(indices) * acc.num_processes / max(elapsed, 1e-9),
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    report = _jsonable(report)
    if acc.is_main_process:
        tables = {name: s.markdown(title=name) for name, s in scores.items()}
        if save_predictions:  # lets `semples eval-masks --masks <folder>` find the split by itself
            from semples.runs import FolderRecord

            for name, run in runs.items():
                folder = out_dir / "predictions" / name
                write_folder_manifest(folder, FolderRecord(
                    kind="predictions", producer="semples.evaluate.segmenter",
                    data={"dataset": cfg.data.dataset, "root": cfg.data.root, "split": split, "name": dataset.name},
                    classes=list(dataset.classes.names),
                    inputs={"checkpoint": {k: record[k] for k in ("path", "sha256", "stage")}},
                    settings={**run, "mode": ev.mode}, file_format="one <id>.png per image: uint8 labels",
                    extra={"method": f"segmentation model, {name}", "parameters": {**run, "mode": ev.mode}}),
                    complete=True, status="finished")
        atomic_write_json(metrics_path, report)
        atomic_write_text(out_dir / "metrics.md", _markdown(report, tables))
        summary = ", ".join(f"{n} {100 * (r['miou'] or 0):.1f}" for n, r in report["results"].items())
        log.info("mIoU on %s: %s -> %s", split, summary, out_dir / "metrics.md")
    acc.wait_for_everyone()
    return report


__all__ = ["MULTI_SCALE", "SINGLE_SCALE", "evaluate_segmentation"]
