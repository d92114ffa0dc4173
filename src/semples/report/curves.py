"""Loss curves of training runs, from their metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from semples.utils.checkpoint_io import atomic_write_bytes


def read_curves(run_dir: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """name -> (steps, values) of every logged loss of a run (step records, not epoch summaries)."""
    import json

    path = Path(run_dir) / "metrics.jsonl"
    curves: dict[str, tuple[list[int], list[float]]] = {}
    if not path.is_file():
        return curves
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") or "step" not in rec:
            continue
        for key, value in rec.items():
            if (key == "loss" or key.endswith("_loss")) and isinstance(value, (int, float)):
                steps, values = curves.setdefault(key, ([], []))
                steps.append(rec["step"])
                values.append(float(value))
    return curves


def plot_loss_curves(runs: dict[str, str | Path], path: str | Path, cols: int = 3) -> Path:
    """One panel per run (title = its name) with all its logged losses against the optimiser step."""
    import io

    from matplotlib.figure import Figure

    names = [n for n in runs if read_curves(runs[n])]
    rows = max(1, -(-len(names) // cols))
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, name in zip(axes, names):
        ax.set_axis_on()
        for key, (steps, values) in sorted(read_curves(runs[name]).items()):
            ax.plot(steps, values, label=key, lw=1.8 if key == "loss" else 1.0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_threshold_curves(path: str | Path, curves: dict[str, list[dict]]) -> Path:
    """Seed mIoU against the background threshold for several runs on one axis (eval-seeds' ``curve`` lists)."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for name, curve in curves.items():
        t = [p["threshold"] for p in curve]
        y = [100 * p["miou"] if p["miou"] is not None else float("nan") for p in curve]
        line, = ax.plot(t, y, lw=1.6, label=name)
        best = max(range(len(y)), key=lambda i: y[i] if y[i] == y[i] else -1.0)
        ax.plot([t[best]], [y[best]], "o", color=line.get_color())
        ax.annotate(f"{y[best]:.1f} at t = {t[best]:.2f}", (t[best], y[best]), textcoords="offset points",
                    xytext=(6, 6), fontsize=8, color=line.get_color())
    ax.set_xlabel("background threshold t")
    ax.set_ylabel("seed mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
