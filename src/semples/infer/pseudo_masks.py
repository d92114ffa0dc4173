"""Seeds (CAM files) -> pseudo masks (label PNGs), by dense CRF, region voting or a plain threshold.

Output: ``<out_dir>/<image id>.png``, uint8 palette PNG, 0 = background, 1..K = classes, 255 = ignore, written
atomically; a re-run skips the PNGs that exist. ``<out_dir>/manifest.json`` records the method, its parameters,
the threshold and where it came from, the CAM folder and the counts.

Methods (``pseudo.method``):

- ``threshold``: per pixel argmax over (constant background score t, CAM_1..CAM_P);
- ``crf``: those labels, refined by a dense CRF with a unary from the labels (`semples.infer.crf.crf_on_labels`,
  METHOD.md §1.7 reference values);
- ``region-vote``: SAMS region voting (`semples.infer.region_vote`) over SAM masks (when a SAM checkpoint is
  configured) or superpixels.

Optional ignore band (``pseudo.ignore``): pixels whose top score is below ``min_confidence`` or within ``margin``
of the runner-up become 255.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semples.errors import ConfigError, MissingInputError
from semples.infer.config import IgnoreBandConfig, PseudoMaskConfig
from semples.infer.runner import ImageItem, ImageTask
from semples.utils.checkpoint_io import read_json
from semples.utils.dataclass_config import to_dict

if TYPE_CHECKING:
    from semples.data.base import SegmentationDataset

# This module stays free of torch at import time: worker processes import it (spawn) and start in a second.

log = logging.getLogger(__name__)

IGNORE_INDEX = 255


# ----------------------------------------------------------------------------------------------- thresholds
_BEST_KEYS = ("best_on_curve", "best")  # mappings holding the best t ("threshold" / "t")
_THRESHOLD_KEYS = ("best_threshold", "best_t")  # plain numbers


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def read_threshold(path: str | os.PathLike) -> tuple[float, str]:
    """The best background threshold t recorded by `semples eval-seeds`, and where in the file it was found.

    Reads ``best_on_curve.threshold`` (the best t of the sweep, eval-seeds' metrics.json); also accepts
    ``best.threshold`` or a top-level ``best_threshold`` / ``best_t``. `path` may be the file or its folder.

    Raises:
        FileNotFoundError: no such file.
        ConfigError: the file holds no best threshold.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise MissingInputError(f"{path}: no eval-seeds metrics file there (write it with `semples eval-seeds`)")
    data = read_json(path, "eval-seeds metrics file", ConfigError)
    if isinstance(data, dict):
        for key in _BEST_KEYS:
            best = data.get(key)
            if isinstance(best, dict):
                for sub in ("threshold", "t"):
                    if _number(best.get(sub)) is not None:
                        return _number(best[sub]), f"{path} ({key}.{sub})"
        for key in _THRESHOLD_KEYS:
            if _number(data.get(key)) is not None:
                return _number(data[key]), f"{path} ({key})"
    raise ConfigError(f"{path}: no best threshold found (looked for best_on_curve.threshold, best.threshold, "
                      f"best_threshold, best_t); pass --threshold T instead")


# ----------------------------------------------------------------------------------------------- per image
def seed_scores(cams: np.ndarray, threshold: float) -> np.ndarray:
    """(P, H, W) CAMs -> (P + 1, H, W) float32 scores with a constant background score t in row 0."""
    cams = np.asarray(cams, dtype=np.float32)
    return np.concatenate([np.full((1, *cams.shape[1:]), threshold, dtype=np.float32), cams])


def top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) scores -> (H, W) highest and second-highest score (second = 0 when C == 1)."""
    if scores.shape[0] == 1:
        return scores[0], np.zeros_like(scores[0])
    part = np.partition(scores, scores.shape[0] - 2, axis=0)
    return part[-1], part[-2]


def ignore_band(top: np.ndarray, second: np.ndarray, cfg: IgnoreBandConfig) -> np.ndarray:
    """(H, W) bool: pixels to set to 255 (top - second < margin, or top < min_confidence)."""
    out = np.zeros(top.shape, dtype=bool)
    if cfg.margin is not None:
        out |= (top - second) < cfg.margin
    if cfg.min_confidence is not None:
        out |= top < cfg.min_confidence
    return out


def resize_cams(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (P, h, w) maps to size (H, W)."""
    from PIL import Image

    h, w = size
    return np.stack([np.asarray(Image.fromarray(c.astype(np.float32), "F").resize((w, h), Image.BILINEAR))
                     for c in cams]) if len(cams) else np.zeros((0, h, w), np.float32)


@dataclass
class PseudoMask:
    """One pseudo mask: (H, W) uint8 labels (0 bg, k + 1 = class k, 255 ignore) and its pixel counts."""

    mask: np.ndarray
    background: int
    foreground: int
    ignored: int


