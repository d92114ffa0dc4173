"""Seed mIoU and leak rate of five WSSS seed methods on the synthetic co-occurrence world (issue 6, item 6), each
trained row over several training seeds, with paired 95% intervals of SemPLeS against every other method.

    python benchmarks/synthetic_methods.py [--seeds 0 1 2 3 4] [--methods ...] [--ablation DIR] [--out DIR] [--quick]

Rows (every one on the committed preset ``synth_demo``: the world, the shipped toy CLIP ``synth-clip``, the SemPLeS
stage schedules — nothing here edits it; the overrides below are listed in the output):

1. ``clip_es``  training-free CLIP Grad-CAM, CLIP-ES style: `semples.steps.clip_cams.run(cfg, None, out,
   phase="coarse", prompts="handcrafted")` — Grad-CAM of the frozen toy CLIP against hand-written prompts of the 6
   classes and the world's 8 background names, refined by CAA (boxes at 0.4, as CLIP-ES), no training. Seed
   independent: computed once (seed-0 config) and checked bit by bit under other seeds; one value stands for
   every seed.
2. ``fma``      FMA-WSSS: ``semples run --method fma --until eval-seeds`` (`semples.pipeline.run_pipeline`:
   fma-classify -> coarse Grad-CAM + CAA -> coarse SAMS seeds -> fma-segment -> fine Grad-CAM + CAA). SAMS regions
   are SLIC superpixels (no SAM weights here). The seed is the fine CAM folder (before SAMS), as for every other row.
3. ``semples``  SemPLeS: classify -> match -> prompt -> refine (WeakTr-style ViT), exactly the full SemPLeS refine
   of ``benchmarks/synthetic_ablation.py`` (its run table, trained through `semples.steps.train` by `SeedRuns`).
   With ``--ablation DIR`` the per-seed evaluations of that benchmark (``DIR/seed<S>/eval/refine/metrics.json``)
   are read instead of training again; the refine checkpoint's recorded config must match this benchmark's (else
   the row fails, naming the differences) and the evaluation must be of that checkpoint (sha256).
4. ``semples_fma``  SemPLeS + FMA: (3)'s CAMs refined by CAA with the toy CLIP's attention (`semples.steps.caa`,
   phase fine, as `semples run --method semples+fma`); the same refine runs as (3).
5. ``semples_resnet50``  SemPLeS on the CLIMS-style ResNet-50 CAM generator (timm resnet50, output stride 16, random
   init), the synth_demo stage schedules unchanged (runs ``resnet50_<stage>`` beside (3)'s).

Context rows (cheap, same folders): the CAMs of both generators after stage classify and after stage match, FMA's
coarse CAMs (classification prompts) and the mIoU of its coarse SAMS seeds (`semples.steps.masks`, label maps: not
comparable to the CAM rows); with ``--ablation`` the WeakTr classify / match evaluations are read from DIR too.

Settings fixed before any number was seen (the CLIP Grad-CAM generator must fit the toy CLIP); they apply to the
CLIP rows (1), (2) only — (3)-(5) train with the preset as the ablation benchmark does:
* context length 16 (the paper's): the longest prompt, "a brick wall" (3 tokens) with SOT, ".", EOT, needs
  M + 6 <= 24 positions, so M <= 18 fits; checked at start-up by building both prompt sets on the loaded CLIP.
* logit scale = the toy CLIP's own learned temperature (exp(logit_scale), read from the loaded CLIP at start-up),
  as FMA-WSSS's 100 is ViT-B/16's own; the CLIP-ES template "a clean origami {}." has words outside the toy CLIP's
  vocabulary (captions of the world never use them), so the handcrafted prompt is the world's caption form
  ``clip.class_template`` ("a photo of a {}.").
* FMA prompt stages crop at 96 px (the world's image scale, as the SemPLeS stages; the package default is 224).
  The training-free row also reports, as a clearly separate sensitivity table: CAA off, the CLIP-ES template and
  logit scale 100 — none of them replaces the primary row.
* Seeds are scored on the training images (``pipeline.seed_split: train``) by `semples.steps.seeds.run` at the
  background threshold that is best on them (an oracle choice, as in the paper), with eval-seeds' own leak rate at
  that threshold (share of a class's associated-background pixels labelled as that class).

Comparisons are paired by seed (SemPLeS − method, same training seed): mean difference with a 95% Student-t
interval; "beyond" says whether the interval excludes zero (in SemPLeS's favour: higher mIoU, lower leak). The
training-free row is the same value for every seed, so its interval is SemPLeS's own seed spread.

Design: every row goes through the library's step functions in this process (`SeedRuns` of
``benchmarks/_synthetic.py`` for the SemPLeS runs, `semples.pipeline.run_pipeline` for FMA-WSSS,
`semples.steps.clip_cams` / `.caa` / `.seeds` / `.masks` for the rest), one folder ``<out>/seed<S>`` per seed;
finished runs and folders are reused (the library's input-checked reuse), and an evaluation whose metrics.json
exists is not redone, so an interrupted invocation resumes. Work goes seed by seed (all methods of seed 0 first),
so a partial run already holds a complete comparison; CAM folders this script makes are deleted after their
evaluation unless ``--keep-cams``. Progress bars and library logs go to ``<out>/logs/``; progress lines go to
stdout. One torch thread by default (THREADS_NOTE); wall time per step accumulates in ``<out>/timings.json``; the
1-minute load average is sampled every 30 s. Output: the Markdown report printed and in ``<out>/report.md``, every
number in a JSON (default ``benchmarks/results/synthetic_methods.json``; with ``--quick``:
``<out>/synthetic_methods.json``, a smoke check, not results).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, Timings, read_json, read_load, write_json  # noqa: E402
from _synthetic import PRESET, SeedRuns, beyond, compare, fmt, fmt_ci, headline, mean_std, torch_threads  # noqa: E402
from synthetic_ablation import QUICK as ABLATION_QUICK  # noqa: E402
from synthetic_ablation import RUNS as ABLATION_RUNS  # noqa: E402
from synthetic_ablation import Run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "benchmarks" / "results" / "synthetic_methods.json"
CONTEXT_LENGTH = 16  # CoOp / FMA-WSSS context vectors per prompt (checked against the toy CLIP at start-up)
FMA_CROP = 96  # crop side of the FMA prompt stages on this world (package default 224 is VOC's)
DETERMINISM_IMAGES = 40  # training-free CAMs recomputed under the other seeds and compared bit by bit
FMA_EXPERIMENT = "fma_wsss"  # `semples run --method fma` of a seed: <out>/seed<S>/fma_wsss/
# Measured here before the first runs (load ~6.5 on the 2 cores): `semples cams` of the ResNet-50 generator wrote
# 1.49 img/s with one torch thread and 0.27 img/s with torch's default two (a DataLoader worker beside two OpenMP
# threads on a busy 2-core machine), so every run of this benchmark gets one unless --threads says otherwise.
THREADS_NOTE = "1 torch thread (2 threads were 5.5x slower for ResNet-50 cams at load ~6.5)"
RESNET = ("generator.name=resnet_cam", "generator.backbone=resnet50", "generator.backbone_kwargs={output_stride: 16}")
# the ablation benchmark's quick world (so `--quick --ablation <its quick out>` pairs the same runs) + the FMA stages
QUICK = (*ABLATION_QUICK, "fma_classify.epochs=1", "fma_segment.epochs=1", "fma_classify.batch_size=16",
         "fma_segment.batch_size=16")

# SemPLeS: the ablation benchmark's own runs; the ResNet-50 chain is the same table on the other generator
SEMPLES_RUNS: dict[str, Run] = {n: ABLATION_RUNS[n] for n in ("classify", "match", "prompt", "refine")}
RESNET_RUNS: dict[str, Run] = {
    f"resnet50_{n}": Run(f"resnet50_{n}", r.stage, (*RESNET, *r.sets),
                         generator=f"resnet50_{r.generator}" if r.generator else None,
                         prompts=f"resnet50_{r.prompts}" if r.prompts else None)
    for n, r in SEMPLES_RUNS.items()}

METHODS: dict[str, str] = {
    "clip_es": "training-free CLIP Grad-CAM + CAA (CLIP-ES style)",
    "fma": "FMA-WSSS (learned CLIP prompts, CAA; SAMS on superpixels for the coarse seeds)",
    "semples": "SemPLeS (WeakTr-style ViT, synth_demo)",
    "semples_fma": "SemPLeS + FMA (SemPLeS CAMs refined by CAA)",
    "semples_resnet50": "SemPLeS on the ResNet-50 CAM generator (random init)",
}
CONTEXT: dict[str, str] = {
    "weaktr_classify": "WeakTr-style ViT after stage classify (its CAMs, no SemPLeS)",
    "weaktr_match": "WeakTr-style ViT after stage match (L_match only)",
    "resnet50_classify": "ResNet-50 CAM after stage classify (no SemPLeS)",
    "resnet50_match": "ResNet-50 CAM after stage match (L_match only)",
    "fma_coarse": "FMA coarse CAMs: Grad-CAM of the classification prompts + CAA (boxes 0.4)",
    "fma_coarse_sams": "FMA coarse SAMS seeds (label maps, eval-masks; superpixel regions)",
}
# training-free sensitivity (seed independent); "primary" is the row of the main table
CLIP_ES_VARIANTS: dict[str, tuple[tuple[str, ...], str]] = {
    "primary": ((), "template 'a photo of a {}.', CAA on, logit scale = toy CLIP's"),
    "caa_off": (("fma.caa.enabled=false",), "plain Grad-CAM (CAA off)"),
    "template_origami": (('generator.clip_cam.templates=["a clean origami {}."]',),
                         "CLIP-ES's template 'a clean origami {}.' (words outside the toy CLIP's vocabulary)"),
    "logit_scale_100": (("generator.clip_cam.logit_scale=100.0",), "logit scale 100 (ViT-B/16's, FMA/CLIP-ES)"),
}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {read_load()[0]:.1f}] {msg}", flush=True)


def summary(metrics: dict) -> dict:
    """The numbers of one eval-seeds metrics.json this benchmark keeps (in %; `headline` + background FP rate)."""
    out = headline(metrics)
    fp = metrics.get("bg_false_positive_rate")
    out.update(bg_fp=100 * fp if fp is not None else None, images=metrics.get("images"),
               cams_dir=metrics.get("cams_dir"))
    return out


def mask_summary(metrics: dict) -> dict:
    """The numbers of one eval-masks metrics.json (label maps: no threshold, no leak rate), in %."""
    s = metrics["all_pixels"]
    fp = s.get("bg_false_positive_rate")
    return {"miou": 100 * s["miou"], "leak": None, "threshold": None, "cam_on_bg": None,
            "iou": {k: 100 * v["iou"] if v.get("iou") is not None else None for k, v in s["per_class"].items()},
            "leak_per_class": {}, "bg_fp": 100 * fp if fp is not None else None, "images": metrics.get("num_images"),
            "masks_dir": metrics.get("masks_dir")}


# ----------------------------------------------------------------------------------------------------- the bench
class Benchmark:
    def __init__(self, args: argparse.Namespace) -> None:
        self.out = Path(args.out).resolve()
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.overrides = tuple(QUICK if args.quick else ()) + tuple(args.set)
        self.timings = Timings(self.out / "timings.json")
        self.threads = args.threads
        self.keep_cams = args.keep_cams
        self.methods = list(args.methods)
        self.ablation = Path(args.ablation).resolve() if args.ablation else None
        self.fit = self._toy_clip_checks()
        # the CLIP rows only (the SemPLeS runs must stay the ablation benchmark's, whose configs lack these keys)
        self.clip_sets = (f"generator.clip_cam.context_length={CONTEXT_LENGTH}",
                          f"generator.clip_cam.logit_scale={round(self.fit['toy_logit_scale'], 4)}",
                          f"fma_classify.transform.crop_size={FMA_CROP}", f"fma_segment.transform.crop_size={FMA_CROP}")
        self.template_set = f'generator.clip_cam.templates=["{self.fit["class_template"]}"]'
        self._dataset = None

    # -- configuration -------------------------------------------------------------------------------------------
    def _toy_clip_checks(self) -> dict:
        """What this benchmark needs to know of the toy CLIP (read, never assumed: it may be retrained): text
        context, image size, logit scale; raises when prompts of CONTEXT_LENGTH do not fit its text context."""
        import torch

        from semples.config import load_config
        from semples.models.clip import load_clip
        from semples.models.prompts import CoOpPrompts, background_names_for

        cfg = load_config(PRESET, list(self.overrides))
        clip = load_clip(cfg.clip, "cpu")
        names = tuple(cfg.data.synthetic.classes) + background_names_for(cfg.data)
        longest = max(len(clip.token_ids(n)) for n in names)
        suffix = len(clip.token_ids("."))  # prompt = SOT, M context vectors, name, ".", EOT
        for shared, position in ((True, "end"), (False, "front")):
            CoOpPrompts(clip, names, context_length=CONTEXT_LENGTH, shared=shared, class_position=position)
        with torch.no_grad():
            scale = float(clip.model.logit_scale.exp())
        return {"arch": cfg.clip.arch, "source": getattr(clip, "source", None),
                "text_context": int(clip.context_length), "image_size": list(clip.image_size),
                "longest_name_tokens": longest,
                "max_context_length": int(clip.context_length) - longest - 2 - suffix, "names": list(names),
                "toy_logit_scale": scale, "class_template": cfg.clip.class_template}

    def seed(self, s: int) -> SeedRuns:
        return SeedRuns(self.out, s, overrides=self.overrides, threads=self.threads, keep_cams=self.keep_cams,
                        timings=self.timings)

    def dataset(self, runs: SeedRuns):
        if self._dataset is None:
            from semples.data import build_dataset

            cfg = runs.cfg()
            self._dataset = build_dataset(cfg.data, runs.split(cfg))
        return self._dataset

    def _timed(self, key: str, fn):
        start = time.perf_counter()
        out = fn()
        self.timings.add(key, time.perf_counter() - start)
        return out

    @contextlib.contextmanager
    def quiet(self, name: str):
        """Progress bars and prints of the library go to ``<out>/logs/<name>.log`` (logging stays on stderr)."""
        with open(self.logs / f"{name}.log", "a") as f, contextlib.redirect_stderr(f), contextlib.redirect_stdout(f):
            yield

    def _rm(self, *folders: Path) -> None:
        if not self.keep_cams:
            for f in folders:
                shutil.rmtree(f, ignore_errors=True)

    # -- training (the ablation benchmark's run table) -----------------------------------------------------------
    def train(self, runs: SeedRuns, table: dict[str, Run], name: str) -> Path:
        run = table[name]
        for dep in (run.generator, run.prompts):
            if dep:
                self.train(runs, table, dep)
        manifest = runs.run_dir(name) / "manifest.json"
        if not manifest.is_file() or read_json(manifest).get("status") != "finished":
            say(f"seed {runs.seed}: train {name} ({run.stage})")
        with self.quiet(f"seed{runs.seed}"):
            return runs.train(name, run.stage, sets=run.sets, generator=run.generator, prompts=run.prompts,
                              threads=run.threads)

    def trained_row(self, runs: SeedRuns, table: dict[str, Run], name: str) -> dict:
        self.train(runs, table, name)
        first = not (runs.dir / "eval" / name / "metrics.json").is_file()
        with self.quiet(f"seed{runs.seed}"):
            out = summary(runs.evaluate(name, sets=table[name].sets))
        if first:
            say(f"seed {runs.seed}: {name}: seed mIoU {out['miou']:.2f}, leak {fmt(out['leak'])}%")
        return out

    # -- (3) SemPLeS, or the ablation benchmark's evaluation of it -----------------------------------------------
    def from_ablation(self, runs: SeedRuns, name: str) -> tuple[dict, Path]:
        """The ablation benchmark's evaluation of its run `name` of this seed, and that run's folder, after checking
        that the run was trained with this benchmark's config and that the evaluation is of its checkpoint."""
        from semples.engine.loop import RESUME_TOLERANT_KEYS
        from semples.runs import describe_config_differences
        from semples.stages import stage_class
        from semples.utils.checkpoint_io import read_checkpoint, sha256_file

        src = self.ablation / f"seed{runs.seed}"
        path = src / "eval" / name / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such evaluation (run benchmarks/synthetic_ablation.py --seeds "
                                    f"{runs.seed} --out {self.ablation}, or drop --ablation)")
        run = SEMPLES_RUNS[name]
        ckpt = read_checkpoint(src / name)
        if not ckpt.get("finished"):
            raise RuntimeError(f"{ckpt['path']}: the ablation's {name} run is not finished")
        diffs = describe_config_differences(ckpt.get("config", {}),
                                            stage_class(run.stage).recorded_config(runs.cfg(run.sets)),
                                            RESUME_TOLERANT_KEYS)
        if diffs:
            raise RuntimeError(f"{ckpt['path']} was trained with another config than this benchmark's "
                               f"({len(diffs)} differences: {'; '.join(diffs[:5])}); pass the ablation's --set "
                               "values / --quick, or drop --ablation")
        metrics = read_json(path)
        recorded = metrics.get("cams", {}).get("inputs", {}).get("generator", {}).get("sha256")
        if recorded is not None and recorded != sha256_file(ckpt["path"]):
            raise RuntimeError(f"{path}: evaluates another checkpoint than {ckpt['path']} (sha256 differs)")
        return metrics, src / name

    def semples_generator(self, runs: SeedRuns) -> Path:
        if self.ablation is not None:
            return self.from_ablation(runs, "refine")[1]
        return self.train(runs, SEMPLES_RUNS, "refine")

    def semples(self, runs: SeedRuns, name: str = "refine") -> dict:
        """SemPLeS run `name` (refine: the row; classify / match: context) of this seed."""
        if self.ablation is not None:
            metrics, run_dir = self.from_ablation(runs, name)
            out = {**summary(metrics), "source": str(run_dir)}
            say(f"seed {runs.seed}: {name} (read from {run_dir.parent.parent}): seed mIoU {out['miou']:.2f}, "
                f"leak {fmt(out['leak'])}%")
            return out
        if name == "refine" and "semples_fma" in self.methods and \
                not (runs.dir / "eval" / "semples_fma" / "metrics.json").is_file() and \
                not (runs.dir / "eval" / "refine" / "metrics.json").is_file():
            # the CAMs stay for (4), which removes them
            self.train(runs, SEMPLES_RUNS, name)
            with self.quiet(f"seed{runs.seed}"):
                out = summary(runs.evaluate_cams(name, runs.cams(name)))
            say(f"seed {runs.seed}: {name}: seed mIoU {out['miou']:.2f}, leak {fmt(out['leak'])}%")
            return out
        return self.trained_row(runs, SEMPLES_RUNS, name)

    # -- (4) SemPLeS + FMA ---------------------------------------------------------------------------------------
    def semples_fma(self, runs: SeedRuns) -> dict:
        from semples.steps import caa

        if (runs.dir / "eval" / "semples_fma" / "metrics.json").is_file():
            return summary(read_json(runs.dir / "eval" / "semples_fma" / "metrics.json"))
        generator = self.semples_generator(runs)
        cfg = runs.cfg()
        caa_dir = runs.dir / "cams" / "semples_fma"
        say(f"seed {runs.seed}: semples_fma: CAA of the SemPLeS CAMs ({generator})")
        with self.quiet(f"seed{runs.seed}"):
            refine_cams = runs.cams("refine", generator=generator)
            with torch_threads(self.threads):
                self._timed(f"seed{runs.seed}/caa/semples_fma", lambda: caa.run(
                    cfg, refine_cams, caa_dir, phase="fine", split=runs.split(cfg), progress=False))
            out = summary(runs.evaluate_cams("semples_fma", caa_dir))
        self._rm(refine_cams, caa_dir)
        say(f"seed {runs.seed}: semples_fma: seed mIoU {out['miou']:.2f}, leak {fmt(out['leak'])}%")
        return out

    # -- (2) FMA-WSSS through the pipeline -----------------------------------------------------------------------
    def fma_cfg(self, runs: SeedRuns):
        return runs.cfg((f"experiment={FMA_EXPERIMENT}", "pipeline.method=fma", *self.clip_sets))

    def fma_manifest(self, runs: SeedRuns) -> dict:
        """`semples run --method fma --until eval-seeds` of this seed (skipped when its eval-seeds is done); the
        run manifest (run.json), its path under ``"path"``."""
        from semples.pipeline import Pipeline, run_pipeline

        cfg = self.fma_cfg(runs)
        pipeline = Pipeline(cfg)
        done = pipeline.manifest["steps"].get("eval-seeds", {})
        if done.get("status") != "done" or not Path(done["outputs"]["metrics"]).is_file():
            say(f"seed {runs.seed}: fma: semples run --method fma --until eval-seeds ({pipeline.out})")
            with self.quiet(f"seed{runs.seed}_fma"), torch_threads(self.threads):
                self._timed(f"seed{runs.seed}/pipeline/fma", lambda: run_pipeline(cfg, until="eval-seeds"))
        return {**read_json(pipeline.manifest_path), "path": str(pipeline.manifest_path)}

    def fma(self, runs: SeedRuns) -> dict:
        manifest = self.fma_manifest(runs)
        steps = manifest["steps"]
        out = summary(read_json(steps["eval-seeds"]["outputs"]["metrics"]))
        out.update(run_manifest=manifest["path"], train_outputs=steps["train"]["outputs"],
                   step_seconds={k: v.get("seconds") for k, v in steps.items()})
        say(f"seed {runs.seed}: fma: seed mIoU {out['miou']:.2f}, leak {fmt(out['leak'])}%")
        return out

    def fma_coarse(self, runs: SeedRuns) -> tuple[dict, dict]:
        """FMA's coarse CAMs (eval-seeds) and coarse SAMS seeds (eval-masks) from this seed's fma run."""
        from semples.steps import masks

        train = self.fma_manifest(runs)["steps"]["train"]["outputs"]
        cfg = self.fma_cfg(runs)
        sets = (f"experiment={FMA_EXPERIMENT}", "pipeline.method=fma", *self.clip_sets)
        with self.quiet(f"seed{runs.seed}_fma"):
            coarse = summary(runs.evaluate_cams("fma_coarse", Path(train["coarse_cams"]), sets=sets))
            out = runs.dir / "eval" / "fma_coarse_sams"
            if not (out / "metrics.json").is_file():
                self._timed(f"seed{runs.seed}/eval/fma_coarse_sams", lambda: masks.run(
                    cfg, train["coarse_seeds"], split=runs.split(cfg), out=out, progress=False))
        return coarse, mask_summary(read_json(out / "metrics.json"))

    # -- (1) training-free ---------------------------------------------------------------------------------------
    def clip_es_cfg(self, variant: str, seed: int = 0):
        return self.seed(seed).cfg((*self.clip_sets, self.template_set, *CLIP_ES_VARIANTS[variant][0]))

    def clip_es(self, variant: str) -> dict:
        from semples.steps import clip_cams, seeds

        base = self.out / "clip_es" / variant
        if not (base / "eval" / "metrics.json").is_file():
            cfg = self.clip_es_cfg(variant)
            c = cfg.generator.clip_cam
            say(f"clip_es/{variant}: training-free CLIP Grad-CAM seeds ({'CAA' if cfg.fma.caa.enabled else 'no CAA'}"
                f", templates {list(c.templates)}, logit scale {c.logit_scale})")
            split = self.seed(0).split(cfg)
            with self.quiet("clip_es"), torch_threads(self.threads):
                self._timed(f"clip_es/{variant}/cams", lambda: clip_cams.run(
                    cfg, None, base / "cams", phase="coarse", split=split, prompts="handcrafted", progress=False))
                self._timed(f"clip_es/{variant}/eval", lambda: seeds.run(
                    cfg, base / "cams", split=split, out=base / "eval", samples=0, progress=False))
            if variant != "primary":  # the primary CAMs are the determinism check's reference
                self._rm(base / "cams")
        metrics = read_json(base / "eval" / "metrics.json")
        out = summary(metrics)
        settings = metrics.get("cams", {}).get("settings", {})
        out["settings"] = {"overrides": [*self.clip_sets, self.template_set, *CLIP_ES_VARIANTS[variant][0]],
                           **{k: settings.get(k) for k in ("caa", "box_threshold", "scales", "flip") if k in settings}}
        say(f"clip_es/{variant}: seed mIoU {out['miou']:.2f}, leak {fmt(out['leak'])}%")
        return out

    def clip_es_determinism(self, seeds: list[int]) -> dict:
        """Recomputes the first images' training-free CAMs under the other seeds; compares them bit by bit."""
        from semples.infer.cam_io import cam_path, load_cam
        from semples.steps import clip_cams

        path = self.out / "clip_es" / "determinism.json"
        reference = self.out / "clip_es" / "primary" / "cams"
        ds = self.dataset(self.seed(0))
        n = min(DETERMINISM_IMAGES, len(ds))
        result: dict[str, Any] = read_json(path) if path.is_file() else {"images": n, "reference": str(reference),
                                                                          "seeds": {}, "seconds": 0.0}
        todo = [s for s in seeds if s != 0 and str(s) not in result["seeds"]]  # invocations may bring new seeds
        if not todo:
            return result
        cfg0 = self.clip_es_cfg("primary")
        split = self.seed(0).split(cfg0)
        start = time.perf_counter()
        with self.quiet("clip_es"), torch_threads(self.threads):
            # the reference is complete unless an earlier invocation removed it (then its first n images again)
            if not all(cam_path(reference, i).is_file() for i in ds.ids[:n]):
                clip_cams.run(cfg0, None, reference, phase="coarse", split=split, prompts="handcrafted", limit=n,
                              progress=False)
            for seed in todo:
                cams_dir = self.out / "clip_es" / f"determinism_seed{seed}"
                clip_cams.run(self.clip_es_cfg("primary", seed), None, cams_dir, phase="coarse", split=split,
                              prompts="handcrafted", limit=n, progress=False)
                same = []
                for image_id in ds.ids[:n]:
                    a, ca = load_cam(cam_path(reference, image_id))
                    b, cb = load_cam(cam_path(cams_dir, image_id))
                    same.append(bool(np.array_equal(a, b) and np.array_equal(ca, cb)))
                result["seeds"][str(seed)] = {"identical_images": int(sum(same)), "all_identical": all(same)}
                shutil.rmtree(cams_dir, ignore_errors=True)
        seconds = time.perf_counter() - start
        result["seconds"] = round(result["seconds"] + seconds, 1)
        self.timings.add("clip_es/determinism", seconds)
        write_json(path, result)
        self._rm(reference)
        say(f"clip_es determinism: {result['seeds']}")
        return result

    # -- why the CLIP rows look as they do ----------------------------------------------------------------------
    def clip_probe(self, seeds: list[int]) -> dict:
        """How well the toy CLIP's features rank the classes present in the training images (mAP over the 6
        classes; top-1 = the highest-scoring class is present), for the feature the toy CLIP was trained with (class
        token, at its own input size) and the one the Grad-CAM generator uses (mean of projected patch tokens, at
        the CLIP's input size and at the images' native size the seeds are computed at), with the handcrafted
        prompts and with each seed's trained fma-classify prompts."""
        import torch
        import torch.nn.functional as F

        from semples.data.transforms import normalize, to_tensor
        from semples.runs import RunLayout
        from semples.steps.clip_cams import fma_generator

        path = self.out / "clip_probe.json"
        if path.is_file() and set((cached := read_json(path)).get("fma_classify", {})) >= {str(s) for s in seeds}:
            return cached
        say("clip probe: class-token vs patch-mean features of the toy CLIP on the training images ...")
        start = time.perf_counter()
        ds = self.dataset(self.seed(0))
        k = len(ds.classes.names)
        gen, _ = fma_generator(self.clip_es_cfg("primary"), None, ds.classes, prompts="handcrafted")
        gen.eval()
        clip = gen.clip
        h, w = clip.image_size
        size = f"{h}px" if h == w else f"{h}x{w}px"
        labels = np.stack([np.asarray(ds.labels(i)) > 0.5 for i in range(len(ds))])
        trained = {}
        for seed in seeds:
            cfg = self.fma_cfg(self.seed(seed))
            run = RunLayout(cfg).stage("fma-classify")
            if (run / "checkpoint.pt").exists():
                trained[str(seed)] = fma_generator(cfg, run, ds.classes)[0].eval()
        own, native = f"class_token_{size}", f"patch_mean_{size}"
        scores: dict[str, list[np.ndarray]] = {own: [], native: [], "patch_mean_native": []}
        scores.update({f"fma_classify_seed{s}_patch_mean_native": [] for s in trained})
        with torch.no_grad():
            text = gen.text_features()[:k]
            for i in range(len(ds)):
                img = to_tensor(ds.load_image(i).convert("RGB"))
                x = normalize(img, "imagenet")[None]
                xs = F.interpolate(x, size=clip.image_size, mode="bilinear", align_corners=False)
                f = F.normalize(clip.encode_image(normalize(img, "clip")[None]).float(), dim=-1)  # resized inside
                scores[own].append((f @ text.t())[0].numpy())
                scores[native].append(gen.image_logits(xs)[0, :k].numpy())
                scores["patch_mean_native"].append(gen.image_logits(x)[0, :k].numpy())
                for s, g in trained.items():
                    scores[f"fma_classify_seed{s}_patch_mean_native"].append(g.image_logits(x)[0, :k].numpy())
        result: dict[str, Any] = {"images": len(ds), "clip_image_size": [h, w], "template": self.fit["class_template"],
                                  "features": {}}
        for name, rows in scores.items():
            sc = np.stack(rows)
            aps = [average_precision(sc[:, c], labels[:, c]) for c in range(k)]
            top1 = float(np.mean(labels[np.arange(len(ds)), sc.argmax(1)]))
            result["features"][name] = {"map": float(np.nanmean(aps)), "top1_present": top1,
                                        "ap_per_class": {c: (None if np.isnan(a) else a)
                                                         for c, a in zip(ds.classes.names, aps)}}
        result["fma_classify"] = {s: result["features"][f"fma_classify_seed{s}_patch_mean_native"] for s in trained}
        result["seconds"] = round(time.perf_counter() - start, 1)
        self.timings.add("clip_probe", result["seconds"])
        write_json(path, result)
        say("clip probe: " + ", ".join(f"{n} mAP {100 * v['map']:.1f}" for n, v in result["features"].items()))
        return result


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class over images (mean precision at the ranks of the positives); NaN without positives."""
    y = np.asarray(positives, dtype=np.float64)[np.argsort(-np.asarray(scores), kind="stable")]
    if y.sum() == 0:
        return float("nan")
    precision = np.cumsum(y) / np.arange(1, len(y) + 1)
    return float((precision * y).sum() / y.sum())


def collect(bench: Benchmark, seeds: list[int], *, context: bool, variants: bool) -> dict:
    """Every row, seed by seed; a failing row is reported and the others still run."""
    res: dict[str, Any] = {"rows": {}, "context": {}, "clip_es_variants": {}, "failures": []}
    methods = bench.methods

    def attempt(what: str, fn, *a):
        try:
            return fn(*a)
        except Exception as e:
            say(f"FAILED {what}: {type(e).__name__}: {e}")
            res["failures"].append({"what": what, "error": f"{type(e).__name__}: {e}"})
            return None

    def put(group: str, key: str, seed: int, value) -> None:
        if value is not None:
            res[group].setdefault(key, {})[seed] = value

    if "clip_es" in methods:
        if (r := attempt("clip_es/primary", bench.clip_es, "primary")) is not None:
            res["clip_es_variants"]["primary"] = r
            res["clip_es_determinism"] = attempt("clip_es determinism", bench.clip_es_determinism, seeds)
    for seed in seeds:
        runs = bench.seed(seed)
        if "semples" in methods or "semples_fma" in methods:
            put("rows", "semples", seed, attempt(f"seed{seed}/semples", bench.semples, runs))
        if "semples_fma" in methods:
            put("rows", "semples_fma", seed, attempt(f"seed{seed}/semples_fma", bench.semples_fma, runs))
        if context and ("semples" in methods or "semples_fma" in methods):
            for stage in ("classify", "match"):
                put("context", f"weaktr_{stage}", seed, attempt(f"seed{seed}/weaktr_{stage}", bench.semples, runs,
                                                                 stage))
        if "fma" in methods:
            put("rows", "fma", seed, attempt(f"seed{seed}/fma", bench.fma, runs))
            if context and seed in res["rows"].get("fma", {}):
                if (c := attempt(f"seed{seed}/fma_coarse", bench.fma_coarse, runs)) is not None:
                    put("context", "fma_coarse", seed, c[0])
                    put("context", "fma_coarse_sams", seed, c[1])
        if "semples_resnet50" in methods:
            put("rows", "semples_resnet50", seed, attempt(f"seed{seed}/semples_resnet50", bench.trained_row, runs,
                                                          RESNET_RUNS, "resnet50_refine"))
            if context:
                for stage in ("classify", "match"):
                    put("context", f"resnet50_{stage}", seed, attempt(f"seed{seed}/resnet50_{stage}",
                                                                      bench.trained_row, runs, RESNET_RUNS,
                                                                      f"resnet50_{stage}"))
    if "clip_es" in methods:
        res["clip_probe"] = attempt("clip probe", bench.clip_probe, seeds)
        if variants:  # sensitivity last: it is not part of the table
            for v in [v for v in CLIP_ES_VARIANTS if v != "primary"]:
                if (r := attempt(f"clip_es/{v}", bench.clip_es, v)) is not None:
                    res["clip_es_variants"][v] = r
        # seed independent (determinism checked), so one value stands for every seed
        if "primary" in res["clip_es_variants"]:
            res["rows"]["clip_es"] = {s: res["clip_es_variants"]["primary"] for s in seeds}
    return res


def merge_rows(res: dict, path: Path, seeds: list[int], quick: bool, overrides: list[str]) -> dict:
    """Adds the rows of an earlier --json file (of `seeds` only) where `res` has none; returns its provenance.

    Refuses a file of another preset, world size or overrides: rows of different worlds must not be paired."""
    from semples.utils.checkpoint_io import read_json

    old = read_json(path)
    meta = old.get("meta", {})
    if meta.get("preset") != PRESET or bool(meta.get("quick")) != quick or list(meta.get("overrides", [])) != overrides:
        raise SystemExit(f"{path}: rows of preset {meta.get('preset')!r} (quick={meta.get('quick')}, overrides "
                         f"{meta.get('overrides')}) cannot join this table ({PRESET!r}, quick={quick}, overrides "
                         f"{overrides})")
    added = []
    for group in ("rows", "context"):
        for key, per in old.get(group, {}).items():
            for seed, value in per.items():
                if int(seed) in seeds and int(seed) not in res[group].get(key, {}):
                    res[group].setdefault(key, {})[int(seed)] = value
                    added.append(f"{group}/{key}/seed{seed}")
    for name, value in old.get("clip_es_variants", {}).items():
        res["clip_es_variants"].setdefault(name, value)
    for key in ("clip_es_determinism", "clip_probe"):
        if old.get(key) and not res.get(key):
            res[key] = old[key]
    res["failures"] += [f for f in old.get("failures", []) if f not in res["failures"]]
    say(f"merged {len(added)} row values from {path}")
    return {"file": str(path), "command": meta.get("command"), "finished": meta.get("finished"), "added": added}


# ----------------------------------------------------------------------------------------------------- report
def row_stats(per: dict[int, dict]) -> dict:
    out = {"n": len(per), "seeds": sorted(per)}
    for key in ("miou", "leak", "cam_on_bg", "bg_fp", "threshold"):
        out[key] = mean_std([v.get(key) for v in per.values()])
    first = per[min(per)] if per else {}
    out["iou"] = {c: mean_std([v["iou"].get(c) for v in per.values()])[0] for c in first.get("iou", {})}
    out["leak_per_class"] = {c: mean_std([v["leak_per_class"].get(c) for v in per.values()])[0]
                             for c in first.get("leak_per_class", {})}
    return out


def comparisons(rows: dict) -> dict:
    """SemPLeS − each other method, paired by seed, for seed mIoU and leak rate."""
    out = {}
    for name in METHODS:
        if name != "semples" and name in rows and "semples" in rows:
            out[name] = {"miou": compare(rows, "semples", name, "miou"), "leak": compare(rows, "semples", name, "leak")}
            out[name]["miou"]["beyond"] = beyond(out[name]["miou"], "higher")
            out[name]["leak"]["beyond"] = beyond(out[name]["leak"], "lower")
    return out


def markdown(res: dict, stats: dict, comp: dict, meta: dict) -> str:
    L: list[str] = []
    add = L.append
    seeds = meta["seeds"]
    add(f"Preset `{PRESET}`{' (--quick: a smoke check, not results)' if meta['quick'] else ''}; seeds {seeds}; "
        f"seed mIoU and leak rate in %, mean ± sample std over seeds, on the {meta['images']} training images at "
        "each run's best background threshold (oracle, as in the paper); leak = share of a class's "
        "associated-background pixels labelled as the class at that threshold; CAM on bg = mean CAM of a class on "
        "those pixels (threshold-free)" + (f"; SemPLeS rows read from `{meta['ablation']}`" if meta["ablation"]
                                          else "") + "".join(
            f"; rows of `{m['file']}` ({m['command']}) merged" for m in meta.get("merged_from", [])) + ".")
    add("")
    add("| method | seed mIoU | per seed | leak | CAM on bg | bg FP | best t |")
    add("|---|---:|---|---:|---:|---:|---:|")
    for key, label in METHODS.items():
        if key not in stats["rows"]:
            continue
        st, per = stats["rows"][key], res["rows"][key]
        add(f"| {label} | {fmt(*st['miou'])} | " + ", ".join(fmt(per[s]["miou"]) for s in sorted(per)) +
            f" | {fmt(*st['leak'])} | {fmt(*st['cam_on_bg'], digits=3)} | {fmt(*st['bg_fp'])} | "
            f"{fmt(st['threshold'][0], digits=2)} |")
    if comp:
        add("")
        add("#### SemPLeS against each method (paired by seed: SemPLeS − method, 95% interval)")
        add("")
        add("| method | n | Δ seed mIoU [95% CI] | beyond (higher)? | Δ leak [95% CI] | beyond (lower)? |")
        add("|---|---:|---:|---|---:|---|")
        for name, c in comp.items():
            add(f"| {METHODS[name]} | {c['miou']['n']} | {fmt_ci(c['miou'])} | {c['miou']['beyond']} | "
                f"{fmt_ci(c['leak'])} | {c['leak']['beyond']} |")
        if "clip_es" in comp:
            add("")
            add("The training-free row is one value for every seed: its interval is SemPLeS's own seed spread.")
    ctx = [k for k in CONTEXT if k in stats["context"]]
    if ctx:
        add("")
        add("#### Context (same seeds, same folders)")
        add("")
        add("| run | seed mIoU | per seed | leak | CAM on bg |")
        add("|---|---:|---|---:|---:|")
        for key in ctx:
            st, per = stats["context"][key], res["context"][key]
            add(f"| {CONTEXT[key]} | {fmt(*st['miou'])} | " + ", ".join(fmt(per[s]["miou"]) for s in sorted(per)) +
                f" | {fmt(*st['leak'])} | {fmt(*st['cam_on_bg'], digits=3)} |")
    variants = res.get("clip_es_variants", {})
    if variants:
        add("")
        add("#### Training-free sensitivity (seed independent; the primary row is the one in the table above)")
        add("")
        add("| variant | seed mIoU | best t | leak |")
        add("|---|---:|---:|---:|")
        for key, (_, label) in CLIP_ES_VARIANTS.items():
            if key in variants:
                v = variants[key]
                add(f"| {label} | {fmt(v['miou'])} | {fmt(v['threshold'], digits=2)} | {fmt(v['leak'])} |")
        det = res.get("clip_es_determinism")
        if det and det["seeds"]:
            same = ", ".join(f"seed {s}: {v['identical_images']}/{det['images']}" for s, v in det["seeds"].items())
            add("")
            add(f"Determinism: the first {det['images']} images' training-free CAMs recomputed under other seeds, "
                f"bit-identical to seed 0's: {same}.")
    probe = res.get("clip_probe")
    if probe:
        add("")
        add(f"#### Toy CLIP features on the {probe['images']} training images (class ranking; prompts "
            f"'{probe['template']}' unless trained; CLIP input {probe['clip_image_size'][0]} px)")
        add("")
        add("| image feature | mAP | top-1 present |")
        add("|---|---:|---:|")
        for name, v in probe["features"].items():
            add(f"| {name} | {fmt(100 * v['map'])} | {fmt(100 * v['top1_present'])} |")
    present = [k for k in METHODS if k in stats["rows"]]
    if present:
        classes = list(stats["rows"][present[0]]["iou"])
        add("")
        add("#### Per-class IoU (mean over seeds)")
        add("")
        add("| method | " + " | ".join(classes) + " |")
        add("|---|" + "---:|" * len(classes))
        for key in present:
            add(f"| {key} | " + " | ".join(fmt(stats["rows"][key]["iou"].get(c)) for c in classes) + " |")
        names = list(stats["rows"][present[0]]["leak_per_class"])
        if names:
            add("")
            add("#### Per-class leak rate (mean over seeds; class → its associated background)")
            add("")
            assoc = meta.get("associations", {})
            add("| method | " + " | ".join(f"{c} → {assoc[c]}" if c in assoc else c for c in names) + " |")
            add("|---|" + "---:|" * len(names))
            for key in present:
                add(f"| {key} | " + " | ".join(fmt(stats["rows"][key]["leak_per_class"].get(c)) for c in names)
                    + " |")
    if res["failures"]:
        add("")
        add("#### Failures")
        add("")
        add("\n".join(f"- {f['what']}: {f['error']}" for f in res["failures"]))
    if meta.get("timings"):
        add("")
        add("#### Wall time per step (s, all invocations; machine shared, see the load average)")
        add("")
        add("| step | seconds |")
        add("|---|---:|")
        L += [f"| {k} | {v:.0f} |" for k, v in sorted(meta["timings"].items())]
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--ablation", default=None, metavar="DIR",
                   help="--out of benchmarks/synthetic_ablation.py: read its SemPLeS evaluations instead of training")
    p.add_argument("--out", default=None, help="run folders (default runs/methods; --quick: runs/methods-quick)")
    p.add_argument("--json", default=None, help=f"raw numbers (default {DEFAULT_JSON.relative_to(REPO)})")
    p.add_argument("--no-context", action="store_true", help="skip the classify / match / coarse context rows")
    p.add_argument("--no-variants", action="store_true", help="skip the training-free sensitivity variants")
    p.add_argument("--threads", type=int, default=1, help=f"torch threads per run (default: {THREADS_NOTE})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--quick", action="store_true", help="tiny world and 1 epoch per stage: a smoke check, not results")
    p.add_argument("--keep-cams", action="store_true")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="earlier --json files of this benchmark (same preset and world): their rows join this "
                        "invocation's where it has none (method and seed), so rows run in separate processes make "
                        "one table and one set of paired comparisons")
    args = p.parse_args(argv)
    args.out = args.out or str(REPO / "runs" / ("methods-quick" if args.quick else "methods"))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)  # for what runs outside SeedRuns / torch_threads (the CLIP probe)
    started, start = time.strftime("%Y-%m-%dT%H:%M:%S"), time.perf_counter()
    sampler = LoadSampler()
    sampler.start()
    bench = Benchmark(args)
    fit = bench.fit
    say(f"out {bench.out}; seeds {args.seeds}; methods {args.methods}; toy CLIP {fit['arch']}: image "
        f"{fit['image_size']}, text context {fit['text_context']}, longest name {fit['longest_name_tokens']} tokens "
        f"-> context length <= {fit['max_context_length']} fits, using {CONTEXT_LENGTH}; logit scale "
        f"{fit['toy_logit_scale']:.4f}")
    say(f"overrides (every run): {list(bench.overrides)}; CLIP rows also: {list(bench.clip_sets)}")
    res = collect(bench, args.seeds, context=not args.no_context, variants=not args.no_variants)
    merged = [merge_rows(res, Path(f), args.seeds, args.quick, list(bench.overrides)) for f in args.merge]
    stats = {g: {k: row_stats(v) for k, v in res[g].items()} for g in ("rows", "context")}
    comp = comparisons(res["rows"])

    wall = time.perf_counter() - start
    dataset = bench.dataset(bench.seed(0))
    usage, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    meta = {
        "command": "python benchmarks/synthetic_methods.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "preset": PRESET, "seeds": args.seeds, "methods": args.methods, "quick": args.quick, "out": str(bench.out),
        "ablation": str(bench.ablation) if bench.ablation else None, "images": len(dataset),
        "associations": dict(getattr(getattr(dataset, "world", None), "associations", {})),
        "overrides": list(bench.overrides), "clip_row_overrides": list(bench.clip_sets),
        "resnet_overrides": list(RESNET), "clip_es_template": bench.template_set,
        "clip_es_variant_overrides": {k: list(v[0]) for k, v in CLIP_ES_VARIANTS.items()},
        "semples_runs": {n: dataclasses.asdict(r) for n, r in {**SEMPLES_RUNS, **RESNET_RUNS}.items()},
        "toy_clip_fit": fit, "threads": args.threads, "threads_note": THREADS_NOTE,
        "threshold_selection": "best background threshold on the evaluated training images (oracle, as in the paper)",
        "std": "sample standard deviation over seeds (ddof 1)",
        "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds_this_invocation": round(wall, 1),
        "cpu_seconds_this_invocation": round(usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime,
                                             1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "load": sampler.stop(),
        "seconds_recorded": bench.timings.total(), "timings": bench.timings.data, "merged_from": merged,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }
    report = markdown(res, stats, comp, meta)
    print(report)
    (bench.out / "report.md").write_text(report)
    json_path = Path(args.json) if args.json else (bench.out / "synthetic_methods.json" if args.quick
                                                    else DEFAULT_JSON)
    write_json(json_path, {"meta": meta, **res, "stats": stats, "comparisons": comp})
    say(f"wrote {bench.out / 'report.md'} and {json_path}; failures: {len(res['failures'])}; "
        f"{wall / 60:.1f} min this invocation ({bench.timings.total() / 60:.1f} min recorded, all invocations)")
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
