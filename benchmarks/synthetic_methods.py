"""Seed mIoU of five WSSS seed methods on the synthetic co-occurrence world (issue 6, item 6).

    python benchmarks/synthetic_methods.py [--seeds 0 1 2] [--out runs/methods] [--methods ...] [--quick]

Rows (every one on the committed preset ``synth_demo``: the world, the shipped toy CLIP ``synth-clip``, the SemPLeS
stage schedules — nothing here edits it; the overrides below are listed in the output):

1. ``clip_es``  training-free CLIP Grad-CAM, CLIP-ES style: `semples.infer.fma.fma_cams(cfg, None, out,
   phase="coarse", prompts="handcrafted")` — Grad-CAM of the frozen toy CLIP against hand-written prompts of the 6
   classes and the world's 8 background names, refined by CAA (boxes at 0.4, as CLIP-ES), no training.
2. ``fma``      FMA-WSSS: ``semples run --method fma --until eval-seeds`` (fma-classify -> coarse Grad-CAM + CAA ->
   coarse SAMS seeds -> fma-segment -> fine Grad-CAM + CAA). SAMS regions are SLIC superpixels (no SAM weights
   here). The seed is the fine CAM folder (before SAMS), as for every other row.
3. ``semples``  SemPLeS: ``semples run --until eval-seeds`` (classify -> match -> prompt -> refine, WeakTr-style ViT).
4. ``semples_fma``  SemPLeS + FMA: ``semples run --method semples+fma --until eval-seeds``: (3)'s CAMs refined by CAA
   with the toy CLIP's attention; shares (3)'s training runs (same experiment folder, same config).
5. ``semples_resnet50``  SemPLeS on the CLIMS-style ResNet-50 CAM generator (timm resnet50, output stride 16, random
   init), experiment ``synth_resnet50``, the synth_demo stage schedules unchanged.

Context rows (cheap, same folders): the CAMs of the generators after stage classify and after stage match
(`semples cams --generator <run>` + `semples eval-seeds`), FMA's coarse CAMs (classification prompts) and the
mIoU of its coarse SAMS seeds (`semples eval-masks`, label maps: not comparable to the CAM rows).

Settings fixed before any number was seen (the CLIP Grad-CAM generator must fit the toy CLIP):
* context length 16 (the paper's): the longest prompt, "a brick wall" (3 tokens) with SOT, ".", EOT, needs
  M + 6 <= 24 positions, so M <= 18 fits; checked at start-up by building both prompt sets.
* logit scale = the toy CLIP's own learned temperature (exp(logit_scale) = 16.55), as FMA-WSSS's 100 is ViT-B/16's
  own; the CLIP-ES template "a clean origami {}." has two words outside the toy CLIP's vocabulary (their token
  rows are zero), so the handcrafted prompt is the world's caption form ``clip.class_template`` ("a photo of a {}.").
* FMA prompt stages crop at 96 px (the world's image scale, as the SemPLeS stages; the package default is 224).
  The training-free row also reports, as a clearly separate sensitivity table: CAA off, the CLIP-ES template and
  logit scale 100 — none of them replaces the primary row.
* Seeds are scored on the 600 training images (``pipeline.seed_split: train``) at the background threshold that is
  best on them (an oracle choice, as in the paper), with the leak rate at that threshold (share of a class's
  associated-background pixels labelled as that class, `semples.metrics.LeakRate`).

Design: everything trains and infers through the public CLI (`semples.cli.main`: ``run``, ``cams``, ``eval-seeds``,
``eval-masks``) in this process, one seed folder ``<out>/seed<S>`` (``--set output_dir=...``) per seed; the tools
skip finished work themselves, and an evaluation whose ``analysis/<key>.json`` exists is not redone, so an
interrupted invocation resumes. Work is done seed by seed (all methods of seed 0 first), so a partial run already
holds a complete comparison. The CLI's stdout/stderr (tqdm bars, logs) go to ``<out>/logs/``; progress lines with
the load average go to stdout. Wall time per step accumulates in ``<out>/timings.json``; the 1-minute load average
is sampled every 30 s. Output: every raw number in a JSON (default ``benchmarks/results/synthetic_methods.json``;
with ``--quick``: ``<out>/synthetic_methods.json``, a smoke check, not results) and ``<out>/report.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import LoadSampler, Timings, read_json, read_load, write_json  # benchmarks/ is on sys.path

PRESET = "synth_demo"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "benchmarks" / "results" / "synthetic_methods.json"
SPLIT = "train"  # seeds are scored on the training images (synth_demo: pipeline.seed_split = train)
CONTEXT_LENGTH = 16  # CoOp / FMA-WSSS context vectors per prompt (checked against the toy CLIP at start-up)
FMA_CROP = 96  # crop side of the FMA prompt stages on this world (package default 224 is VOC's)
DETERMINISM_IMAGES = 40  # training-free CAMs recomputed under seeds 1 and 2 and compared bit by bit
# Measured here before the runs (load ~6.5 on the 2 cores): `semples cams` of the ResNet-50 generator wrote 1.49 img/s
# with one torch thread and 0.27 img/s with torch's default two (a DataLoader worker beside two OpenMP threads on a
# busy 2-core machine); the CLI sets no thread count, so this process sets one for everything it runs.
THREADS_NOTE = "1 torch thread (2 threads were 5.5x slower for ResNet-50 cams at load ~6.5)"
RESNET = ("experiment=synth_resnet50", "generator.name=resnet_cam", "generator.backbone=resnet50",
          "generator.backbone_kwargs={output_stride: 16}")
QUICK = ("data.synthetic.splits.train=24",
         *(f"{s}.epochs=1" for s in ("classify", "match", "prompt", "refine", "fma_classify", "fma_segment")),
         *(f"{s}.batch_size=8" for s in ("classify", "match", "prompt", "refine", "fma_classify", "fma_segment")))

METHODS: dict[str, str] = {
    "clip_es": "training-free CLIP Grad-CAM + CAA (CLIP-ES style)",
    "fma": "FMA-WSSS (learned CLIP prompts, CAA; SAMS on superpixels for the coarse seeds)",
    "semples": "SemPLeS (WeakTr-style ViT, synth_demo)",
    "semples_fma": "SemPLeS + FMA (SemPLeS CAMs refined by CAA)",
    "semples_resnet50": "SemPLeS on the ResNet-50 CAM generator (random init)",
}
RUN_METHOD = {"fma": "fma", "semples": "semples", "semples_fma": "semples+fma", "semples_resnet50": "semples"}
CONTEXT: dict[str, str] = {
    "weaktr_classify": "WeakTr-style ViT after stage classify (its CAMs, no SemPLeS)",
    "weaktr_match": "WeakTr-style ViT after stage match (L_match only)",
    "resnet50_classify": "ResNet-50 CAM after stage classify (no SemPLeS)",
    "resnet50_match": "ResNet-50 CAM after stage match (L_match only)",
    "fma_coarse": "FMA coarse CAMs: Grad-CAM of the classification prompts + CAA (boxes 0.4)",
}
# training-free sensitivity (seed independent); "primary" is the row of the main table
CLIP_ES_VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "primary": ((), "template 'a photo of a {}.', CAA on, logit scale = toy CLIP's"),
    "caa_off": (("fma.caa.enabled=false",), "plain Grad-CAM (CAA off)"),
    "template_origami": (('generator.clip_cam.templates=["a clean origami {}."]',),
                         "CLIP-ES's template 'a clean origami {}.' (2 words outside the toy CLIP's vocabulary)"),
    "logit_scale_100": (("generator.clip_cam.logit_scale=100.0",), "logit scale 100 (ViT-B/16's, FMA/CLIP-ES)"),
}


# ----------------------------------------------------------------------------------------------------- plumbing
def log(msg: str) -> None:
    a = read_load()[0]
    print(f"[{time.strftime('%H:%M:%S')} load {a:.1f}] {msg}", file=sys.__stdout__, flush=True)


class _CurrentStderr:
    """A stream that writes to whatever `sys.stderr` is at the time, so the CLI's logging follows redirection."""

    def write(self, s: str) -> int:
        return sys.stderr.write(s)

    def flush(self) -> None:
        sys.stderr.flush()


