"""The paper's ablations (SemPLeS Tables 4, 5 and 6) in miniature, on the synthetic co-occurrence world.

    python benchmarks/synthetic_ablation.py [--seeds 0 1 2] [--out runs/ablation] [--tables 4 5 6] [--quick]

What is compared (all with the committed preset ``synth_demo``: the world, the shipped toy CLIP ``synth-clip``, the
mask generator and every stage's optimisation; nothing here changes them):

* Table 4, loss components: L_match only; + L_refine with random (untrained) prompts; + L_prompt^T only;
  + L_prompt^I only; full SemPLeS (L_prompt^I + L_prompt^T, then L_match + λ L_refine, λ = 0.05).
* Table 5, refinement weight λ: 0, 0.01, 0.02, 0.05, 0.1.
* Table 6, learning schemes: joint; sequential (= full); alternating 2 and 3 rounds.

Each variant is measured per seed (default 0, 1, 2) by its seeds (CAMs) on the 600 training images: seed mIoU at
the background threshold that is best on those images (an oracle choice, as in the paper), the leak rate at that
threshold (share of a class's associated-background pixels labelled as that class, `semples.metrics.LeakRate`),
threshold-free CAM statistics (mean CAM on the object, on its associated background, on other backgrounds; share
of CAM values near 1), and — for variants with learned prompts — a probe of the prompts: which background's
captions (text features) and which background-alone images (image features) each class's prompt is nearest to.

Design:
* Runs are shared: one classify and one match run per seed; every refine variant starts S from the classify run
  (the reference behaviour, `scheme.refine_init: initial`) and takes its prompts from a prompt run trained on the
  match run's masks. "λ = 0" and "L_match only" are the match run itself: refine with λ = 0 from the classify
  checkpoint optimises exactly L_match (the L_refine term is multiplied by 0.0, which adds exact zeros to the loss
  and to every gradient) with the same data order, augmentation and model randomness (all derived from (seed,
  epoch, index), not from the stage name) and the same optimiser settings (the preset's refine section is the
  match section). `--verify-lambda0` trains that refine run anyway and compares the weights bit by bit.
* "Random prompts" are a prompt run with ``prompt.max_steps=0``: a checkpoint of the untrained U[0, 1) vectors,
  the very initialisation the learned prompts start from (fresh parameters are seeded by (seed, stage name)).
* The alternating scheme is wired exactly as `semples.training.train_scheme` wires it: round 1 is the sequential
  prompt -> refine pair (identical runs, so it is shared), round r > 1 trains new prompts on round r-1's S and
  continues refining that S. Joint training starts from the classify run.
* Everything goes through the public CLI (`semples.cli.main`): ``train --stage``, ``cams``, ``eval-seeds``;
  the leak rate and the probes use the library. Run folders live in ``<out>/seed<S>/<run>``; a finished run is
  skipped when the script runs again (the CLI's own check), and so is a finished evaluation
  (``<out>/seed<S>/eval/<run>/analysis.json``), so an interrupted benchmark resumes where it stopped.
  CAM folders are deleted after their evaluation unless ``--keep-cams``.
* Variants are worked through in priority order (match-only and full SemPLeS for every seed first, then the rest
  of Table 4, Table 5, Table 6), so that an interrupted run already holds the central comparison.
* One torch thread by default (``--threads``): the sandbox has 2 cores shared with other jobs, and with 2
  intra-op threads per process every small op waits for a descheduled sibling thread (measured at load ~5: stage
  match 1.2 s/step with 1 thread vs 4.5 s/step with 2; CAM inference 10 vs 0.6 images/s). The thread count
  changes results only in the last bits (float summation order), but bit-identical reruns need the same count.
* Output: a Markdown report (tables of mean ± sample std over seeds, paired differences to the reference row,
  the paper's VOC numbers side by side, per-class leak and probe tables) printed and written to
  ``<out>/report.md``, and every raw number in a JSON (default ``benchmarks/results/synthetic_ablation.json``;
  with ``--quick`` ``<out>/synthetic_ablation.json``: quick numbers are a smoke check, not results).
  Wall time per step is kept in ``<out>/timings.json`` across invocations; the load average of the machine is
  sampled every 30 s while this script runs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import LoadSampler, Timings, read_load, write_json  # benchmarks/ is on sys.path

PRESET = "synth_demo"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "benchmarks" / "results" / "synthetic_ablation.json"
TOY_CLIP_PROBE = REPO / "src" / "semples" / "assets" / "clip" / "synth-clip" / "probe.json"
QUICK_OVERRIDES = (
    "data.synthetic.splits.train=48",
    "classify.epochs=1", "match.epochs=1", "prompt.epochs=1", "refine.epochs=1", "joint.epochs=1",
    "classify.batch_size=16", "match.batch_size=16", "prompt.batch_size=16", "refine.batch_size=16",
    "joint.batch_size=16",
)
NEAR_ONE = 0.9  # CAM values at or above this count as saturated
PROBE_IMAGES = 20  # background-alone images per background for the image-side prompt probe
PROBE_SEED = 2_000_000_000  # render seeds of those images (the toy CLIP's probe uses 10^9 on, training below)

# Paper (VOC 2012 seed mIoU, train split), METHOD.md §1.4 / paper §4.5.
PAPER = {
    "match_only": 67.6, "refine_random_prompts": 67.6, "prompt_text_only": 67.7, "prompt_image_only": 67.9,
    "full": 68.7,
    "lambda_0": 67.6, "lambda_0.01": 68.3, "lambda_0.02": 68.4, "lambda_0.05": 68.7, "lambda_0.1": 67.8,
    "joint": 65.9, "sequential": 68.7, "alternating_2": 68.5, "alternating_3": 68.4,
}


@dataclass(frozen=True)
class Run:
    """One training run of one seed: `semples train --stage <stage>` into ``<seed dir>/<name>``."""

    name: str
    stage: str
    sets: tuple[str, ...] = ()
    generator: str | None = None  # name of the run S starts from
    prompts: str | None = None  # name of the prompt run (refine)


RUNS: dict[str, Run] = {r.name: r for r in (
    Run("classify", "classify"),
    Run("match", "match", generator="classify"),
    Run("prompt", "prompt", generator="match"),
    Run("refine", "refine", generator="classify", prompts="prompt"),
    Run("prompt_random", "prompt", ("prompt.max_steps=0",), generator="match"),
    Run("refine_random_prompts", "refine", generator="classify", prompts="prompt_random"),
    Run("prompt_text_only", "prompt", ("loss.use_prompt_image=false",), generator="match"),
    Run("refine_text_only", "refine", generator="classify", prompts="prompt_text_only"),
    Run("prompt_image_only", "prompt", ("loss.use_prompt_text=false",), generator="match"),
    Run("refine_image_only", "refine", generator="classify", prompts="prompt_image_only"),
    *(Run(f"refine_lambda{lam}", "refine", (f"loss.lambda_refine={lam}",), generator="classify", prompts="prompt")
      for lam in ("0.01", "0.02", "0.1")),
    Run("refine_lambda0", "refine", ("loss.lambda_refine=0.0",), generator="classify", prompts="prompt"),
    Run("joint", "joint", generator="classify"),
    Run("prompt_r2", "prompt", generator="refine"),
    Run("refine_r2", "refine", generator="refine", prompts="prompt_r2"),
    Run("prompt_r3", "prompt", generator="refine_r2"),
    Run("refine_r3", "refine", generator="refine_r2", prompts="prompt_r3"),
)}


@dataclass(frozen=True)
class Variant:
    """A row of a table: the run whose S gives the seeds, and the run holding its prompts (None: no prompts)."""

    key: str
    label: str
    s_run: str
    prompt_run: str | None


VARIANTS: dict[str, Variant] = {v.key: v for v in (
    Variant("classify_only", "(context, not in the paper's table) S after stage classify alone, no CLIP", "classify",
            None),
    Variant("match_only", "L_match only", "match", None),
    Variant("refine_random_prompts", "+ L_refine, random (untrained) prompts", "refine_random_prompts",
            "prompt_random"),
    Variant("prompt_text_only", "+ L_prompt^T only, + L_refine", "refine_text_only", "prompt_text_only"),
    Variant("prompt_image_only", "+ L_prompt^I only, + L_refine", "refine_image_only", "prompt_image_only"),
    Variant("full", "full SemPLeS (L_prompt^I + L_prompt^T, + L_refine)", "refine", "prompt"),
    Variant("lambda_0", "0 (= L_match only)", "match", None),
    Variant("lambda_0.01", "0.01", "refine_lambda0.01", "prompt"),
    Variant("lambda_0.02", "0.02", "refine_lambda0.02", "prompt"),
    Variant("lambda_0.05", "0.05 (preset; = full)", "refine", "prompt"),
    Variant("lambda_0.1", "0.1", "refine_lambda0.1", "prompt"),
    Variant("joint", "joint training", "joint", "joint"),
    Variant("sequential", "sequential (1 round; = full)", "refine", "prompt"),
    Variant("alternating_2", "alternating, 2 rounds", "refine_r2", "prompt_r2"),
    Variant("alternating_3", "alternating, 3 rounds", "refine_r3", "prompt_r3"),
)}
TABLES: dict[str, tuple[str, ...]] = {
    "4": ("classify_only", "match_only", "refine_random_prompts", "prompt_text_only", "prompt_image_only", "full"),
    "5": ("lambda_0", "lambda_0.01", "lambda_0.02", "lambda_0.05", "lambda_0.1"),
    "6": ("joint", "sequential", "alternating_2", "alternating_3"),
}
REFERENCE = {"4": "match_only", "5": "lambda_0", "6": "sequential"}  # paired differences are taken to this row
TITLES = {"4": "Table 4 — loss components", "5": "Table 5 — refinement weight λ", "6": "Table 6 — learning schemes"}
PRIORITY = ("match_only", "full", "classify_only", "refine_random_prompts", "prompt_text_only", "prompt_image_only",
            "lambda_0.01", "lambda_0.02", "lambda_0.1", "joint", "alternating_2", "alternating_3")


# ----------------------------------------------------------------------------------------------------- plumbing
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cli(argv: list[str], log_file: Path | None = None) -> None:
    """`semples <argv>` in this process; its stderr (the stages' tqdm bars) goes to `log_file` when given."""
    from semples.cli import main

    if log_file is None:
        status = main(argv)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as f, contextlib.redirect_stderr(f):
            print(f"$ semples {' '.join(argv)}", file=f, flush=True)
            status = main(argv)
    gc.collect()
    if status != 0:
        raise RuntimeError(f"semples {' '.join(argv)} exited with status {status}")


class Bench:
    """Runs, evaluates and probes the variants of one benchmark invocation."""

    def __init__(self, out: Path, overrides: tuple[str, ...], keep_cams: bool, timings: Timings) -> None:
        self.out = out
        self.overrides = overrides
        self.keep_cams = keep_cams
        self.timings = timings
        self._clip = None
        self._cfg = None
        self._probe_refs: dict | None = None

    # -- config / shared objects ---------------------------------------------------------------------------------
    def seed_dir(self, seed: int) -> Path:
        return self.out / f"seed{seed}"

    def config_args(self, seed: int, extra: tuple[str, ...] = ()) -> list[str]:
        args = ["--config", PRESET]
        for s in (f"seed={seed}", f"output_dir={self.seed_dir(seed)}", *self.overrides, *extra):
            args += ["--set", s]
        return args

    @property
    def cfg(self):
        if self._cfg is None:
            from semples.config import load_config

            self._cfg = load_config(PRESET, list(self.overrides))
        return self._cfg

    @property
    def clip(self):
        if self._clip is None:
            from semples.models.clip import load_clip

            self._clip = load_clip(self.cfg.clip, "cpu")
        return self._clip

    def dataset(self):
        from semples.data import build_dataset

        return build_dataset(self.cfg.data, "train")

    # -- training ------------------------------------------------------------------------------------------------
    def train(self, seed: int, name: str) -> Path:
        """Trains run `name` of `seed` (and, first, the runs it depends on); returns its folder."""
        run = RUNS[name]
        for dep in (run.generator, run.prompts):
            if dep is not None:
                self.train(seed, dep)
        run_dir = self.seed_dir(seed) / name
        if _finished(run_dir):
            return run_dir
        argv = ["train", "--stage", run.stage, *self.config_args(seed, run.sets), "--run-dir", str(run_dir),
                "--resume"]
        if run.generator:
            argv += ["--generator", str(self.seed_dir(seed) / run.generator)]
        if run.prompts:
            argv += ["--prompts", str(self.seed_dir(seed) / run.prompts)]
        log(f"seed {seed}: train {name} (stage {run.stage}{', ' + ', '.join(run.sets) if run.sets else ''}) ...")
        t0 = time.perf_counter()
        cli(argv, self.seed_dir(seed) / "logs" / f"train_{name}.log")
        dt = time.perf_counter() - t0
        self.timings.add(f"seed{seed}/train/{name}", dt)
        log(f"seed {seed}: train {name} done in {dt:.0f} s (load {read_load()[0]:.1f})")
        return run_dir

    # -- evaluation of S -------------------------------------------------------------------------------------------
    def evaluate(self, seed: int, name: str) -> dict:
        """Seeds of run `name`: CAMs, eval-seeds (best t), leak rate and CAM statistics at that t."""
        eval_dir = self.seed_dir(seed) / "eval" / name
        done = eval_dir / "analysis.json"
        if done.exists():
            return json.loads(done.read_text())
        run_dir = self.train(seed, name)
        cams_dir, seeds_dir = eval_dir / "cams", eval_dir / "seeds"
        log(f"seed {seed}: cams + eval-seeds of {name} ...")
        t0 = time.perf_counter()
        cli(["cams", *self.config_args(seed), "--generator", str(run_dir), "--split", "train", "--out",
             str(cams_dir), "--no-progress"], self.seed_dir(seed) / "logs" / f"cams_{name}.log")
        cli(["eval-seeds", *self.config_args(seed), "--cams", str(cams_dir), "--split", "train", "--out",
             str(seeds_dir), "--samples", "0", "--no-progress"], self.seed_dir(seed) / "logs" / f"eval_{name}.log")
        metrics = json.loads((seeds_dir / "metrics.json").read_text())
        analysis = {"run": name, "run_dir": str(run_dir), "seed_miou": metrics["miou"],
                    "threshold": metrics["threshold"], "threshold_selection": metrics["threshold_selection"],
                    "per_class_iou": {k: v["iou"] for k, v in metrics["per_class"].items()},
                    "bg_false_positive_rate": metrics["bg_false_positive_rate"],
                    **cam_statistics(self.dataset(), cams_dir, metrics["threshold"])}
        write_json(done, analysis)
        if not self.keep_cams:
            shutil.rmtree(cams_dir, ignore_errors=True)
        dt = time.perf_counter() - t0
        self.timings.add(f"seed{seed}/eval/{name}", dt)
        log(f"seed {seed}: {name}: seed mIoU {100 * analysis['seed_miou']:.2f} at t = {analysis['threshold']:.2f}, "
            f"leak {100 * analysis['leak']['mean']:.2f}% ({dt:.0f} s)")
        return analysis

    # -- prompt probe ----------------------------------------------------------------------------------------------
    def probe(self, seed: int, name: str) -> dict:
        """Nearest background (by captions and by background-alone images) of each class's learned prompt."""
        path = self.seed_dir(seed) / "eval" / name / "probe.json"
        if path.exists():
            return json.loads(path.read_text())
        run_dir = self.train(seed, name)
        import torch
        import torch.nn.functional as F

        from semples.stages import load_prompts

        refs = self.probe_references()
        k = len(refs["classes"])
        prompts, _ = load_prompts(str(run_dir), self.clip, k)
        with torch.no_grad():
            u = F.normalize(prompts().float(), dim=-1)
        result = {"run": name, **nearest_backgrounds(u, refs)}
        write_json(path, result)
        log(f"seed {seed}: probe {name}: nearest caption = associated background for "
            f"{result['caption_hits']}/{k} classes, nearest image for {result['image_hits']}/{k}")
        return result

    def probe_references(self) -> dict:
        """Text features of every background caption, image features of background-alone images, class texts."""
        if self._probe_refs is not None:
            return self._probe_refs
        import torch
        import torch.nn.functional as F

        from semples.data.synthetic import SyntheticWorld
        from semples.synthclip.data import eval_input

        world = SyntheticWorld(self.cfg.data.synthetic)
        clip = self.clip
        norm = self.cfg.stage("prompt").transform.normalize  # the normalisation the stages feed CLIP
        with torch.no_grad():
            captions = {b: world.background_captions(b) for b in world.background_names}
            cap_feats = {b: F.normalize(clip.encode_text(c).float(), dim=-1) for b, c in captions.items()}
            img_feats = {}
            for bi, b in enumerate(world.background_names):
                x = torch.stack([eval_input(world.render_background(bi, PROBE_SEED + j), clip.image_size[0], norm)
                                 for j in range(PROBE_IMAGES)])
                img_feats[b] = F.normalize(clip.encode_image(x).float(), dim=-1)
            class_text = F.normalize(clip.class_text_features(list(world.class_names),
                                                              self.cfg.clip.class_template).float(), dim=-1)
        self._probe_refs = {"classes": list(world.class_names), "backgrounds": list(world.background_names),
                            "associated": [world.background_names[b] for b in world.class_background],
                            "captions": captions, "caption_features": cap_feats, "image_features": img_feats,
                            "class_text": class_text, "norm": norm}
        return self._probe_refs


def _finished(run_dir: Path) -> bool:
    manifest = run_dir / "manifest.json"
    if not manifest.exists() or not (run_dir / "checkpoint.pt").exists():
        return False
    try:
        return json.loads(manifest.read_text()).get("status") == "finished"
    except json.JSONDecodeError:
        return False


def nearest_backgrounds(u, refs: dict) -> dict:
    """For prompt features u (K, E), L2-normalised: per class the background whose captions (mean cosine over
    its caption templates) and whose background-alone images (mean cosine) are nearest; hits = the associated one.
    """
    import torch

    bgs, classes, assoc = refs["backgrounds"], refs["classes"], refs["associated"]
    cap = torch.stack([(u @ refs["caption_features"][b].t()).mean(1) for b in bgs], dim=1)  # (K, B)
    img = torch.stack([(u @ refs["image_features"][b].t()).mean(1) for b in bgs], dim=1)
    all_caps = [(b, c) for b in bgs for c in refs["captions"][b]]
    all_feats = torch.cat([refs["caption_features"][b] for b in bgs])
    best_cap = (u @ all_feats.t()).argmax(1)
    own_text = (u * refs["class_text"]).sum(1)
    per_class = {}
    for k, name in enumerate(classes):
        a = bgs.index(assoc[k])
        others = [i for i in range(len(bgs)) if i != a]
        per_class[name] = {
            "associated": assoc[k],
            "nearest_caption_background": bgs[int(cap[k].argmax())],
            "nearest_caption": all_caps[int(best_cap[k])][1],
            "caption_cos": {b: float(cap[k, i]) for i, b in enumerate(bgs)},
            "caption_margin": float(cap[k, a] - cap[k, others].max()),
            "nearest_image_background": bgs[int(img[k].argmax())],
            "image_cos": {b: float(img[k, i]) for i, b in enumerate(bgs)},
            "image_margin": float(img[k, a] - img[k, others].max()),
            "cos_own_class_text": float(own_text[k]),
        }
    cap_hits = sum(v["nearest_caption_background"] == v["associated"] for v in per_class.values())
    img_hits = sum(v["nearest_image_background"] == v["associated"] for v in per_class.values())
    return {"caption_hits": int(cap_hits), "image_hits": int(img_hits), "classes": len(classes),
            "caption_share": cap_hits / len(classes), "image_share": img_hits / len(classes), "per_class": per_class}


def cam_statistics(dataset, cams_dir: Path, threshold: float) -> dict:
    """Leak rate at `threshold` and threshold-free CAM statistics of a CAM folder over `dataset`.

    Per class k (images labelled k): leak rate; mean CAM of k on its object's pixels, on ground-truth background
    pixels of its associated background, and on other background pixels; share of k's CAM values >= NEAR_ONE
    (over the whole image and over ground-truth background) and >= 0.5; mean CAM over the image (mask area).
    """
    from semples.infer.cam_io import cam_path, load_cam
    from semples.metrics import LeakRate
    from semples.metrics.sweep import seed_labels

    names = list(dataset.classes.names)
    k_count = len(names)
    assoc = np.asarray(dataset.class_background)
    leak = LeakRate(assoc)
    keys = ("obj", "assoc", "other", "all")
    sums = {key: np.zeros(k_count) for key in keys}
    counts = {key: np.zeros(k_count) for key in keys}
    sat_all, sat_bg, half_all = np.zeros(k_count), np.zeros(k_count), np.zeros(k_count)
    for i, image_id in enumerate(dataset.ids):
        cams, classes = load_cam(cam_path(cams_dir, image_id))
        gt, bmap, labels = dataset.load_mask(i), dataset.background_map(i), dataset.labels(i)
        pred = seed_labels(cams, threshold, classes)
        leak.update(pred, gt, bmap, labels)
        bg = gt == 0
        for cam, k in zip(cams, classes):
            k = int(k)
            regions = {"obj": gt == k + 1, "assoc": bg & (bmap == assoc[k]), "other": bg & (bmap != assoc[k]),
                       "all": np.ones_like(bg)}
            for key, region in regions.items():
                sums[key][k] += float(cam[region].sum())
                counts[key][k] += int(region.sum())
            sat_all[k] += int((cam >= NEAR_ONE).sum())
            sat_bg[k] += int((cam[bg] >= NEAR_ONE).sum())
            half_all[k] += int((cam >= 0.5).sum())

    def per_class(num: np.ndarray, den: np.ndarray) -> dict:
        return {n: (float(num[k] / den[k]) if den[k] else None) for k, n in enumerate(names)}

    def pooled(num: np.ndarray, den: np.ndarray) -> float | None:
        return float(num.sum() / den.sum()) if den.sum() else None

    leak_dict = leak.to_dict(names)
    return {
        "leak": leak_dict,
        "cam_mean": {key: {"per_class": per_class(sums[key], counts[key]), "pooled": pooled(sums[key], counts[key])}
                     for key in keys},
        "saturation": {
            "near_one": NEAR_ONE,
            "share_near_one": {"per_class": per_class(sat_all, counts["all"]),
                               "pooled": pooled(sat_all, counts["all"])},
            "share_near_one_on_background": {"per_class": per_class(sat_bg, counts["assoc"] + counts["other"]),
                                             "pooled": pooled(sat_bg, counts["assoc"] + counts["other"])},
            "share_at_least_half": {"per_class": per_class(half_all, counts["all"]),
                                    "pooled": pooled(half_all, counts["all"])},
        },
    }


DIAG_BATCHES, DIAG_BATCH = 4, 32  # training batches (epoch-0 augmentation of images 0..127) for the diagnostics


def diagnose(bench: Bench, seed: int) -> dict:
    """Why an effect does or does not appear, measured on training batches as stage refine sees them.

    For S = the classify run (where refine starts), the match run and the full refine run, with the learned prompts
    of the prompt run (and, for comparison, the untrained ones): the cosines the losses see — s(v^f, u^f),
    s(v^b, u^f), s(v^f, u^b) — the gradient norms of L_match and of λ·L_refine w.r.t. S and the cosine between
    the two gradients, and the training masks M (min-max normalised with ε = masking.eps_match): mean, share ≥ 0.9
    and ≤ 0.1, mean on object and on background pixels, mean per-pair maximum.
    """
    path = bench.seed_dir(seed) / "eval" / "diagnostics.json"
    if path.exists():
        return json.loads(path.read_text())
    import torch
    import torch.nn.functional as F

    from semples.data import TransformedDataset
    from semples.data.base import collate
    from semples.data.transforms import TrainTransform
    from semples.losses import match_loss, refine_loss
    from semples.stages import build_stage, load_prompts

    t0 = time.perf_counter()
    for name in ("classify", "match", "prompt", "prompt_random", "refine"):
        bench.train(seed, name)
    cfg, sd = bench.cfg, bench.seed_dir(seed)
    ds = bench.dataset()
    data = TransformedDataset(ds, TrainTransform(cfg.stage("refine").transform), seed=seed, with_mask=True)
    n_images = min(DIAG_BATCHES * DIAG_BATCH, len(ds))
    batches = [collate([data[(i, 0)] for i in range(b, min(b + DIAG_BATCH, n_images))])
               for b in range(0, n_images, DIAG_BATCH)]
    random_prompts, _ = load_prompts(str(sd / "prompt_random"), bench.clip, len(ds.classes))
    with torch.no_grad():
        u_random = random_prompts().float()
    out: dict = {"seed": seed, "batches": len(batches), "batch_size": DIAG_BATCH,
                 "lambda_refine": cfg.loss.lambda_refine, "eps_match": cfg.masking.eps_match}
    names = list(ds.classes.names)
    # what CLIP sees at the two extremes of a mask: M = 0 (X^f is the blank mask-fill image, X^b the whole image)
    # and M = 1 (X^f the whole image): cos with the class text, per class
    with torch.no_grad():
        u_text = F.normalize(bench.clip.class_text_features(names, cfg.clip.class_template).float(), dim=-1)
        blank = F.normalize(bench.clip.encode_image(torch.zeros(1, 3, 96, 96)).float(), dim=-1)[0]
        whole: dict[int, list[float]] = {}
        for batch in batches:
            v = F.normalize(bench.clip.encode_image(batch["image"]).float(), dim=-1)
            for n, k in zip(*(batch["labels"] > 0.5).nonzero(as_tuple=True)):
                whole.setdefault(int(k), []).append(float(v[n] @ u_text[k]))
    out["clip_reference"] = {name: {"cos_blank_image_class_text": float(blank @ u_text[k]),
                                    "cos_whole_image_class_text": float(np.mean(whole[k])) if k in whole else None}
                             for k, name in enumerate(names)}
    for s_name in ("classify", "match", "refine"):
        torch.manual_seed(0)
        stage = build_stage("refine", cfg, ds.classes, generator=str(sd / s_name), prompts=str(sd / "prompt"),
                            clip=bench.clip, device="cpu").stage
        stage.train()
        params = [p for p in stage.parameters() if p.requires_grad]
        acc: dict[str, list[float]] = {}
        per_k: dict[str, dict[int, list[float]]] = {}

        def add(key: str, value: float, acc: dict = acc) -> None:
            acc.setdefault(key, []).append(float(value))

        def add_pairs(key: str, values, classes, per_k: dict = per_k) -> None:
            for v, k in zip(values.tolist(), classes.tolist()):
                per_k.setdefault(key, {}).setdefault(int(k), []).append(float(v))

        for batch in batches:
            f = stage.pair_features(stage.mask_generator, batch["image"], batch["labels"], stage.masking.eps_match)
            u_f, u_b = stage.text_features[f.k], stage.prompt_features[f.k]
            lm = match_loss(f.v_fg, f.v_bg, u_f, lambda_bg=stage.lambda_bg, sim_min=stage.sim_min,
                            sim_max=stage.sim_max)["match_loss"]
            lr_ = refine_loss(f.v_fg, u_b, stage.sim_min, stage.sim_max)["refine_loss"]
            gm = torch.autograd.grad(lm, params, retain_graph=True, allow_unused=True)
            gr = torch.autograd.grad(stage.lambda_refine * lr_, params, allow_unused=True)
            gm = torch.cat([g.flatten() for g in gm if g is not None])
            gr = torch.cat([g.flatten() for g in gr if g is not None])
            add("grad_norm_match", gm.norm())
            add("grad_norm_lambda_refine", gr.norm())
            add("grad_cos_match_refine", F.cosine_similarity(gm, gr, dim=0))
            with torch.no_grad():
                cos = lambda a, b: F.cosine_similarity(a.float(), b.float(), dim=-1).mean()  # noqa: E731
                add("loss_match", lm)
                add("loss_refine", lr_)
                add("cos_vfg_ufg", cos(f.v_fg, u_f))
                add("cos_vbg_ufg", cos(f.v_bg, u_f))
                add("cos_vfg_ubg_learned", cos(f.v_fg, u_b))
                add("cos_vfg_ubg_random", cos(f.v_fg, u_random[f.k]))
                add("cos_vbg_ubg_learned", cos(f.v_bg, u_b))
                m = f.masks.float()
                gt = batch["mask"][f.n]
                obj = gt == (f.k + 1)[:, None, None]
                bgp = gt == 0
                add("mask_mean", m.mean())
                add("mask_share_ge_0.9", (m >= NEAR_ONE).float().mean())
                add("mask_share_le_0.1", (m <= 0.1).float().mean())
                add("mask_mean_object", m[obj].mean())
                add("mask_mean_background", m[bgp].mean())
                add("mask_max_per_pair", m.amax(dim=(-2, -1)).mean())
                pair_cos = lambda a, b: F.cosine_similarity(a.float(), b.float(), dim=-1)  # noqa: E731
                add_pairs("cos_vfg_ufg", pair_cos(f.v_fg, u_f), f.k)
                add_pairs("cos_vbg_ufg", pair_cos(f.v_bg, u_f), f.k)
                add_pairs("cos_vfg_ubg_learned", pair_cos(f.v_fg, u_b), f.k)
                add_pairs("mask_mean", m.mean(dim=(-2, -1)), f.k)
                add_pairs("mask_mean_object", (m * obj).sum(dim=(-2, -1)) / obj.sum(dim=(-2, -1)).clamp_min(1), f.k)
                add_pairs("dead_map", (m.amax(dim=(-2, -1)) <= 1e-6).float(), f.k)
        out[s_name] = {k: float(np.mean(v)) for k, v in acc.items()}
        out[s_name]["per_class"] = {names[k]: {key: float(np.mean(per_k[key][k])) for key in per_k if k in per_k[key]}
                                    for k in range(len(names))}
        out[s_name]["grad_ratio_refine_to_match"] = out[s_name]["grad_norm_lambda_refine"] / max(
            out[s_name]["grad_norm_match"], 1e-12)
        del stage
        gc.collect()
    write_json(path, out)
    dt = time.perf_counter() - t0
    bench.timings.add(f"seed{seed}/diagnostics", dt)
    c = out["classify"]
    log(f"seed {seed}: diagnostics ({dt:.0f} s): at refine's start |∇ λ L_refine| / |∇ L_match| = "
        f"{c['grad_ratio_refine_to_match']:.4f}, cos(v^f, u^b) = {c['cos_vfg_ubg_learned']:.3f}")
    return out


def diagnostics_section(diags: dict[int, dict]) -> list[str]:
    """Mean over seeds of the diagnostics, one column per S."""
    if not diags:
        return []
    rows = (("loss_match", "L_match"), ("loss_refine", "L_refine (learned prompts)"),
            ("cos_vfg_ufg", "cos(v^f, u^f): masked object vs class text"),
            ("cos_vbg_ufg", "cos(v^b, u^f): masked background vs class text"),
            ("cos_vfg_ubg_learned", "cos(v^f, u^b): masked object vs learned prompt"),
            ("cos_vfg_ubg_random", "cos(v^f, u^b): masked object vs untrained prompt"),
            ("cos_vbg_ubg_learned", "cos(v^b, u^b): masked background vs learned prompt"),
            ("grad_norm_match", "‖∇_S L_match‖"), ("grad_norm_lambda_refine", "‖∇_S λ·L_refine‖"),
            ("grad_ratio_refine_to_match", "ratio ‖∇ λ·L_refine‖ / ‖∇ L_match‖"),
            ("grad_cos_match_refine", "cos(∇ L_match, ∇ L_refine)"),
            ("mask_mean", "training mask M: mean"), ("mask_share_ge_0.9", "M ≥ 0.9: share of pixels"),
            ("mask_share_le_0.1", "M ≤ 0.1: share of pixels"), ("mask_mean_object", "M on the object"),
            ("mask_mean_background", "M on ground-truth background"),
            ("mask_max_per_pair", "max of M per pair (ε caps it below 1)"))
    seeds = sorted(diags)
    lines = ["### Diagnostics on training batches (stage refine's view)", "",
             f"{diags[seeds[0]]['batches']} batches of ≤ {DIAG_BATCH} training images (epoch-0 augmentation), λ = "
             f"{diags[seeds[0]]['lambda_refine']}, prompts of the full prompt run; mean over seeds {seeds} "
             "(± sample std). Columns: S at the start of refine (the classify run), after stage match, after the "
             "full refine.", "", "| quantity | S = classify (refine's start) | S = match | S = full refine |",
             "|---|---:|---:|---:|"]
    for key, label in rows:
        cells = []
        for s_name in ("classify", "match", "refine"):
            m, sd, n = mean_std([diags[s][s_name].get(key) for s in seeds])
            cells.append("—" if n == 0 else (f"{m:.4f} ± {sd:.4f}" if abs(m) < 0.1 else f"{m:.3f} ± {sd:.3f}"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    if all("per_class" in diags[s].get("classify", {}) for s in seeds):
        names = list(diags[seeds[0]]["classify"]["per_class"])
        lines += ["Per class (mean over seeds): cos of the class text with the blank mask-fill image (what X^f is "
                  "when M = 0) and with the whole image (X^f when M = 1); then, for S = classify → match → full "
                  "refine, the share of pairs whose training mask is all zero (a dead class map: ReLU'd CAM ≤ 0 "
                  "everywhere, no gradient), the mean mask, and cos(v^f, u^f) / cos(v^b, u^f).", "",
                  "| class | cos(blank, text) | cos(whole, text) | dead maps | mean M | cos(v^f, u^f) | "
                  "cos(v^b, u^f) |", "|---|---:|---:|---:|---:|---:|---:|"]

        def chain(name: str, key: str, digits: int = 2) -> str:
            vals = []
            for s_name in ("classify", "match", "refine"):
                v = [diags[s][s_name]["per_class"].get(name, {}).get(key) for s in seeds]
                v = [x for x in v if x is not None]
                vals.append(f"{np.mean(v):.{digits}f}" if v else "—")
            return " → ".join(vals)

        for name in names:
            ref = [diags[s]["clip_reference"][name] for s in seeds]
            blank = np.mean([r["cos_blank_image_class_text"] for r in ref])
            whole = np.mean([r["cos_whole_image_class_text"] for r in ref
                             if r["cos_whole_image_class_text"] is not None])
            lines.append(f"| {name} | {blank:.3f} | {whole:.3f} | {chain(name, 'dead_map')} | "
                         f"{chain(name, 'mask_mean')} | {chain(name, 'cos_vfg_ufg')} | {chain(name, 'cos_vbg_ufg')} |")
        lines.append("")
    return lines


# ----------------------------------------------------------------------------------------------------- summaries
def mean_std(values: list[float | None]) -> tuple[float, float, int]:
    """Mean and sample std (ddof 1; 0 for a single value) of the defined values."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def fmt(values: list[float | None], scale: float = 100.0, digits: int = 1) -> str:
    m, s, n = mean_std(values)
    if n == 0:
        return "—"
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}" + ("" if n > 1 else " (1 seed)")


def summarise(results: dict, seeds: list[int], tables: list[str]) -> dict:
    """Per variant: every seed's numbers and their mean ± std; paired differences to the table's reference row."""
    summary: dict = {}
    for table in tables:
        ref = REFERENCE[table]
        for key in TABLES[table]:
            per_seed = results.get(key, {})
            row = {"label": VARIANTS[key].label, "paper_voc_seed_miou": PAPER.get(key), "seeds": {}}
            for s in seeds:
                if s not in per_seed:
                    continue
                r = per_seed[s]
                row["seeds"][s] = {"seed_miou": r["eval"]["seed_miou"], "threshold": r["eval"]["threshold"],
                                   "leak": r["eval"]["leak"]["mean"]}
                if r.get("probe"):
                    row["seeds"][s]["caption_share"] = r["probe"]["caption_share"]
                    row["seeds"][s]["image_share"] = r["probe"]["image_share"]
                if s in results.get(ref, {}):
                    b = results[ref][s]["eval"]
                    row["seeds"][s]["delta_miou"] = r["eval"]["seed_miou"] - b["seed_miou"]
                    row["seeds"][s]["delta_leak"] = r["eval"]["leak"]["mean"] - b["leak"]["mean"]
            for field in ("seed_miou", "threshold", "leak", "caption_share", "image_share", "delta_miou",
                          "delta_leak"):
                vals = [v[field] for v in row["seeds"].values() if field in v]
                if vals:
                    m, sd, n = mean_std(vals)
                    row[field] = {"mean": m, "std": sd, "n": n}
            summary[key] = row
    return summary


def _get(entry: dict, path: tuple[str, ...]):
    """entry["eval"] (or entry itself) followed along `path`; None where a key is missing."""
    node = entry
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def seed_values(results: dict, key: str, seeds: list[int], path: tuple[str, ...]) -> list:
    """The value at `path` of variant `key` for each seed that has it."""
    return [_get(results[key][s], path) for s in seeds if s in results.get(key, {})]


def paired(results: dict, key: str, ref: str, seeds: list[int], path: tuple[str, ...]) -> list[float]:
    """Per seed: value of `key` minus value of `ref` (same seed)."""
    out = []
    for s in seeds:
        if s in results.get(key, {}) and s in results.get(ref, {}):
            a, b = _get(results[key][s], path), _get(results[ref][s], path)
            if a is not None and b is not None:
                out.append(a - b)
    return out


MIOU, LEAK, THRESH = ("eval", "seed_miou"), ("eval", "leak", "mean"), ("eval", "threshold")


def _mean_of(values: list) -> float:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else float("nan")


def report(results: dict, seeds: list[int], tables: list[str], meta: dict) -> str:
    """The Markdown tables."""
    lines: list[str] = []
    for table in tables:
        ref = REFERENCE[table]
        lines += [f"### {TITLES[table]}", "",
                  f"Seed mIoU and leak rate in %, mean ± sample std over seeds {seeds}; Δ = paired difference to "
                  f"the row \"{VARIANTS[ref].label}\" (same seed), mean ± std. Probe: classes (of 6) whose learned "
                  "prompt is nearest to its associated background, by captions / by background-alone images.", "",
                  "| variant | paper VOC seed mIoU | seed mIoU | Δ mIoU | leak rate | Δ leak | best t "
                  "| probe: captions | probe: images |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for key in TABLES[table]:
            if key not in results:
                continue
            d_miou = "(reference)" if key == ref else fmt(paired(results, key, ref, seeds, MIOU), 100, 2)
            d_leak = "(reference)" if key == ref else fmt(paired(results, key, ref, seeds, LEAK), 100, 2)
            probes = []
            for field in ("caption_hits", "image_hits"):
                vals = seed_values(results, key, seeds, ("probe", field))
                probes.append("—" if not any(v is not None for v in vals) else fmt(vals, 1, 1) + " / 6")
            miou = fmt(seed_values(results, key, seeds, MIOU), 100, 2)
            leak = fmt(seed_values(results, key, seeds, LEAK), 100, 2)
            t = fmt(seed_values(results, key, seeds, THRESH), 1, 2)
            paper = f"{PAPER[key]:.1f}" if key in PAPER else "—"
            lines.append(f"| {VARIANTS[key].label} | {paper} | {miou} | {d_miou} | {leak} | {d_leak} | {t} | "
                         f"{probes[0]} | {probes[1]} |")
        lines.append("")
    if "match_only" in results and "full" in results:
        lines += per_class_section(results, seeds)
    lines += probe_section(results, seeds, meta.get("class_text_probe"))
    lines += saturation_section(results, seeds)
    return "\n".join(lines)


def per_class_section(results: dict, seeds: list[int]) -> list[str]:
    """Per class: IoU, leak rate and mean CAM on the backgrounds, L_match only -> full, next to the CLIP bias."""
    bias = {}
    if TOY_CLIP_PROBE.exists():
        bias = {k: v.get("bias") for k, v in json.loads(TOY_CLIP_PROBE.read_text()).get("per_class", {}).items()}
    first = next(iter(results["match_only"].values()))
    names = list(first["eval"]["leak"]["per_class"])
    lines = ["### Per class: L_match only → full SemPLeS", "",
             "IoU and leak rate in %, mean over seeds; mean CAM (0–1) of the class on ground-truth background pixels "
             "of its associated background and of other backgrounds (images labelled with the class); toy-CLIP bias "
             "from its probe: cos(class text, its background alone) − cos(class text, other backgrounds).", "",
             "| class | background | toy-CLIP bias | IoU | leak rate | CAM on assoc. bg | CAM on other bg |",
             "|---|---|---:|---:|---:|---:|---:|"]
    assoc = meta_assoc(results)
    for n in names:
        cells = []
        for path, scale, digits in ((("eval", "per_class_iou", n), 100, 1), (("eval", "leak", "per_class", n), 100, 2),
                                    (("eval", "cam_mean", "assoc", "per_class", n), 1, 3),
                                    (("eval", "cam_mean", "other", "per_class", n), 1, 3)):
            a, b = (_mean_of(seed_values(results, k, seeds, path)) for k in ("match_only", "full"))
            cells.append(f"{scale * a:.{digits}f} → {scale * b:.{digits}f}")
        b = bias.get(n)
        lines.append(f"| {n} | {assoc.get(n, '?')} | {'—' if b is None else f'{b:+.3f}'} | " + " | ".join(cells) + " |")
    return lines + [""]


def meta_assoc(results: dict) -> dict:
    for per in results.values():
        for r in per.values():
            if r.get("probe"):
                return {n: c["associated"] for n, c in r["probe"]["per_class"].items()}
    return {}


def probe_section(results: dict, seeds: list[int], class_text: dict | None) -> list[str]:
    """Per class and prompt variant: which background the prompt is nearest to, counted over seeds."""
    keys = [k for k in ("full", "prompt_text_only", "prompt_image_only", "refine_random_prompts", "joint",
                        "alternating_2", "alternating_3")
            if any(r.get("probe") for r in results.get(k, {}).values())]
    if not keys:
        return []
    assoc = meta_assoc(results)
    names = list(assoc)
    lines = ["### Prompt probe: nearest background of each class's prompt", "",
             "Per class: the background whose captions are nearest to the learned prompt (mean text-feature cosine "
             "over its 3 caption templates) / the background whose images alone are nearest (mean cosine to "
             f"{PROBE_IMAGES} images each), counted over seeds. First row: the class's own text "
             "\"a photo of a {class}.\" (the toy CLIP's bias without prompt learning).", "",
             "| prompts | " + " | ".join(f"{n} ({assoc[n]})" for n in names) + " |", "|---|" + "---|" * len(names)]
    if class_text:
        pc = class_text["per_class"]
        lines.append("| class text | " + " | ".join(
            f"{pc[n]['nearest_caption_background']} / {pc[n]['nearest_image_background']}" for n in names) + " |")
    for key in keys:
        cells = []
        for n in names:
            parts = []
            for field in ("nearest_caption_background", "nearest_image_background"):
                counts: dict[str, int] = {}
                for v in seed_values(results, key, seeds, ("probe", "per_class", n, field)):
                    if v is not None:
                        counts[v] = counts.get(v, 0) + 1
                parts.append(", ".join(f"{b} {m}" for b, m in sorted(counts.items(), key=lambda x: -x[1])))
            cells.append(" / ".join(parts))
        lines.append(f"| {VARIANTS[key].label} | " + " | ".join(cells) + " |")
    return lines + [""]


def saturation_section(results: dict, seeds: list[int]) -> list[str]:
    """How much of the CAMs sits near 1, and the mean CAM on object / associated background / other backgrounds."""
    keys = [k for k in ("classify_only", "match_only", "full", "joint", "alternating_3") if k in results]
    if not keys:
        return []
    lines = ["### Are the CAMs saturated?", "",
             f"Share of CAM values ≥ {NEAR_ONE} (maps of the classes in each image's label, min-max normalised per "
             "class as `semples cams` writes them) over all pixels and over ground-truth background pixels; share "
             "≥ 0.5; mean CAM on the object, on its associated background and on other backgrounds (pooled over "
             "classes). Mean over seeds.", "",
             "| variant | ≥ 0.9, all pixels | ≥ 0.9, background | ≥ 0.5, all pixels | mean CAM: object | "
             "assoc. bg | other bg |", "|---|---:|---:|---:|---:|---:|---:|"]
    paths = (("saturation", "share_near_one", "pooled"), ("saturation", "share_near_one_on_background", "pooled"),
             ("saturation", "share_at_least_half", "pooled"), ("cam_mean", "obj", "pooled"),
             ("cam_mean", "assoc", "pooled"), ("cam_mean", "other", "pooled"))
    for key in keys:
        cells = [f"{_mean_of(seed_values(results, key, seeds, ('eval', *p))):.3f}" for p in paths]
        lines.append(f"| {VARIANTS[key].label} | " + " | ".join(cells) + " |")
    return lines + [""]


def verify_lambda0(bench: Bench, seed: int) -> dict:
    """Trains refine with λ = 0 from the classify run and compares its S with the match run's, bit by bit."""
    import torch

    from semples.utils.checkpoint_io import read_checkpoint

    a = read_checkpoint(str(bench.train(seed, "match")))["modules"]["mask_generator"]
    b = read_checkpoint(str(bench.train(seed, "refine_lambda0")))["modules"]["mask_generator"]
    diffs = {k: float((a[k].float() - b[k].float()).abs().max()) for k in a if torch.is_tensor(a[k])}
    identical = all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k])) and a.keys() == b.keys()
    out = {"seed": seed, "bit_identical": bool(identical), "max_abs_diff": max(diffs.values()) if diffs else 0.0,
           "tensors": len(diffs)}
    log(f"verify λ = 0: refine(λ=0) vs match, seed {seed}: bit-identical {identical}, max |Δ| {out['max_abs_diff']:g} "
        f"over {len(diffs)} tensors")
    return out