class PseudoMaskMaker:
    """Turns one image's seeds into a pseudo mask, by the configured method.

    Args:
        cfg: the ``pseudo`` config section.
        threshold: background score t (needed by "crf" and "threshold").
        region_source: region source for "region-vote" (default: built from `cfg` on first use).
    """

    def __init__(self, cfg: PseudoMaskConfig, threshold: float | None = None, region_source=None) -> None:
        if cfg.method in ("crf", "threshold") and threshold is None:
            raise ConfigError(f"pseudo-mask method {cfg.method!r} needs a background threshold: pass --threshold T "
                              f"or --threshold-from eval-seeds/metrics.json (or set pseudo.threshold)")
        self.cfg = cfg
        self.threshold = threshold
        self._regions = region_source

    @property
    def region_source_kind(self) -> str | None:
        """"sam", "slic" or "felzenszwalb" for region voting, else None."""
        if self.cfg.method != "region-vote":
            return None
        if self._regions is not None:
            return getattr(self._regions, "name", type(self._regions).__name__)
        return region_source_kind(self.cfg)

    @property
    def region_source(self):
        if self._regions is None:
            from semples.models.regions import build_region_source

            kind = region_source_kind(self.cfg)
            device = "cpu"
            if kind == "sam":
                from semples.engine.device import resolve_device

                device = str(resolve_device(self.cfg.sam.device))
            self._regions = build_region_source("sam" if kind == "sam" else "superpixels", self.cfg.superpixels,
                                                self.cfg.sam, device=device)
        return self._regions

    def __call__(self, image: np.ndarray, cams: np.ndarray, classes: np.ndarray) -> PseudoMask:
        """Pseudo mask of one image.

        Args:
            image: (H, W, 3) uint8 RGB.
            cams: (P, H, W) CAMs in [0, 1] of the present classes (resized to (H, W) if they differ).
            classes: (P,) 0-based class indices of the CAMs.

        Returns:
            `PseudoMask` with (H, W) uint8 labels.
        """
        image = np.asarray(image)
        cams = np.asarray(cams, dtype=np.float32)
        classes = np.asarray(classes, dtype=np.int64).reshape(-1)
        if cams.shape[1:] != image.shape[:2]:
            cams = resize_cams(cams, image.shape[:2])
        method = self.cfg.method
        if method == "region-vote":
            from semples.infer.region_vote import region_vote

            rv = self.cfg.region_vote
            vote = region_vote(cams, self.region_source(image), bg_power=rv.bg_power, order=rv.order,
                               background_first=rv.background_first)
            labels, top, second = vote.labels, vote.top, vote.second
        else:
            scores = seed_scores(cams, self.threshold)
            labels = scores.argmax(0)
            top, second = top_two(scores) if self.cfg.ignore.enabled else (None, None)
            if method == "crf" and classes.size:
                from semples.infer.crf import crf_on_labels

                c = self.cfg.crf
                labels = crf_on_labels(image, labels, classes.size + 1, gt_prob=c.gt_prob,
                                       gaussian_sxy=c.gaussian_sxy, gaussian_compat=c.gaussian_compat,
                                       bilateral_sxy=c.bilateral_sxy, bilateral_srgb=c.bilateral_srgb,
                                       bilateral_compat=c.bilateral_compat, iterations=c.iterations, over=c.over)
            elif method not in ("crf", "threshold"):
                raise ConfigError(f"unknown pseudo-mask method {method!r}; valid: crf, region-vote, threshold")
        lut = np.concatenate([[0], classes + 1]).astype(np.uint8)
        mask = lut[labels]
        if self.cfg.ignore.enabled:
            mask[ignore_band(top, second, self.cfg.ignore)] = IGNORE_INDEX
        ignored = int((mask == IGNORE_INDEX).sum())
        background = int((mask == 0).sum())
        return PseudoMask(mask=mask, background=background, foreground=mask.size - background - ignored,
                          ignored=ignored)


def region_source_kind(cfg: PseudoMaskConfig) -> str:
    """Which regions region voting uses under `cfg`: "sam" or the superpixel method."""
    source = cfg.region_vote.source
    if source == "sam" or (source == "auto" and cfg.sam.checkpoint):
        return "sam"
    return cfg.superpixels.method


# ----------------------------------------------------------------------------------------------- the task
@dataclass
class PseudoInput:
    """One image read for pseudo masks: RGB pixels, its CAMs and their classes (numpy: travels to workers)."""

    image: np.ndarray  # (H, W, 3) uint8
    cams: np.ndarray  # (P, H, W) float32
    classes: np.ndarray  # (P,) 0-based