def cli(argv: list[str], log_file: Path) -> None:
    """`semples <argv>` in this process, its stdout and stderr appended to `log_file`."""
    from semples.cli import main

    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        print(f"$ semples {' '.join(argv)}", flush=True)
        status = main(argv)
    gc.collect()
    if status != 0:
        raise RuntimeError(f"semples {' '.join(argv)} exited with status {status} (log: {log_file})")


# ----------------------------------------------------------------------------------------------------- metrics
def leak_of_cams(dataset, cams_dir: Path, threshold: float) -> dict:
    """Leak rate of the seeds in `cams_dir` at background score `threshold` (`semples.metrics.LeakRate`)."""
    from semples.infer.cam_io import cam_path, load_cam
    from semples.metrics import LeakRate
    from semples.metrics.sweep import seed_labels

    leak = LeakRate(dataset.class_background)
    for i, image_id in enumerate(dataset.ids):
        cams, classes = load_cam(cam_path(cams_dir, image_id))
        leak.update(seed_labels(cams, threshold, classes), dataset.load_mask(i), dataset.background_map(i),
                    dataset.labels(i))
    return leak.to_dict(list(dataset.classes.names))


def summarise_metrics(metrics: dict) -> dict:
    """The numbers of an eval-seeds / eval-masks metrics.json this benchmark keeps."""
    per = metrics.get("per_class") or metrics.get("all_pixels", {}).get("per_class") or {}
    out = {"miou": metrics.get("miou", metrics.get("all_pixels", {}).get("miou")),
           "per_class_iou": {k: (v.get("iou") if isinstance(v, dict) else v) for k, v in per.items()}}
    for key in ("threshold", "threshold_selection", "bg_false_positive_rate", "mean_precision", "mean_recall",
                "pixel_accuracy", "images"):
        if key in metrics:
            out[key] = metrics[key]
    return out


