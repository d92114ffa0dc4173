"""Where does SemPLeS help, and where does λ have to grow? Co-occurrence strength of the world × refinement weight λ.

    python benchmarks/synthetic_sweep.py [--p-cooc 0.5 0.8 0.95] [--lambdas 0 0.05 0.2] [--seeds 0 1 2]

Each world differs from the committed preset ``synth_demo`` only in ``data.synthetic.p_cooc`` (the probability that a
class present in an image comes with its associated background; the toy CLIP stays the shipped one, trained on its
own world). Per world and seed: classify -> match (λ = 0: the leak L_match alone leaves) -> prompt -> refine at each
λ > 0, scored by `semples eval-seeds` on the training images (leak rate at the best threshold, seed mIoU). The
world at the preset's own p_cooc is the preset itself: ``--ablation DIR`` reuses the ablation benchmark's runs of
those seeds instead of training them again.

Output: a figure (leak after match and after refine against p_cooc, one line per λ, mean ± std over seeds; seed
mIoU beside it) at ``benchmarks/results/synthetic_sweep.png``, the numbers in
``benchmarks/results/synthetic_sweep.json`` and a Markdown table printed and written to ``<out>/report.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, Timings, write_json  # noqa: E402
from _synthetic import PRESET, SeedRuns, compare, fmt, fmt_ci, headline, mean_std  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lambda_run(lam: float) -> str:
    return "match" if lam == 0 else ("refine" if abs(lam - 0.05) < 1e-12 else f"refine_lambda{lam:g}")


def world_runs(out: Path, p: float, seed: int, preset_p: float, ablation: Path | None, timings: Timings,
               threads: int) -> SeedRuns:
    if ablation is not None and abs(p - preset_p) < 1e-12:
        return SeedRuns(ablation, seed, threads=threads, timings=timings)
    return SeedRuns(out / f"p{p:g}", seed, overrides=(f"data.synthetic.p_cooc={p}",), threads=threads,
                    timings=timings)


def measure(runs: SeedRuns, lam: float) -> dict:
    runs.train("classify", "classify")
    runs.train("match", "match", generator="classify")
    name = lambda_run(lam)
    if lam > 0:
        runs.train("prompt", "prompt", generator="match")
        runs.train(name, "refine", sets=(f"loss.lambda_refine={lam}",), generator="classify", prompts="prompt")
    return headline(runs.evaluate(name, sets=(f"loss.lambda_refine={lam}",) if lam > 0 else ()))


def figure(path: Path, table: dict, ps: list[float], lambdas: list[float]) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, 3.8), dpi=120)
    axes = fig.subplots(1, 2)
    for lam in lambdas:
        label = "after match (λ = 0)" if lam == 0 else f"after refine, λ = {lam:g}"
        for ax, key in zip(axes, ("leak", "miou")):
            means, stds = [], []
            for p in ps:
                m, s = mean_std([v[key] for v in table[p][lam].values()])
                means.append(m)
                stds.append(s or 0.0)
            ax.errorbar(ps, means, yerr=stds, marker="o", capsize=3, label=label)
    axes[0].set_ylabel("seed leak rate (%)")
    axes[1].set_ylabel("seed mIoU (%)")
    for ax in axes:
        ax.set_xlabel("p_cooc: P(associated background | class)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("synthetic world: co-occurrence strength × λ (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--p-cooc", type=float, nargs="+", default=[0.5, 0.8, 0.95])
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.05, 0.2])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--ablation", default=None, help="the ablation benchmark's --out (reused for the preset's world)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--figure", default=str(RESULTS / "synthetic_sweep.png"))
    p.add_argument("--json", default=str(RESULTS / "synthetic_sweep.json"))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from semples.config import load_config

    preset_p = load_config(PRESET).data.synthetic.p_cooc
    out = Path(args.out)
    timings = Timings(out / "timings.json")
    sampler = LoadSampler()
    sampler.start()
    ablation = Path(args.ablation) if args.ablation else None
    table: dict[float, dict[float, dict[int, dict]]] = {pc: {lam: {} for lam in args.lambdas} for pc in args.p_cooc}
    cooc = {}
    for seed in args.seeds:
        for pc in args.p_cooc:
            runs = world_runs(out, pc, seed, preset_p, ablation, timings, args.threads)
            if pc not in cooc:
                from semples.data.synthetic import SyntheticWorld

                world = SyntheticWorld(runs.cfg().data.synthetic)
                stats = world.cooccurrence("train", 600)
                cooc[pc] = {k: sum(v[k] for v in stats.values()) / len(stats)
                            for k in ("p_bg_given_class", "p_bg_given_absent", "bg_pixel_share")}
            for lam in args.lambdas:
                table[pc][lam][seed] = measure(runs, lam)
                v = table[pc][lam][seed]
                say(f"p_cooc {pc:g} seed {seed} λ {lam:g}: leak {fmt(v['leak'])}%, seed mIoU {v['miou']:.1f}")
    lines = ["| p_cooc | P(bg \\| class) | bg pixel share | λ | seed leak % | seed mIoU % | Δ leak vs λ = 0 [95% CI] | "
             "Δ mIoU vs λ = 0 [95% CI] |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    comparisons = {}
    for pc in args.p_cooc:
        rows = {lambda_run(lam): table[pc][lam] for lam in args.lambdas}
        for lam in args.lambdas:
            name = lambda_run(lam)
            leak, miou = mean_std([v["leak"] for v in rows[name].values()]), mean_std(
                [v["miou"] for v in rows[name].values()])
            d_leak = compare(rows, name, "match", "leak") if lam > 0 else {"mean": None}
            d_miou = compare(rows, name, "match", "miou") if lam > 0 else {"mean": None}
            comparisons[f"{pc:g}/{lam:g}"] = {"leak": d_leak, "miou": d_miou}
            lines.append(f"| {pc:g} | {cooc[pc]['p_bg_given_class']:.2f} | {cooc[pc]['bg_pixel_share']:.2f} | "
                         f"{lam:g} | {fmt(*leak)} | {fmt(*miou)} | {fmt_ci(d_leak) if lam > 0 else '—'} | "
                         f"{fmt_ci(d_miou) if lam > 0 else '—'} |")
    report = "\n".join(lines) + "\n"
    print(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report)
    figure(Path(args.figure), table, args.p_cooc, args.lambdas)
    write_json(Path(args.json), {"meta": {"preset": PRESET, "seeds": args.seeds, "p_cooc": args.p_cooc,
                                          "lambdas": args.lambdas, "threads": args.threads, "load": sampler.stop(),
                                          "seconds_recorded": timings.total(), "cooccurrence": cooc},
                                 "table": {f"{pc:g}": {f"{lam:g}": v for lam, v in d.items()} for pc, d in
                                           table.items()},
                                 "comparisons": comparisons})
    say(f"wrote {args.figure} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
