"""Figures: the seed threshold curve and sample grids (image | ground truth | seed heat maps | seed / pseudo mask |
prediction), with the VOC colour palette for label maps.

Everything is drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display needed) and written
atomically as PNG. Label PNG folders (pseudo masks, predictions) follow the package convention:
``<dir>/<image id>.png``, uint8 labels 0..K, 255 ignore (palette or grayscale).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from semples.data.io import voc_colormap
from semples.utils.checkpoint_io import atomic_write_bytes

log = logging.getLogger(__name__)

IGNORE_INDEX = 255


# ---------------------------------------------------------------------------------------------------- colours
def label_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 VOC palette: 0 black background, 1..20 the VOC colours, 255 the cream ignore colour."""
    return voc_colormap(n)


def colorize_labels(labels: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """(H, W) integer labels (0..255) -> (H, W, 3) uint8 RGB with the VOC palette."""
    palette = label_palette() if palette is None else palette
    return palette[np.clip(np.asarray(labels), 0, 255).astype(np.uint8)]


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blends a [0, 1] heat map over an image.

    Shape: image (H, W, 3) uint8, heat (H, W) float in [0, 1] -> (H, W, 3) uint8.
    """
    from matplotlib import colormaps

    colours = colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    return (alpha * colours + (1.0 - alpha) * image.astype(np.float32)).round().astype(np.uint8)


def _png_bytes(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- curve
def plot_threshold_curve(path: str | Path, thresholds: Sequence[float], miou: Sequence[float | None], *,
                         chosen: float | None = None, bg_false_positive_rate: Sequence[float | None] | None = None,
                         title: str | None = None, note: str | None = None) -> Path:
    """mIoU (and optionally the background false-positive rate) against the background threshold t.

    Args:
        path: PNG file to write.
        thresholds: (T,) the grid.
        miou: (T,) mIoU in [0, 1] (None/NaN where undefined).
        chosen: the threshold to mark (the best one, or the one given).
        bg_false_positive_rate: (T,) in [0, 1], drawn on the same axis as a dashed line.
        title: figure title.
        note: a small line under the plot (e.g. how t was chosen).
    """
    from matplotlib.figure import Figure

    t = np.asarray(thresholds, dtype=np.float64)
    y = np.array([np.nan if v is None else v for v in miou], dtype=np.float64) * 100
    fig = Figure(figsize=(6.4, 4.0), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(t, y, color="tab:blue", lw=1.8, label="mIoU")
    if bg_false_positive_rate is not None:
        fpr = np.array([np.nan if v is None else v for v in bg_false_positive_rate], dtype=np.float64) * 100
        ax.plot(t, fpr, color="tab:red", lw=1.2, ls="--", label="background false-positive rate")
    if chosen is not None and t.size:
        j = int(np.argmin(np.abs(t - chosen)))
        ax.axvline(t[j], color="0.4", lw=0.8, ls=":")
        if np.isfinite(y[j]):
            ax.plot([t[j]], [y[j]], "o", color="tab:blue")
            ax.annotate(f"t = {t[j]:.2f}\nmIoU {y[j]:.1f}", (t[j], y[j]), textcoords="offset points",
                        xytext=(8, -28), fontsize=8)
    ax.set_xlabel("background threshold t")
    ax.set_ylabel("%")
    ax.set_xlim(t.min() if t.size else 0, t.max() if t.size else 1)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    if title or note:
        ax.set_title("\n".join(x for x in (title, note) if x), fontsize=9)
    path = Path(path)
    atomic_write_bytes(path, _png_bytes(fig))
    return path


# ---------------------------------------------------------------------------------------------------- grids
@dataclass
class GridCell:
    """One panel: an RGB image (H, W, 3) uint8, or None for an empty panel, and a caption."""

    image: np.ndarray | None
    caption: str = ""


@dataclass
class GridRow:
    """One sample: its id and panels, keyed by column title."""

    id: str
    cells: dict[str, GridCell | list[GridCell]] = field(default_factory=dict)


def draw_grid(path: str | Path, rows: Sequence[GridRow], columns: Sequence[str], *, cell_inches: float = 2.0,
              title: str | None = None) -> Path:
    """Writes rows × columns panels as one PNG. A column whose value is a list spreads over several panels.

    Args:
        path: PNG file.
        rows: the samples.
        columns: column titles in order; a row lacking a column leaves the panel empty.
        cell_inches: size of one panel.
        title: figure title.
    """
    from matplotlib.figure import Figure

    # a list-valued column (one heat map per class) takes as many panels as its longest list
    widths = []
    for col in columns:
        n = max((len(r.cells[col]) if isinstance(r.cells.get(col), list) else 1) for r in rows) if rows else 1
        widths.append(max(n, 1))
    n_cols = sum(widths)
    n_rows = max(len(rows), 1)
    fig = Figure(figsize=(cell_inches * n_cols, cell_inches * n_rows + (0.4 if title else 0.1)), dpi=100,
                 layout="constrained")
    if title:
        fig.suptitle(title, fontsize=10)
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, row in enumerate(rows):
        c0 = 0
        for col, width in zip(columns, widths):
            value = row.cells.get(col)
            cells = value if isinstance(value, list) else [value] if value is not None else []
            for k in range(width):
                ax = axes[r, c0 + k]
                if r == 0 and k == 0:
                    ax.set_title(col, fontsize=9, loc="left")
                if k < len(cells) and cells[k] is not None:
                    cell = cells[k]
                    if cell.image is not None:
                        ax.imshow(cell.image, interpolation="nearest")
                    caption = cell.caption if c0 + k else f"{row.id}" + (f"\n{cell.caption}" if cell.caption else "")
                    ax.text(0.01, 0.01, caption, transform=ax.transAxes, fontsize=7, color="white",
                            va="bottom", ha="left", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "lw": 0})
            c0 += width
    path = Path(path)
    atomic_write_bytes(path, _png_bytes(fig))
    return path


def _thumb_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    s = min(1.0, max_side / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def _resize_rgb(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return a if a.shape[:2] == size else np.asarray(Image.fromarray(a).resize(size[::-1], Image.BILINEAR))


def _resize_labels(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    a = a.astype(np.uint8)
    return a if a.shape[:2] == size else np.asarray(Image.fromarray(a).resize(size[::-1], Image.NEAREST))


def _resize_map(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    a = a.astype(np.float32)
    return a if a.shape[:2] == size else np.asarray(Image.fromarray(a, "F").resize(size[::-1], Image.BILINEAR))


def _read_label_png(folder: Path | None, image_id: str, num_classes: int) -> tuple[np.ndarray | None, str]:
    if folder is None:
        return None, ""
    p = Path(folder) / f"{image_id}.png"
    if not p.is_file():
        return None, "missing"
    from semples.data.io import read_mask

    try:
        return read_mask(p, num_classes), ""
    except Exception as e:  # a figure never fails for one bad file: say so in the panel
        log.warning("cannot read %s: %s", p, e)
        return None, "unreadable"


def sample_rows(dataset, indices: Sequence[int], *, cams_dir: str | Path | None = None,
                threshold: float | None = None, pseudo_dir: str | Path | None = None,
                pred_dir: str | Path | None = None, heatmaps: str = "max", max_side: int = 256
                ) -> tuple[list[GridRow], list[str]]:
    """Panels for `indices` of a dataset: image | ground truth | seed heat maps | seed mask at t | pseudo mask |
    prediction. Columns whose source is not given (or that the dataset lacks, like masks) are left out.

    Args:
        dataset: a `SegmentationDataset`.
        indices: which items.
        cams_dir: CAM folder (`semples.infer.cam_io` files); missing files give empty panels.
        threshold: background score for the "seed mask" column (needs cams_dir); None leaves it out.
        pseudo_dir, pred_dir: folders of ``<id>.png`` label maps.
        heatmaps: "max" (one panel: max over classes) or "per-class" (one panel per labelled class).
        max_side: panels are downscaled so their longer side is at most this.

    Returns:
        (rows, column titles).
    """
    from semples.infer.cam_io import cam_path, load_cam
    from semples.metrics.sweep import seed_labels

    if heatmaps not in ("max", "per-class"):
        raise ValueError(f"heatmaps must be 'max' or 'per-class', got {heatmaps!r}")
    names = list(dataset.classes.names)
    k = len(names)
    has_masks = bool(getattr(dataset, "has_masks", False))
    heat_col = "seed (max over classes)" if heatmaps == "max" else "seed heat maps"
    columns = ["image"] + (["ground truth"] if has_masks else [])
    if cams_dir is not None:
        columns.append(heat_col)
        if threshold is not None:
            columns.append(f"seed mask (t = {threshold:.2f})")
    if pseudo_dir is not None:
        columns.append("pseudo mask")
    if pred_dir is not None:
        columns.append("prediction")
    rows = []
    for i in indices:
        image_id = dataset.ids[i]
        img = np.asarray(dataset.load_image(i).convert("RGB"))
        size = _thumb_size(*img.shape[:2], max_side)
        thumb = _resize_rgb(img, size)
        row = GridRow(image_id, {"image": GridCell(thumb)})
        if has_masks:
            gt = dataset.load_mask(i)
            if gt is not None:
                present = [names[v - 1] for v in np.unique(gt) if 0 < v <= k]
                row.cells["ground truth"] = GridCell(colorize_labels(_resize_labels(gt, size)), ", ".join(present))
        if cams_dir is not None:
            p = cam_path(cams_dir, image_id)
            if p.is_file():
                cams, classes = load_cam(p)
                if heatmaps == "max":
                    heat = cams.max(0) if len(classes) else np.zeros(img.shape[:2], np.float32)
                    row.cells[heat_col] = GridCell(heatmap_overlay(thumb, _resize_map(heat, size)))
                else:
                    row.cells[heat_col] = [GridCell(heatmap_overlay(thumb, _resize_map(m, size)), names[c])
                                           for m, c in zip(cams, classes)] or [GridCell(thumb, "no class")]
                if threshold is not None:
                    seed = seed_labels(cams, threshold, classes)
                    row.cells[f"seed mask (t = {threshold:.2f})"] = GridCell(
                        colorize_labels(_resize_labels(seed, size)))
            else:
                row.cells[heat_col] = GridCell(None, "no CAM file")
        for col, folder in (("pseudo mask", pseudo_dir), ("prediction", pred_dir)):
            if folder is None:
                continue
            labels, problem = _read_label_png(Path(folder), image_id, k)
            row.cells[col] = GridCell(colorize_labels(_resize_labels(labels, size)) if labels is not None else None,
                                      problem)
        rows.append(row)
    return rows, columns


def pick_samples(n_items: int, count: int, seed: int = 0) -> list[int]:
    """`count` distinct item indices (sorted), reproducibly chosen with `seed`."""
    count = min(count, n_items)
    return sorted(np.random.default_rng(seed).choice(n_items, size=count, replace=False).tolist())


def write_sample_grid(path: str | Path, dataset, indices: Sequence[int], *, title: str | None = None,
                      **kwargs) -> Path:
    """`sample_rows` + `draw_grid` in one call (keyword arguments as in `sample_rows`)."""
    rows, columns = sample_rows(dataset, indices, **kwargs)
    return draw_grid(path, rows, columns, title=title)


__all__ = ["GridCell", "GridRow", "colorize_labels", "draw_grid", "heatmap_overlay", "label_palette", "pick_samples",
           "plot_threshold_curve", "sample_rows", "write_sample_grid"]