def mean_std(values: list[float]) -> dict:
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "mean": None, "std": None}
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0}


# ----------------------------------------------------------------------------------------------------- the bench
class Bench:
    def __init__(self, out: Path, quick: bool, timings: Timings) -> None:
        self.out = out
        self.quick = quick
        self.timings = timings
        self.logs = out / "logs"
        self._dataset = None
        self.toy_logit_scale = self._toy_clip_checks()
        # shared by every method of the WeakTr experiment folder (one config: the methods share its training runs)
        self.common = (*(QUICK if quick else ()), f"generator.clip_cam.context_length={CONTEXT_LENGTH}",
                       f"generator.clip_cam.logit_scale={self.toy_logit_scale}",
                       f"fma_classify.transform.crop_size={FMA_CROP}", f"fma_segment.transform.crop_size={FMA_CROP}")

    # -- configuration -------------------------------------------------------------------------------------------
    def _toy_clip_checks(self) -> float:
        """The toy CLIP's logit scale; raises when the prompts of CONTEXT_LENGTH do not fit its text context."""
        import torch

        from semples.config import load_config
        from semples.models.clip import load_clip
        from semples.models.prompts import CoOpPrompts, background_names_for

        cfg = load_config(PRESET, [])
        clip = load_clip(cfg.clip, "cpu")
        names = tuple(cfg.data.synthetic.classes) + background_names_for(cfg.data)
        longest = max(len(clip.token_ids(n)) for n in names)
        suffix = len(clip.token_ids("."))  # prompt = SOT, M context vectors, name, ".", EOT
        self.fit = {"text_context": int(clip.context_length), "longest_name_tokens": longest,
                    "max_context_length": int(clip.context_length) - longest - 2 - suffix, "names": list(names)}
        for shared, position in ((True, "end"), (False, "front")):
            CoOpPrompts(clip, names, context_length=CONTEXT_LENGTH, shared=shared, class_position=position)
        with torch.no_grad():
            scale = float(clip.model.logit_scale.exp())
        self.fit["toy_logit_scale"] = scale
        self.fit["class_template"] = cfg.clip.class_template
        return round(scale, 4)

    def seed_dir(self, seed: int) -> Path:
        return self.out / f"seed{seed}"

    def config_args(self, seed: int, extra: tuple[str, ...] = ()) -> list[str]:
        args = ["--config", PRESET]
        for s in (f"seed={seed}", f"output_dir={self.seed_dir(seed)}", *self.common, *extra):
            args += ["--set", s]
        return args

    def config(self, seed: int, extra: tuple[str, ...] = ()):
        from semples.config import load_config

        return load_config(PRESET, [f"seed={seed}", f"output_dir={self.seed_dir(seed)}", *self.common, *extra])

    @property
    def dataset(self):
        if self._dataset is None:
            from semples.data import build_dataset

            self._dataset = build_dataset(self.config(0).data, SPLIT)
        return self._dataset

    # -- evaluation ----------------------------------------------------------------------------------------------
    def evaluate_cams(self, key: str, cams_dir: Path, eval_dir: Path, config_args: list[str], log_name: str) -> dict:
        """eval-seeds of a CAM folder (oracle threshold on these images) + leak rate at that threshold."""
        cli(["eval-seeds", *config_args, "--cams", str(cams_dir), "--split", SPLIT, "--out", str(eval_dir),
             "--samples", "0", "--no-progress"], self.logs / log_name)
        result = summarise_metrics(read_json(eval_dir / "metrics.json"))
        result["leak"] = leak_of_cams(self.dataset, cams_dir, result["threshold"])
        result.update(key=key, cams_dir=str(cams_dir), eval_dir=str(eval_dir))
        return result

    def _cached(self, path: Path) -> dict | None:
        return read_json(path) if path.exists() else None

    def _done(self, path: Path, result: dict, timing_key: str, t0: float) -> dict:
        seconds = time.perf_counter() - t0
        self.timings.add(timing_key, seconds)
        result["seconds_this_invocation"] = round(seconds, 1)
        write_json(path, result)
        miou = result.get("miou")
        leak = result.get("leak", {}).get("mean")
        log(f"{timing_key}: mIoU {100 * miou:.2f}" + (f" at t = {result['threshold']:.2f}" if "threshold" in result
                                                      else "") + (f", leak {100 * leak:.1f}%" if leak is not None
                                                                  else "") + f" ({seconds:.0f} s)")
        return result

    # -- (1) training-free ---------------------------------------------------------------------------------------
    def clip_es(self, variant: str) -> dict:
        from semples.infer.fma import fma_cams

        path = self.out / "clip_es" / variant / "analysis.json"
        if (cached := self._cached(path)) is not None:
            return cached
        sets, _ = CLIP_ES_VARIANTS[variant]
        extra = (f'generator.clip_cam.templates=["{self.fit["class_template"]}"]', *sets)
        cfg = self.config(0, extra)
        cams_dir = self.out / "clip_es" / variant / "cams" / SPLIT
        log(f"clip_es/{variant}: training-free CLIP Grad-CAM seeds ({'CAA' if cfg.fma.caa.enabled else 'no CAA'}, "
            f"templates {list(cfg.generator.clip_cam.templates)}, logit scale {cfg.generator.clip_cam.logit_scale})")
        t0 = time.perf_counter()
        with open(self.logs / f"clip_es_{variant}.log", "a") as f, contextlib.redirect_stderr(f):
            manifest = fma_cams(cfg, None, cams_dir, phase="coarse", split=SPLIT, prompts="handcrafted")
        result = self.evaluate_cams(f"clip_es/{variant}", cams_dir, self.out / "clip_es" / variant / "eval_seeds",
                                    self.config_args(0, extra), f"clip_es_{variant}.log")
        ms = manifest["settings"]
        result["settings"] = {"overrides": list(extra), "phase": "coarse", "prompts": ms["prompts"], "caa": ms["caa"],
                              "box_threshold": ms["box_threshold"], "scales": ms["scales"], "flip": ms["flip"]}
        return self._done(path, result, f"clip_es/{variant}", t0)

    def clip_es_determinism(self, seeds: list[int]) -> dict:
        """Recomputes the first images' training-free CAMs with other seeds; compares them bit by bit."""
        from semples.infer.cam_io import cam_path, load_cam
        from semples.infer.fma import fma_cams

        path = self.out / "clip_es" / "determinism.json"
        if (cached := self._cached(path)) is not None:
            return cached
        extra = (f'generator.clip_cam.templates=["{self.fit["class_template"]}"]',)
        reference = self.out / "clip_es" / "primary" / "cams" / SPLIT
        n = min(DETERMINISM_IMAGES, len(self.dataset))
        result: dict[str, Any] = {"images": n, "reference": str(reference), "seeds": {}}
        t0 = time.perf_counter()
        for seed in seeds:
            if seed == 0:
                continue
            cams_dir = self.out / "clip_es" / f"determinism_seed{seed}"
            with open(self.logs / "clip_es_determinism.log", "a") as f, contextlib.redirect_stderr(f):
                fma_cams(self.config(seed, extra), None, cams_dir, phase="coarse", split=SPLIT, prompts="handcrafted",
                         limit=n)
            same = []
            for image_id in self.dataset.ids[:n]:
                a, ca = load_cam(cam_path(reference, image_id))
                b, cb = load_cam(cam_path(cams_dir, image_id))
                same.append(bool(np.array_equal(a, b) and np.array_equal(ca, cb)))
            result["seeds"][str(seed)] = {"identical_images": int(sum(same)), "all_identical": all(same)}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(path, result)
        log(f"clip_es determinism: {result['seeds']}")
        return result

    # -- (2)-(5) through `semples run` ---------------------------------------------------------------------------
    def run_method(self, method: str, seed: int) -> dict:
        path = self.seed_dir(seed) / "analysis" / f"{method}.json"
        if (cached := self._cached(path)) is not None:
            return cached
        extra = RESNET if method == "semples_resnet50" else ()
        args = self.config_args(seed, extra)
        log(f"seed {seed}: {method}: semples run --method {RUN_METHOD[method]} --until eval-seeds ...")
        t0 = time.perf_counter()
        cli(["run", *args, "--method", RUN_METHOD[method], "--until", "eval-seeds"],
            self.logs / f"seed{seed}_{method}.log")
        cfg = self.config(seed, extra)
        from semples.pipeline import Pipeline

        manifest_path = Pipeline(dataclasses_replace_method(cfg, RUN_METHOD[method])).manifest_path
        manifest = read_json(manifest_path)
        steps = manifest["steps"]
        cams_dir = Path(steps["cams"]["outputs"]["seeds"])
        eval_dir = Path(steps["eval-seeds"]["outputs"]["dir"])
        result = summarise_metrics(read_json(eval_dir / "metrics.json"))
        result["leak"] = leak_of_cams(self.dataset, cams_dir, result["threshold"])
        result.update(key=f"seed{seed}/{method}", cams_dir=str(cams_dir), eval_dir=str(eval_dir),
                      run_manifest=str(manifest_path), train_outputs=steps["train"]["outputs"],
                      step_seconds={k: v.get("seconds") for k, v in steps.items()}, overrides=list(extra))
        return self._done(path, result, f"seed{seed}/{method}", t0)

    def context_generator(self, key: str, seed: int) -> dict:
        """CAMs of an intermediate run (classify / match) of the WeakTr or ResNet-50 experiment."""
        path = self.seed_dir(seed) / "analysis" / f"{key}.json"
        if (cached := self._cached(path)) is not None:
            return cached
        family, stage = key.split("_")
        extra = RESNET if family == "resnet50" else ()
        cfg = self.config(seed, extra)
        run_dir = Path(cfg.output_dir) / cfg.experiment / stage
        if not (run_dir / "checkpoint.pt").exists():
            raise FileNotFoundError(f"{run_dir}: no checkpoint (its method row trains it)")
        args = self.config_args(seed, extra)
        cams_dir = self.seed_dir(seed) / "context" / key / "cams"
        log(f"seed {seed}: context {key}: cams + eval-seeds of {run_dir.name} ...")
        t0 = time.perf_counter()
        cli(["cams", *args, "--generator", str(run_dir), "--split", SPLIT, "--out", str(cams_dir), "--no-progress"],
            self.logs / f"seed{seed}_context_{key}.log")
        result = self.evaluate_cams(f"seed{seed}/{key}", cams_dir, self.seed_dir(seed) / "context" / key / "eval",
                                    args, f"seed{seed}_context_{key}.log")
        return self._done(path, result, f"seed{seed}/context/{key}", t0)

    def context_fma(self, seed: int) -> dict:
        """FMA's coarse CAMs (eval-seeds) and coarse SAMS seeds (eval-masks) from the fma run's folders."""
        path = self.seed_dir(seed) / "analysis" / "fma_coarse.json"
        if (cached := self._cached(path)) is not None:
            return cached
        fma = read_json(self.seed_dir(seed) / "analysis" / "fma.json")
        cams_dir, seeds_dir = Path(fma["train_outputs"]["coarse_cams"]), Path(fma["train_outputs"]["coarse_seeds"])
        args = self.config_args(seed)
        log(f"seed {seed}: context fma_coarse: eval-seeds of the coarse CAMs, eval-masks of the coarse SAMS seeds ...")
        t0 = time.perf_counter()
        result = self.evaluate_cams(f"seed{seed}/fma_coarse", cams_dir, self.seed_dir(seed) / "context" / "fma_coarse"
                                    / "eval", args, f"seed{seed}_context_fma_coarse.log")
        masks_eval = self.seed_dir(seed) / "context" / "fma_coarse_sams" / "eval"
        cli(["eval-masks", *args, "--masks", str(seeds_dir), "--split", SPLIT, "--out", str(masks_eval),
             "--no-progress"], self.logs / f"seed{seed}_context_fma_coarse.log")
        result["coarse_sams_masks"] = summarise_metrics(read_json(masks_eval / "metrics.json"))
        result["coarse_sams_masks"]["dir"] = str(seeds_dir)
        return self._done(path, result, f"seed{seed}/context/fma_coarse", t0)


    # -- why the CLIP rows look as they do ----------------------------------------------------------------------
    def clip_probe(self, seeds: list[int]) -> dict:
        """How well the toy CLIP's features rank the classes present in the 600 training images (mAP over the 6
        classes; top-1 = the highest-scoring class is present), for the feature the toy CLIP was trained with (class
        token, 64 px) and the one the Grad-CAM generator uses (mean of projected patch tokens, at 64 px and at the
        native 96-128 px the seeds are computed at), with the handcrafted prompts and with each seed's trained
        fma-classify prompts."""
        import torch
        import torch.nn.functional as F

        from semples.data.transforms import normalize, to_tensor
        from semples.infer.fma import fma_generator

        path = self.out / "clip_probe.json"
        if (cached := self._cached(path)) is not None and set(cached.get("fma_classify", {})) >= {str(s) for s in
                                                                                                 seeds}:
            return cached
        log("clip probe: class-token vs patch-mean features of the toy CLIP on the training images ...")
        t0 = time.perf_counter()
        ds = self.dataset
        k = len(ds.classes.names)
        cfg = self.config(0, (f'generator.clip_cam.templates=["{self.fit["class_template"]}"]',))
        gen, _ = fma_generator(cfg, None, ds.classes, prompts="handcrafted")
        gen.eval()
        clip = gen.clip
        labels = np.stack([np.asarray(ds.labels(i)) > 0.5 for i in range(len(ds))])
        trained = {}
        for seed in seeds:
            run = Path(self.config(seed).output_dir) / self.config(seed).experiment / "fma-classify"
            if (run / "checkpoint.pt").exists():
                g, _ = fma_generator(self.config(seed), run, ds.classes)
                trained[str(seed)] = g.eval()
        scores: dict[str, list[np.ndarray]] = {"class_token_64px": [], "patch_mean_64px": [],
                                               "patch_mean_native": []}
        scores.update({f"fma_classify_seed{s}_patch_mean_native": [] for s in trained})
        with torch.no_grad():
            text = gen.text_features()[:k]
            for i in range(len(ds)):
                img = to_tensor(ds.load_image(i).convert("RGB"))
                x = normalize(img, "imagenet")[None]
                x64 = F.interpolate(x, size=clip.image_size, mode="bilinear", align_corners=False)
                f = F.normalize(clip.encode_image(normalize(img, "clip")[None]).float(), dim=-1)  # resized inside
                scores["class_token_64px"].append((f @ text.t())[0].numpy())
                scores["patch_mean_64px"].append(gen.image_logits(x64)[0, :k].numpy())
                scores["patch_mean_native"].append(gen.image_logits(x)[0, :k].numpy())
                for s, g in trained.items():
                    scores[f"fma_classify_seed{s}_patch_mean_native"].append(g.image_logits(x)[0, :k].numpy())
        result: dict[str, Any] = {"images": len(ds), "template": self.fit["class_template"], "features": {}}
        for name, rows in scores.items():
            sc = np.stack(rows)
            aps = [average_precision(sc[:, c], labels[:, c]) for c in range(k)]
            top1 = float(np.mean(labels[np.arange(len(ds)), sc.argmax(1)]))
            result["features"][name] = {"map": float(np.nanmean(aps)), "top1_present": top1,
                                        "ap_per_class": dict(zip(ds.classes.names, aps))}
        result["fma_classify"] = {s: result["features"][f"fma_classify_seed{s}_patch_mean_native"] for s in trained}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(path, result)
        log("clip probe: " + ", ".join(f"{n} mAP {100 * v['map']:.1f}" for n, v in result["features"].items()))
        return result


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class over images (mean precision at the ranks of the positives); NaN without positives."""
    y = np.asarray(positives, dtype=np.float64)[np.argsort(-np.asarray(scores), kind="stable")]
    if y.sum() == 0:
        return float("nan")
    precision = np.cumsum(y) / np.arange(1, len(y) + 1)
    return float((precision * y).sum() / y.sum())


def dataclasses_replace_method(cfg, method: str):
    import dataclasses

    return dataclasses.replace(cfg, pipeline=dataclasses.replace(cfg.pipeline, method=method))


# ----------------------------------------------------------------------------------------------------- report
def pct(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}"


def aggregate(per_seed: dict[str, dict]) -> dict:
    seeds = sorted(per_seed, key=int)
    out = {"seeds": [int(s) for s in seeds],
           "miou": mean_std([per_seed[s]["miou"] for s in seeds]),
           "threshold": mean_std([per_seed[s].get("threshold") for s in seeds]),
           "leak": mean_std([per_seed[s].get("leak", {}).get("mean") for s in seeds]),
           "bg_false_positive_rate": mean_std([per_seed[s].get("bg_false_positive_rate") for s in seeds])}
    classes = list(per_seed[seeds[0]]["per_class_iou"]) if seeds else []
    out["per_class_iou"] = {c: mean_std([per_seed[s]["per_class_iou"].get(c) for s in seeds]) for c in classes}
    if seeds and "leak" in per_seed[seeds[0]]:
        names = list(per_seed[seeds[0]]["leak"]["per_class"])
        out["leak_per_class"] = {c: mean_std([per_seed[s]["leak"]["per_class"].get(c) for s in seeds])
                                 for c in names}
    return out


def fmt_ms(agg: dict, key: str = "miou") -> str:
    m = agg[key]
    if m["mean"] is None:
        return "—"
    return f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}"


def markdown(results: dict) -> str:
    rows, ctx, meta = results["methods"], results["context"], results["meta"]
    lines = ["| method | seed mIoU (mean ± std) | per seed (0, 1, 2) | best t (mean) | leak % (mean) | "
             "bg FP % (mean) |", "|---|---:|---|---:|---:|---:|"]
    for key, label in METHODS.items():
        if key not in rows:
            continue
        agg = rows[key]["aggregate"]
        per = ", ".join(pct(rows[key]["per_seed"][s]["miou"]) for s in sorted(rows[key]["per_seed"], key=int))
        t = agg["threshold"]["mean"]
        lines.append(f"| {label} | {fmt_ms(agg)} | {per} | {'—' if t is None else f'{t:.2f}'} | "
                     f"{pct(agg['leak']['mean'])} | {pct(agg['bg_false_positive_rate']['mean'])} |")
    lines += ["", "Context (same seeds, same folders):", "",
              "| run | seed mIoU (mean ± std) | per seed | leak % (mean) |", "|---|---:|---|---:|"]
    for key, label in CONTEXT.items():
        if key not in ctx:
            continue
        agg = ctx[key]["aggregate"]
        per = ", ".join(pct(ctx[key]["per_seed"][s]["miou"]) for s in sorted(ctx[key]["per_seed"], key=int))
        lines.append(f"| {label} | {fmt_ms(agg)} | {per} | {pct(agg['leak']['mean'])} |")
    if "fma_coarse_sams_masks" in ctx:
        agg = ctx["fma_coarse_sams_masks"]["aggregate"]
        per = ", ".join(pct(v["miou"]) for _, v in sorted(ctx["fma_coarse_sams_masks"]["per_seed"].items()))
        lines.append(f"| FMA coarse SAMS seeds (label maps, eval-masks; superpixel regions) | {fmt_ms(agg)} | {per} "
                     "| — |")
    variants = results.get("clip_es_variants", {})
    if variants:
        lines += ["", "Training-free sensitivity (seed independent; the primary row is the one in the table above):",
                  "", "| variant | seed mIoU | best t | leak % |", "|---|---:|---:|---:|"]
        for key, (_, label) in CLIP_ES_VARIANTS.items():
            if key in variants:
                v = variants[key]
                lines.append(f"| {label} | {pct(v['miou'])} | {v['threshold']:.2f} | {pct(v['leak']['mean'])} |")
    probe = results.get("clip_probe")
    if probe:
        lines += ["", f"Toy CLIP features on the {probe['images']} training images (class ranking; prompts "
                  f"'{probe['template']}' unless trained):", "", "| image feature | mAP % | top-1 present % |",
                  "|---|---:|---:|"]
        for name, v in probe["features"].items():
            lines.append(f"| {name} | {pct(v['map'])} | {pct(v['top1_present'])} |")
    # per-class IoU of the methods
    present = [k for k in METHODS if k in rows]
    if present:
        classes = list(rows[present[0]]["aggregate"]["per_class_iou"])
        lines += ["", "Per-class IoU % (mean over seeds):", "",
                  "| method | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
        for key in present:
            pc = rows[key]["aggregate"]["per_class_iou"]
            lines.append(f"| {key} | " + " | ".join(pct(pc[c]["mean"]) for c in classes) + " |")
        names = list(rows[present[0]]["aggregate"].get("leak_per_class", {}))
        if names:
            lines += ["", "Per-class leak rate % (mean over seeds; class → its associated background):", "",
                      "| method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
            for key in present:
                lk = rows[key]["aggregate"]["leak_per_class"]
                lines.append(f"| {key} | " + " | ".join(pct(lk[c]["mean"]) for c in names) + " |")
    timing = meta.get("timings", {})
    if timing:
        lines += ["", "Wall time per step (s, all invocations; machine shared, see load):", "",
                  "| step | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in sorted(timing.items())]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=None,
                   help="run folders (default runs/methods; --quick: runs/methods-quick)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--no-context", action="store_true", help="skip the classify / match / coarse context rows")
    p.add_argument("--no-variants", action="store_true", help="skip the training-free sensitivity variants")
    p.add_argument("--quick", action="store_true", help="24 images, 1 epoch per stage: a smoke check, not results")
    p.add_argument("--json", type=Path, default=None, help="raw numbers (default benchmarks/results/...)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of this process (default 1: THREADS_NOTE)")
    args = p.parse_args(argv)
    out = (args.out or REPO / "runs" / ("methods-quick" if args.quick else "methods")).resolve()
    json_path = args.json or (out / "synthetic_methods.json" if args.quick else DEFAULT_JSON)
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    logging.basicConfig(level=logging.INFO, stream=_CurrentStderr(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    import torch

    torch.set_num_threads(args.threads)  # the CLI sets none; see THREADS_NOTE
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    t_start = time.perf_counter()
    sampler = LoadSampler()
    sampler.start()
    timings = Timings(out / "timings.json")
    bench = Bench(out, args.quick, timings)
    log(f"out {out}; seeds {args.seeds}; methods {args.methods}; toy CLIP: text context {bench.fit['text_context']}, "
        f"longest name {bench.fit['longest_name_tokens']} tokens -> context length <= "
        f"{bench.fit['max_context_length']} fits, using {CONTEXT_LENGTH}; logit scale {bench.toy_logit_scale}")
    log(f"common overrides: {list(bench.common)}")

    results: dict[str, Any] = {"methods": {}, "context": {}, "clip_es_variants": {}, "failures": []}

    def attempt(what: str, fn, *a):
        try:
            return fn(*a)
        except Exception as e:  # a failing row is reported, the others still run
            log(f"FAILED {what}: {type(e).__name__}: {e}")
            results["failures"].append({"what": what, "error": f"{type(e).__name__}: {e}"})
            return None

    if "clip_es" in args.methods:
        variants = ["primary"] + ([] if args.no_variants else [v for v in CLIP_ES_VARIANTS if v != "primary"])
        for v in variants[:1]:
            if (r := attempt(f"clip_es/{v}", bench.clip_es, v)) is not None:
                results["clip_es_variants"][v] = r
        if results["clip_es_variants"].get("primary"):
            results["clip_es_determinism"] = attempt("clip_es determinism", bench.clip_es_determinism, args.seeds)

    for seed in args.seeds:
        for method in ("semples", "semples_fma", "fma", "semples_resnet50"):
            if method not in args.methods:
                continue
            if (r := attempt(f"seed{seed}/{method}", bench.run_method, method, seed)) is not None:
                results["methods"].setdefault(method, {"per_seed": {}})["per_seed"][str(seed)] = r
            if args.no_context or r is None:
                continue
            keys = {"semples": ("weaktr_classify", "weaktr_match"), "semples_resnet50": ("resnet50_classify",
                                                                                         "resnet50_match")}
            for key in keys.get(method, ()):
                if (c := attempt(f"seed{seed}/{key}", bench.context_generator, key, seed)) is not None:
                    results["context"].setdefault(key, {"per_seed": {}})["per_seed"][str(seed)] = c
            if method == "fma" and (c := attempt(f"seed{seed}/fma_coarse", bench.context_fma, seed)) is not None:
                results["context"].setdefault("fma_coarse", {"per_seed": {}})["per_seed"][str(seed)] = c
                results["context"].setdefault("fma_coarse_sams_masks", {"per_seed": {}})["per_seed"][str(seed)] = \
                    c["coarse_sams_masks"]

    if "clip_es" in args.methods:
        results["clip_probe"] = attempt("clip probe", bench.clip_probe, args.seeds)
    if "clip_es" in args.methods and not args.no_variants:  # sensitivity last: it is not part of the table
        for v in [v for v in CLIP_ES_VARIANTS if v != "primary"]:
            if (r := attempt(f"clip_es/{v}", bench.clip_es, v)) is not None:
                results["clip_es_variants"][v] = r

    # the training-free row: seed independent (determinism checked), so one value stands for every seed
    if "primary" in results["clip_es_variants"]:
        prim = results["clip_es_variants"]["primary"]
        results["methods"]["clip_es"] = {"per_seed": {str(s): prim for s in args.seeds},
                                         "note": "training-free: computed once (seed 0 config); seeds do not enter "
                                                 "(checked bit by bit, see clip_es_determinism)"}
    for group in ("methods", "context"):
        for rec in results[group].values():
            rec["aggregate"] = aggregate(rec["per_seed"])

    wall = time.perf_counter() - t_start
    usage_self, usage_children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    results["meta"] = {
        "command": "python benchmarks/synthetic_methods.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "preset": PRESET, "split": SPLIT, "seeds": args.seeds, "quick": args.quick, "out": str(out),
        "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "wall_seconds_this_invocation": round(wall, 1),
        "cpu_seconds_this_invocation": round(usage_self.ru_utime + usage_self.ru_stime + usage_children.ru_utime
                                             + usage_children.ru_stime, 1),
        "peak_rss_mib": round(usage_self.ru_maxrss / 1024, 1),
        "load_average_this_invocation": sampler.stop(),
        "timings": timings.data, "wall_seconds_all_invocations_sum_of_steps": round(sum(timings.data.values()), 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "threads_note": THREADS_NOTE},
        "toy_clip_fit": bench.fit, "common_overrides": list(bench.common), "resnet_overrides": list(RESNET),
        "clip_es_variant_overrides": {k: list(v[0]) for k, v in CLIP_ES_VARIANTS.items()},
        "threshold_selection": "best background threshold on the 600 training images (oracle, as in the paper)",
    }
    write_json(json_path, results)
    report = markdown(results)
    (out / "report.md").write_text(report)
    print(report, file=sys.__stdout__)
    log(f"raw numbers -> {json_path}; report -> {out / 'report.md'}; failures: {len(results['failures'])}; "
        f"total wall {wall / 60:.1f} min this invocation (sum of recorded steps, all invocations: "
        f"{sum(timings.data.values()) / 60:.1f} min)")
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
