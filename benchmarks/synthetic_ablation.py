"""Does SemPLeS do what it claims on the synthetic world? Controls a correct implementation must beat, a noise floor,
and the paper's ablations (Tables 4-6), each row over several training seeds, with paired 95% intervals.

    python benchmarks/synthetic_ablation.py [--seeds 0 1 2 3 4] [--groups core table4 table5 table6] [--out DIR]

Everything runs the committed preset ``synth_demo`` (the world, the shipped toy CLIP ``synth-clip``, the mask
generator and every stage's optimisation) through the library's steps; nothing here changes it. Per seed:

    classify -> match                              S; "match only" (λ = 0) is the match run itself
    prompt (learned) -> refine                     full SemPLeS (S restarts from classify, as the reference does)
    controls, each a refine from the same classify run:
        untrained prompts    the U[0, 1) initial prompt vectors (a prompt run with prompt.max_steps=0)
        Gaussian u^b         random N(0, I) directions in CLIP's joint space (prompts.refine_with=gaussian)
        u^b = u^f            the class's own text feature (prompts.refine_with=class_text)
    noise floor                                    the full refine again with 2 torch threads instead of 1:
                                                   only float summation order differs
    table4   L_prompt^T only / L_prompt^I only prompts, then refine
    table5   λ = 0.01, 0.02, 0.1, 0.2
    table6   joint training; alternating 2 and 3 rounds

Each run's seeds (CAMs) are scored on the 600 training images by `semples eval-seeds`: seed mIoU at the
background threshold that is best on those images (an oracle, as in the paper) and the leak rate at that threshold
(the share of each class's associated-background pixels labelled as the class); learned prompts are probed for
the background they describe (`semples.report.prompts.BackgroundProbe`). Comparisons are paired by seed (the
rows of one seed share their classify, match and prompt runs): mean difference with a 95% Student-t interval;
"beyond" means the interval excludes zero in the favourable direction.

Output: a Markdown report printed and written to ``<out>/report.md``, every number in a JSON (default
``benchmarks/results/synthetic_ablation.json``), and with ``--demo-reference`` the summary `semples demo` compares
its own run with (``src/semples/assets/demo/ablation.json``). One torch thread per run by default; several
invocations (e.g. one per seed) may share ``--out`` and run side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, Timings, read_json, write_json  # noqa: E402
from _synthetic import PRESET, SeedRuns, beyond, compare, fmt, fmt_ci, headline, mean_std  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "benchmarks" / "results" / "synthetic_ablation.json"
DEMO_REFERENCE = REPO / "src" / "semples" / "assets" / "demo" / "ablation.json"
QUICK = ("data.synthetic.splits.train=32", "data.synthetic.splits.val=8", "classify.epochs=1", "match.epochs=1",
         "prompt.epochs=1", "refine.epochs=1", "joint.epochs=1", "classify.batch_size=16", "match.batch_size=16",
         "prompt.batch_size=16", "refine.batch_size=16", "joint.batch_size=16")

# Paper (VOC 2012 seed mIoU, train split), METHOD.md §1.4.
PAPER = {"match": 67.6, "refine_untrained": 67.6, "refine_text_only": 67.7, "refine_image_only": 67.9,
         "refine": 68.7, "refine_lambda0.01": 68.3, "refine_lambda0.02": 68.4, "refine_lambda0.1": 67.8,
         "joint": 65.9, "refine_r2": 68.5, "refine_r3": 68.4}


@dataclass(frozen=True)
class Run:
    """`semples train --stage <stage>` into ``<seed dir>/<name>``, from earlier runs of the same seed."""

    name: str
    stage: str
    sets: tuple[str, ...] = ()
    generator: str | None = None
    prompts: str | None = None
    threads: int | None = None


RUNS: dict[str, Run] = {r.name: r for r in (
    Run("classify", "classify"),
    Run("match", "match", generator="classify"),
    Run("prompt", "prompt", generator="match"),
    Run("refine", "refine", generator="classify", prompts="prompt"),
    Run("prompt_untrained", "prompt", ("prompt.max_steps=0",), generator="match"),
    Run("refine_untrained", "refine", generator="classify", prompts="prompt_untrained"),
    Run("refine_gaussian", "refine", ("prompts.refine_with=gaussian",), generator="classify"),
    Run("refine_class_text", "refine", ("prompts.refine_with=class_text",), generator="classify"),
    Run("refine_threads2", "refine", generator="classify", prompts="prompt", threads=2),
    Run("refine_order", "refine", ("refine.order_seed=1000",), generator="classify", prompts="prompt"),
    Run("prompt_text_only", "prompt", ("loss.use_prompt_image=false",), generator="match"),
    Run("refine_text_only", "refine", generator="classify", prompts="prompt_text_only"),
    Run("prompt_image_only", "prompt", ("loss.use_prompt_text=false",), generator="match"),
    Run("refine_image_only", "refine", generator="classify", prompts="prompt_image_only"),
    *(Run(f"refine_lambda{lam}", "refine", (f"loss.lambda_refine={lam}",), generator="classify", prompts="prompt")
      for lam in ("0.01", "0.02", "0.1", "0.2")),
    Run("joint", "joint", generator="classify"),
    Run("prompt_r2", "prompt", generator="refine"),
    Run("refine_r2", "refine", generator="refine", prompts="prompt_r2"),
    Run("prompt_r3", "prompt", generator="refine_r2"),
    Run("refine_r3", "refine", generator="refine_r2", prompts="prompt_r3"),
)}

# evaluated rows per group, in the order they are worked through (core first: the central comparison)
GROUPS = {
    "core": ("match", "refine", "refine_untrained", "refine_gaussian", "refine_class_text", "refine_threads2",
             "refine_order", "classify"),
    "table4": ("refine_text_only", "refine_image_only"),
    "table5": ("refine_lambda0.01", "refine_lambda0.02", "refine_lambda0.1", "refine_lambda0.2"),
    "table6": ("joint", "refine_r2", "refine_r3"),
}
PROBED = {"refine": "prompt", "refine_untrained": "prompt_untrained", "refine_text_only": "prompt_text_only",
          "refine_image_only": "prompt_image_only", "joint": "joint", "refine_r2": "prompt_r2",
          "refine_r3": "prompt_r3"}
CONTROLS = (("match", "L_match only (λ = 0)"), ("refine_untrained", "untrained U[0,1) prompts as u^b"),
            ("refine_gaussian", "random Gaussian directions as u^b"),
            ("refine_class_text", "u^b = u^f (own class text)"))
LABELS = {"classify": "S after stage classify alone (context)", "match": "L_match only (λ = 0)",
          "refine": "full SemPLeS", "refine_untrained": "untrained U[0,1) prompts",
          "refine_gaussian": "Gaussian u^b", "refine_class_text": "u^b = u^f",
          "refine_threads2": "full SemPLeS, 2 torch threads", "refine_order": "full SemPLeS, another data order",
          "refine_text_only": "+ L_prompt^T only",
          "refine_image_only": "+ L_prompt^I only", "refine_lambda0.01": "λ = 0.01", "refine_lambda0.02": "λ = 0.02",
          "refine_lambda0.1": "λ = 0.1", "refine_lambda0.2": "λ = 0.2", "joint": "joint training",
          "refine_r2": "alternating, 2 rounds", "refine_r3": "alternating, 3 rounds"}


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Benchmark:
    def __init__(self, args: argparse.Namespace) -> None:
        self.out = Path(args.out)
        self.overrides = tuple(QUICK if args.quick else ()) + tuple(args.set)
        self.timings = Timings(self.out / "timings.json")
        self.threads = args.threads
        self.keep_cams = args.keep_cams
        self._probe = None

    def seed(self, s: int) -> SeedRuns:
        return SeedRuns(self.out, s, overrides=self.overrides, threads=self.threads, keep_cams=self.keep_cams,
                        timings=self.timings)

    def train(self, runs: SeedRuns, name: str) -> Path:
        run = RUNS[name]
        for dep in (run.generator, run.prompts):
            if dep:
                self.train(runs, dep)
        if not (runs.run_dir(name) / "manifest.json").is_file() or \
                read_json(runs.run_dir(name) / "manifest.json").get("status") != "finished":
            say(f"seed {runs.seed}: train {name}")
        return runs.train(name, run.stage, sets=run.sets, generator=run.generator, prompts=run.prompts,
                          threads=run.threads)

    def row(self, runs: SeedRuns, name: str) -> dict:
        self.train(runs, name)
        first = not (runs.dir / "eval" / name / "metrics.json").is_file()
        out = headline(runs.evaluate(name, sets=RUNS[name].sets))
        if first:
            say(f"seed {runs.seed}: {name}: seed mIoU {out['miou']:.2f}, leak {fmt(out['leak'])}%")
        if name in PROBED:
            out["probe"] = self.probe(runs, PROBED[name])
        return out

    def probe(self, runs: SeedRuns, prompt_run: str) -> dict:
        path = runs.dir / "eval" / prompt_run / "probe.json"
        if path.is_file():
            return read_json(path)
        import torch

        from semples.data.synthetic import SyntheticWorld
        from semples.models.clip import load_clip
        from semples.report.prompts import BackgroundProbe
        from semples.stages.common import load_prompts

        cfg = runs.cfg()
        if self._probe is None:
            clip = load_clip(cfg.clip)
            self._probe = (clip, BackgroundProbe(clip, SyntheticWorld(cfg.data.synthetic), cfg.clip.class_template,
                                                 cfg.stage("prompt").transform.normalize))
        clip, probe = self._probe
        prompts, _ = load_prompts(str(runs.run_dir(prompt_run)), clip, len(probe.classes))
        with torch.no_grad():
            result = probe.nearest(prompts())
        write_json(path, result)
        return result


def collect(bench: Benchmark, seeds: list[int], groups: list[str]) -> dict[str, dict[int, dict]]:
    rows: dict[str, dict[int, dict]] = {}
    for group in groups:
        for name in GROUPS[group]:
            for s in seeds:
                rows.setdefault(name, {})[s] = bench.row(bench.seed(s), name)
    return rows


# ------------------------------------------------------------------------------------------------ report
def row_stats(rows: dict, name: str) -> dict:
    per = rows.get(name, {})
    miou = mean_std([v["miou"] for v in per.values()])
    leak = mean_std([v["leak"] for v in per.values()])
    cam = mean_std([v["cam_on_bg"] for v in per.values()])
    return {"n": len(per), "miou": miou, "leak": leak, "cam_on_bg": cam,
            "per_seed": {s: {"miou": v["miou"], "leak": v["leak"]} for s, v in per.items()}}


def comparisons(rows: dict) -> dict:
    out = {}
    for name, _ in CONTROLS:
        if name in rows and "refine" in rows:
            out[name] = {"miou": compare(rows, "refine", name, "miou"), "leak": compare(rows, "refine", name, "leak")}
            out[name]["miou"]["beyond"] = beyond(out[name]["miou"], "higher")
            out[name]["leak"]["beyond"] = beyond(out[name]["leak"], "lower")
    for noise, name in (("noise_floor", "refine_threads2"), ("noise_floor_order", "refine_order")):
        if name in rows and "refine" in rows:
            out[noise] = {"miou": compare(rows, name, "refine", "miou"), "leak": compare(rows, name, "refine", "leak")}
    for name in (*GROUPS["table4"], *GROUPS["table5"], *GROUPS["table6"], "classify"):
        if name in rows:
            ref = "match" if name in GROUPS["table4"] + GROUPS["table5"] or name == "classify" else "refine"
            out[name] = {"reference": ref, "miou": compare(rows, name, ref, "miou"),
                         "leak": compare(rows, name, ref, "leak")}
    return out


def markdown(rows: dict, comp: dict, seeds: list[int], meta: dict) -> str:
    L: list[str] = []
    add = L.append
    add(f"Seed mIoU and leak rate in %, mean ± sample std over seeds {seeds}; Δ = paired difference (first − "
        "second, same seed) with its 95% interval; leak = share of each class's associated-background pixels "
        "labelled as the class at the run's best threshold; CAM on bg = mean CAM of a class on those pixels "
        "(threshold-free).")
    add("")
    add("#### Full SemPLeS against the controls a correct implementation must beat")
    add("")
    add("| row | seed mIoU | leak | CAM on bg | full − row: Δ mIoU [95% CI] | beyond? | Δ leak [95% CI] | beyond? |")
    add("|---|---:|---:|---:|---:|---|---:|---|")
    for name in ("refine", *[c for c, _ in CONTROLS], "classify"):
        if name not in rows:
            continue
        st = row_stats(rows, name)
        c = comp.get(name) if name != "classify" else None
        cells = ["(reference)", "", "", ""] if name == "refine" else (
            [fmt_ci(c["miou"]), c["miou"]["beyond"], fmt_ci(c["leak"]), c["leak"]["beyond"]] if c else
            ["", "", "", ""])
        add(f"| {LABELS[name]} | {fmt(*st['miou'])} | {fmt(*st['leak'])} | {fmt(*st['cam_on_bg'], digits=3)} | "
            + " | ".join(cells) + " |")
    noise = [(k, what) for k, what in (("noise_floor", "2 torch threads instead of 1 (float summation order)"),
                                        ("noise_floor_order", "another data-order seed (refine.order_seed)"))
             if k in comp]
    if noise:
        add("")
        add("#### Noise floor: the full run again with one thing changed that should not matter")
        add("")
        add("| changed | quantity | paired Δ (changed − full) [95% CI] | std of the paired Δ | per seed |")
        add("|---|---|---:|---:|---|")
        for k, what in noise:
            for key in ("miou", "leak"):
                p = comp[k][key]
                add(f"| {what} | {'seed mIoU' if key == 'miou' else 'leak rate'} | {fmt_ci(p)} | "
                    f"{fmt(p['std'], digits=2)} | " + ", ".join(f"{v:+.2f}" for v in p["values"]) + " |")
    tables = (("table4", "Paper Table 4 — loss components (Δ to L_match only)", "match"),
              ("table5", "Paper Table 5 — refinement weight λ (Δ to λ = 0)", "match"),
              ("table6", "Paper Table 6 — learning schemes (Δ to sequential = full)", "refine"))
    for group, title, ref in tables:
        names = [n for n in GROUPS[group] if n in rows]
        if not names:
            continue
        add("")
        add(f"#### {title}")
        add("")
        add("| row | paper VOC seed mIoU | seed mIoU | Δ mIoU [95% CI] | leak | Δ leak [95% CI] |")
        add("|---|---:|---:|---:|---:|---:|")
        st = row_stats(rows, ref)
        add(f"| {LABELS[ref]} | {PAPER.get(ref, '—')} | {fmt(*st['miou'])} | (reference) | {fmt(*st['leak'])} | |")
        if group != "table6":
            s2 = row_stats(rows, "refine")
            c = compare(rows, "refine", "match", "miou"), compare(rows, "refine", "match", "leak")
            add(f"| {LABELS['refine']} (λ = 0.05) | {PAPER['refine']} | {fmt(*s2['miou'])} | {fmt_ci(c[0])} | "
                f"{fmt(*s2['leak'])} | {fmt_ci(c[1])} |")
        for n in names:
            s2 = row_stats(rows, n)
            add(f"| {LABELS[n]} | {PAPER.get(n, '—')} | {fmt(*s2['miou'])} | {fmt_ci(comp[n]['miou'])} | "
                f"{fmt(*s2['leak'])} | {fmt_ci(comp[n]['leak'])} |")
    if "match" in rows and "refine" in rows:
        add("")
        add("#### Per class: after match → after full refine (mean over seeds)")
        add("")
        add("| class | background | toy-CLIP bias | IoU | leak |")
        add("|---|---|---:|---|---|")
        bias = meta.get("clip_bias", {})
        for cls in rows["match"][seeds[0]]["leak_per_class"]:
            iou_m = mean_std([v["iou"].get(cls) for v in rows["match"].values()])[0]
            iou_r = mean_std([v["iou"].get(cls) for v in rows["refine"].values()])[0]
            lk_m = mean_std([v["leak_per_class"].get(cls) for v in rows["match"].values()])[0]
            lk_r = mean_std([v["leak_per_class"].get(cls) for v in rows["refine"].values()])[0]
            b = bias.get(cls, {})
            add(f"| {cls} | {b.get('background', '')} | {fmt(b.get('bias'), digits=3)} | {fmt(iou_m)} → "
                f"{fmt(iou_r)} | {fmt(lk_m)} → {fmt(lk_r)} |")
    probed = [n for n in PROBED if n in rows and all("probe" in v for v in rows[n].values())]
    if probed:
        add("")
        add("#### Prompt probe: classes (of 6) whose prompt is nearest its associated background")
        add("")
        add("| prompts | by captions | by background-alone images |")
        add("|---|---:|---:|")
        for n in probed:
            cap = mean_std([v["probe"]["caption_hits"] for v in rows[n].values()])
            img = mean_std([v["probe"]["image_hits"] for v in rows[n].values()])
            add(f"| {LABELS[n]} | {fmt(*cap)} | {fmt(*img)} |")
    return "\n".join(L) + "\n"


def demo_reference(rows: dict, comp: dict, seeds: list[int], settings: dict) -> dict:
    """The summary `semples demo` states its own run against."""
    def stats(name):
        st = row_stats(rows, name)
        return {"miou": st["miou"][0], "miou_std": st["miou"][1], "leak": st["leak"][0], "leak_std": st["leak"][1]}

    return {"preset": PRESET, "seeds": seeds, "source": "benchmarks/synthetic_ablation.py",
            "settings": settings,  # what semples demo matches its own config against (semples.demo.seed_settings)
            "rows": {k: stats(k) for k in ("match", "refine", "refine_untrained") if k in rows},
            "refine_minus_match": {k: {"mean": comp["match"][k]["mean"], "ci": comp["match"][k]["ci"]}
                                   for k in ("miou", "leak")} if "match" in comp else None,
            "refine_minus_untrained": {k: {"mean": comp["refine_untrained"][k]["mean"],
                                           "ci": comp["refine_untrained"][k]["ci"]} for k in ("miou", "leak")}
            if "refine_untrained" in comp else None,
            "noise_floor_std": {n: {k: comp[n][k]["std"] for k in ("miou", "leak")}
                                for n in ("noise_floor", "noise_floor_order") if n in comp}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--groups", nargs="+", choices=list(GROUPS), default=list(GROUPS))
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--json", default=None, help=f"raw numbers (default {DEFAULT_JSON.relative_to(REPO)})")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (the noise-floor run uses 2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--quick", action="store_true", help="tiny world and 1 epoch per stage: a smoke check")
    p.add_argument("--keep-cams", action="store_true")
    p.add_argument("--demo-reference", action="store_true",
                   help=f"also write the summary semples demo compares with ({DEMO_REFERENCE.relative_to(REPO)})")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bench = Benchmark(args)
    sampler = LoadSampler()
    sampler.start()
    start = time.perf_counter()
    rows = collect(bench, args.seeds, args.groups)
    comp = comparisons(rows)
    probe_path = REPO / "src" / "semples" / "assets" / "clip" / "synth-clip" / "probe.json"
    clip_bias = {}
    if probe_path.is_file():
        probe = json.loads(probe_path.read_text())
        clip_bias = (probe.get("probe") or probe).get("per_class", {})
    meta = {"preset": PRESET, "seeds": args.seeds, "groups": args.groups, "overrides": list(bench.overrides),
            "threads": args.threads, "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "torch_threads_noise_floor": 2, "seconds_this_invocation": round(time.perf_counter() - start, 1),
            "seconds_recorded": bench.timings.total(), "load": sampler.stop(), "clip_bias": clip_bias,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    report = markdown(rows, comp, args.seeds, meta)
    print(report)
    (bench.out / "report.md").write_text(report)
    json_path = Path(args.json) if args.json else (bench.out / "synthetic_ablation.json" if args.quick
                                                    else DEFAULT_JSON)
    write_json(json_path, {"meta": meta, "rows": rows, "comparisons": comp})
    if args.demo_reference and not args.quick:
        from semples.demo import seed_settings

        settings = seed_settings(bench.seed(args.seeds[0]).cfg())
        write_json(DEMO_REFERENCE, demo_reference(rows, comp, args.seeds, settings))
    say(f"wrote {bench.out / 'report.md'} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