# ----------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2; quick: 0)")
    p.add_argument("--out", type=Path, default=None, help="run folders (default runs/ablation; quick: "
                                                          "runs/ablation-quick)")
    p.add_argument("--tables", nargs="+", choices=sorted(TABLES), default=sorted(TABLES), help="tables to run")
    p.add_argument("--quick", action="store_true", help="tiny sizes (48 images, 1 epoch per stage): a smoke check")
    p.add_argument("--json", type=Path, default=None, help=f"raw numbers (default {DEFAULT_JSON.relative_to(REPO)};"
                                                            " quick: <out>/synthetic_ablation.json)")
    p.add_argument("--keep-cams", action="store_true", help="keep the CAM folders after evaluation")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads of this process (default 1: on the shared 2-core sandbox, 2 threads "
                        "ran stage match 3x and CAM inference 16x slower under load; results differ only in the last "
                        "bits, but bit-identical reruns need the same count)")
    p.add_argument("--verify-lambda0", action="store_true",
                   help="also train refine with λ = 0 for the first seed and compare it with the match run (the "
                        "answer is kept in <out>/verify_lambda0.json and reported by later invocations)")
    args = p.parse_args(argv)
    # the CLI's logging.basicConfig becomes a no-op: its INFO lines stay on this stderr, while the stages' tqdm
    # bars (written to whatever sys.stderr is when they start) go to <out>/seed<S>/logs/<step>.log
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    out = args.out or REPO / "runs" / ("ablation-quick" if args.quick else "ablation")
    json_path = args.json or (out / "synthetic_ablation.json" if args.quick else DEFAULT_JSON)
    overrides = QUICK_OVERRIDES if args.quick else ()
    tables = sorted(set(args.tables))
    out.mkdir(parents=True, exist_ok=True)

    import torch

    torch.set_num_threads(args.threads)
    wall0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    load_start = read_load()
    sampler = LoadSampler()
    sampler.start()
    timings = Timings(out / "timings.json")
    bench = Bench(out, overrides, args.keep_cams, timings)
    command = "python benchmarks/synthetic_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    log(f"{command}\n  out {out}, seeds {seeds}, tables {tables}{', QUICK sizes' if args.quick else ''}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"load {load_start[0]:.2f}")

    wanted = [k for k in PRIORITY if any(k in TABLES[t] for t in tables)]
    # aliases: a variant whose runs are another's is evaluated once
    results: dict[str, dict[int, dict]] = {}
    for key in wanted:
        v = VARIANTS[key]
        for s in seeds:
            entry = {"eval": bench.evaluate(s, v.s_run)}
            if v.prompt_run is not None:
                entry["probe"] = bench.probe(s, v.prompt_run)
            results.setdefault(key, {})[s] = entry
    for alias, same in (("lambda_0", "match_only"), ("lambda_0.05", "full"), ("sequential", "full")):
        if any(alias in TABLES[t] for t in tables):
            if same not in results:
                for s in seeds:
                    v = VARIANTS[same]
                    entry = {"eval": bench.evaluate(s, v.s_run)}
                    if v.prompt_run is not None:
                        entry["probe"] = bench.probe(s, v.prompt_run)
                    results.setdefault(same, {})[s] = entry
            results[alias] = results[same]

    diags = {s: diagnose(bench, s) for s in seeds} if "4" in tables else {}
    refs = bench.probe_references()
    class_text_probe = nearest_backgrounds(refs["class_text"], refs)
    lambda0_path = out / "verify_lambda0.json"
    if args.verify_lambda0 and not lambda0_path.exists():
        write_json(lambda0_path, verify_lambda0(bench, seeds[0]))
    lambda0 = json.loads(lambda0_path.read_text()) if lambda0_path.exists() else None

    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = sampler.stop()
    meta = {
        "command": command, "preset": PRESET, "overrides": list(overrides), "quick": args.quick, "seeds": seeds,
        "tables": tables, "out": str(out),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version()},
        "this_invocation": {"wall_s": wall, "cpu_s_main_process": cpu_s,
                            "cpu_s_children": children.ru_utime + children.ru_stime,
                            "load_average_1min": load, "load_at_start": load_start, "load_at_end": read_load()},
        "work_seconds_all_invocations": timings.total(), "timings": timings.data,
        "threshold_selection": "best background threshold on the evaluated (training) images' ground truth, per "
                               "run (oracle, as in the paper)",
        "std": "sample standard deviation over seeds (ddof 1)",
        "class_text_probe": class_text_probe,
        "verify_lambda0": lambda0,
    }
    text = report(results, seeds, tables, meta) + "\n" + "\n".join(diagnostics_section(diags))
    (out / "report.md").write_text(text + "\n")
    raw = {"meta": meta, "summary": summarise(results, seeds, tables),
           "variants": {k: {"label": VARIANTS[k].label, "s_run": VARIANTS[k].s_run,
                            "prompt_run": VARIANTS[k].prompt_run, "paper_voc_seed_miou": PAPER.get(k),
                            "seeds": {str(s): r for s, r in per.items()}} for k, per in results.items()},
           "diagnostics": diags}
    write_json(json_path, _clean(raw))
    print(text)
    log(f"done: {wall / 60:.1f} min wall this invocation ({cpu_s / 60:.1f} CPU-min in this process), "
        f"{timings.total() / 60:.1f} min of work over all invocations; load average (1 min) mean {load['mean']:.2f}, "
        f"range {load['min']:.2f}–{load['max']:.2f} on {os.cpu_count()} CPUs; report {out / 'report.md'}, "
        f"raw numbers {json_path}")
    return 0


def _clean(obj):
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


if __name__ == "__main__":
    sys.exit(main())