@dataclass
class PseudoInputReader:
    """Reads an image's CAM file and decodes the image."""

    cams_dir: str

    def __call__(self, dataset: SegmentationDataset, index: int) -> PseudoInput:
        from semples.infer.cam_io import cam_path, load_cam

        cams, classes = load_cam(cam_path(self.cams_dir, dataset.ids[index]), len(dataset.classes))
        image = np.asarray(dataset.load_image(index).convert("RGB"), dtype=np.uint8)
        return PseudoInput(image, cams, classes)


class PseudoMaskTask(ImageTask):
    """Seeds -> one pseudo-mask PNG per image, for the one inference runner (`semples.infer.runner`).

    CRF and superpixels are CPU-bound: they run in ``cfg.workers`` processes; the threshold method (cheap), SAM and
    a given region source (one shared model) run in this process.

    Args:
        cfg: the ``pseudo`` config section.
        cams_dir: the CAM folder read.
        threshold: background score t (crf, threshold).
        region_source: a ready region source for region voting (else built from `cfg`).
    """

    suffix = ".png"

    def __init__(self, cfg: PseudoMaskConfig, cams_dir: str | os.PathLike, threshold: float | None = None,
                 region_source=None) -> None:
        self.cfg, self.cams_dir, self.threshold = cfg, str(cams_dir), threshold
        self.maker = PseudoMaskMaker(cfg, threshold, region_source)  # validates method and threshold early
        self.name = f"pseudo-masks ({cfg.method})"
        in_process = cfg.method == "threshold" or region_source is not None or self.maker.region_source_kind == "sam"
        self.processes = 0 if in_process or cfg.workers <= 1 else cfg.workers
        self.pixels = {"background": 0, "foreground": 0, "ignored": 0}

    def __getstate__(self) -> dict:  # what a worker process needs: the settings, not a region model
        state = dict(self.__dict__)
        state["maker"] = None
        return state

    def reader(self) -> PseudoInputReader:
        return PseudoInputReader(self.cams_dir)

    def setup(self, device) -> None:
        if self.maker is None:  # in a worker process
            self.maker = PseudoMaskMaker(self.cfg, self.threshold)
        elif self.maker.region_source_kind == "sam":
            _ = self.maker.region_source  # build SAM now: a missing checkpoint fails before any work

    def compute(self, batch: list[ImageItem]) -> list[PseudoMask]:
        return [self.maker(it.data.image, it.data.cams, it.data.classes) for it in batch]

    def write(self, path: Path, item: ImageItem, output: PseudoMask) -> None:
        from semples.data.io import write_mask_png

        write_mask_png(path, output.mask)

    def record(self, item: ImageItem, output: PseudoMask) -> None:
        self.pixels["background"] += output.background
        self.pixels["foreground"] += output.foreground
        self.pixels["ignored"] += output.ignored

    def summary(self) -> dict[str, Any]:
        total = sum(self.pixels.values())
        return {"pixels_written": dict(self.pixels),
                "pixel_fractions_written": {k: (v / total if total else None) for k, v in self.pixels.items()}}


# ----------------------------------------------------------------------------------------------- a whole split
@dataclass
class PseudoMaskRun:
    """Summary of one `generate_pseudo_masks` call (also written to the manifest)."""

    out_dir: str
    total: int = 0
    written: int = 0
    skipped_existing: int = 0
    missing_cams: list[str] = field(default_factory=list)
    pixels: dict[str, int] = field(default_factory=lambda: {"background": 0, "foreground": 0, "ignored": 0})
    seconds: float = 0.0
    manifest: dict | None = None

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else float("nan")


def mask_png_path(out_dir: str | os.PathLike, image_id: str) -> Path:
    """Where the pseudo mask of `image_id` lives."""
    return Path(out_dir) / f"{image_id}.png"


def pseudo_mask_parameters(cfg: PseudoMaskConfig, threshold: float | None) -> dict[str, Any]:
    """The parameters that determine the masks (the folder's settings, compared on re-runs)."""
    params: dict[str, Any] = {"method": cfg.method, "ignore": to_dict(cfg.ignore)}
    if cfg.method in ("crf", "threshold"):
        params["threshold"] = threshold
    if cfg.method == "crf":
        params["crf"] = to_dict(cfg.crf)
    if cfg.method == "region-vote":
        params["region_vote"] = to_dict(cfg.region_vote)
        kind = region_source_kind(cfg)
        params["regions"] = ({"source": "sam", **{k: v for k, v in asdict(cfg.sam).items() if k != "device"}}
                             if kind == "sam" else {"source": "superpixels", **asdict(cfg.superpixels)})
    return params


def generate_pseudo_masks(dataset: SegmentationDataset, cams_dir: str | os.PathLike, out_dir: str | os.PathLike,
                          cfg: PseudoMaskConfig, threshold: float | None = None, *,
                          threshold_source: str | None = None, force: bool = False, skip_missing: bool = False,
                          limit: int | None = None, progress: bool = True, region_source=None,
                          extra_manifest: dict[str, Any] | None = None, state=None) -> PseudoMaskRun:
    """Writes ``<out_dir>/<id>.png`` for every image of `dataset` from its CAM file in `cams_dir`, and the manifest.

    Args:
        dataset: the images (ids must match the CAM file names).
        cams_dir: folder of CAM files (`semples.infer.cam_io` format).
        out_dir: output folder.
        cfg: method and parameters.
        threshold: background score t (crf, threshold).
        threshold_source: where t came from (recorded in the manifest).
        force: remake existing PNGs (and accept a folder made with other parameters).
        skip_missing: images without a CAM file are left out (listed in the manifest) instead of an error.
        limit: only the first `limit` images of the dataset.
        progress: show a progress bar (images/s).
        region_source: a ready region source for region voting (else built from `cfg`); forces one process.
        extra_manifest: more entries for the manifest (the step's: split, CAM folder's generator ...).
        state: a `semples.engine.device.ProcessState` (default: from ``pseudo.sam.device``).

    Returns:
        `PseudoMaskRun` counts.

    Raises:
        MissingInputError: missing CAM files (unless `skip_missing`), or no CAM folder / file at all.
        ReuseError: `out_dir` was made with other parameters or seeds (unless `force`).
    """
    from semples.infer.cam_io import cam_path
    from semples.infer.runner import limited_count, run_images, unwrap_dataset
    from semples.runs import FolderRecord, folder_record

    cams_dir, out_dir = Path(cams_dir), Path(out_dir)
    if not cams_dir.is_dir():
        raise MissingInputError(f"{cams_dir}: CAM folder does not exist (make it with `semples cams`)")
    task = PseudoMaskTask(cfg, cams_dir, threshold, region_source)
    if region_source is None and task.maker.region_source_kind == "sam":
        _ = task.maker.region_source  # build SAM now: a missing checkpoint fails before anything is written
    base = unwrap_dataset(dataset)
    indices = list(range(limited_count(limit, len(base))))
    missing = [base.ids[i] for i in indices if not cam_path(cams_dir, base.ids[i]).is_file()]
    if missing and (not skip_missing or len(missing) == len(indices)):
        raise MissingInputError(f"{cams_dir}: no CAM file for {len(missing)} of {len(indices)} images (first: "
                                f"{', '.join(missing[:3])}); run `semples cams` on this split"
                                + ("" if len(missing) == len(indices) else " or pass --skip-missing"))
    missing_set = set(missing)
    extra = dict(extra_manifest or {})
    data = extra.pop("data", None) or {"dataset": getattr(base, "name", None), "root": None, "split": None,
                                       "name": getattr(base, "name", None)}
    record = FolderRecord(
        kind="pseudo-masks", producer="semples.infer.pseudo_masks", data=data, classes=list(base.classes.names),
        inputs={"cams": folder_record(cams_dir)}, settings=pseudo_mask_parameters(cfg, threshold),
        file_format="one <id>.png per image: uint8 labels (palette PNG)",
        extra={"method": cfg.method, "threshold": threshold if cfg.method in ("crf", "threshold") else None,
               "threshold_source": threshold_source, "region_source": task.maker.region_source_kind,
               "cams_dir": str(cams_dir), "out_dir": str(out_dir),
               "label_coding": {"background": 0, "classes": "1..K (class k -> k + 1)", "ignore": IGNORE_INDEX},
               "missing_cams": missing[:100], **extra})
    if state is None and task.maker.region_source_kind != "sam":  # CPU work only: no torch needed to start
        from semples.engine.processes import cpu_process_state

        state = cpu_process_state()
    if state is None:
        from semples.engine.device import process_state

        state = process_state(cfg.sam.device)
    summary = run_images(task, base, out_dir, indices=[i for i in indices if base.ids[i] not in missing_set],
                         force=force, progress=progress, state=state, record=record)
    run = PseudoMaskRun(out_dir=str(out_dir), total=len(indices), written=summary.written,
                        skipped_existing=summary.skipped, missing_cams=missing, pixels=dict(task.pixels),
                        seconds=summary.seconds, manifest=summary.manifest)
    log.info("pseudo masks: %d written, %d already there, %d without CAMs -> %s (%.2f images/s)", run.written,
             run.skipped_existing, len(run.missing_cams), out_dir, run.images_per_second)
    return run


__all__ = [
    "PseudoInput",
    "PseudoInputReader",
    "PseudoMask",
    "PseudoMaskMaker",
    "PseudoMaskRun",
    "PseudoMaskTask",
    "generate_pseudo_masks",
    "ignore_band",
    "mask_png_path",
    "pseudo_mask_parameters",
    "read_threshold",
    "region_source_kind",
    "resize_cams",
    "seed_scores",
    "top_two",
]
