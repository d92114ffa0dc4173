"""Seeds: multi-scale + flip class activation maps at full resolution, one file per image (METHOD.md §1.7).

For every image of a split and each scale s of ``cams.scales``: the image is resized by s (PIL bicubic), the
generator runs on it and on its horizontal flip, each view's maps of the classes *in the image label* are upsampled
to the full image size (the generator's `to_image_size`, which handles its padding), flipped views are flipped
back, and all views are summed. Each class map is then min-max normalised: (m − min) / (max − min + eps).
Classes absent from the label are not stored (zero by definition); see `semples.infer.cam_io` for the file format.

Batching: images are read in groups of ``cams.group_size`` consecutive images of the split; inside a group, images
of *equal size* share a forward pass (up to ``cams.batch_size`` images, × 2 with flips). Nothing is padded, so a
CAM never sees another image's padding. The group is also the unit of resumption: a re-run skips groups whose files
all exist; in a partly finished group, batches are formed over the whole group as before and those holding a
missing image are recomputed (only missing files are written), so every image is always computed in the same batch
as in an uninterrupted run and the files come out bit-identical. (`--limit` forms its last group from fewer
images; with batch_size > 1 a later full run may then differ in the last bits of those few images.)

Several processes (``accelerate launch`` / ``torchrun``) split the groups between them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from semples.data.base import DataError, SegmentationDataset
from semples.data.transforms import normalize, scaled_size
from semples.infer.cam_io import cam_path, save_cam
from semples.models.mask_generators import MaskGenerator, run_generator
from semples.utils.checkpoint_io import atomic_write_json
from semples.utils.dataclass_config import ConfigError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT = "semples-cams"
# settings that change the numbers in the files: a folder never mixes CAMs made with different values
RESULT_SETTINGS = ("scales", "flip", "normalize", "align_corners", "eps", "mixed_precision")


# ---------------------------------------------------------------------------------------------------- the maths
def minmax_per_class(cams: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(m − min) / (max − min + eps) for each map.

    Shape: cams (P, H, W) -> (P, H, W) in [0, 1).
    """
    if cams.shape[0] == 0:
        return cams
    flat = cams.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1)
    return (cams - lo) / (hi - lo + eps)


@torch.inference_mode()
def multiscale_cams(generator: MaskGenerator, views: Sequence[torch.Tensor], size: tuple[int, int],
                    classes: Sequence[np.ndarray | Sequence[int]], *, flip: bool = True, align_corners: bool = False,
                    eps: float = 1e-5, autocast: Callable[[], contextlib.AbstractContextManager] | None = None
                    ) -> list[torch.Tensor]:
    """Seeds of a batch of equal-sized images from their resized views.

    Args:
        generator: any `MaskGenerator` (eval mode is the caller's business).
        views: one tensor per scale, (B, 3, h_s, w_s) normalised images on the generator's device.
        size: (H, W) the full image size every map is brought to.
        classes: per image, the 0-based classes of its label (the maps kept).
        flip: also run the horizontal flip of every view (and flip its maps back).
        align_corners: of the bilinear upsampling.
        eps: of the per-class min-max.
        autocast: context factory for the generator forward (mixed precision), or None.

    Returns:
        B tensors (P_i, H, W) float32 in [0, 1), maps in the order of `classes[i]`.
    """
    b = views[0].shape[0]
    device = views[0].device
    classes = [torch.as_tensor(np.asarray(c, dtype=np.int64), device=device) for c in classes]
    acc = [torch.zeros((len(c), *size), dtype=torch.float32, device=device) for c in classes]
    if all(len(c) == 0 for c in classes):
        return acc
    # the image labels, for generators whose maps depend on them (CLIP Grad-CAM: softmax over present classes)
    labels = torch.zeros(b, generator.num_classes, device=device)
    for i, cls in enumerate(classes):
        labels[i, cls] = 1.0
    for x in views:
        if x.shape[0] != b:
            raise ValueError("every scale needs the same number of images")
        x = torch.cat([x, x.flip(-1)]) if flip else x
        with autocast() if autocast is not None else contextlib.nullcontext():
            out = run_generator(generator, x, torch.cat([labels, labels]) if flip else labels)
        cam = out.cam.float()  # (V·B, K, h, w)
        for i, cls in enumerate(classes):
            if len(cls) == 0:
                continue
            rows = [i, b + i] if flip else [i]
            maps = out.to_image_size(cam[rows][:, cls], align_corners=align_corners, size=size)  # (V, P, H, W)
            if flip:
                maps[1] = maps[1].flip(-1)
            acc[i] += maps.sum(0)
    return [minmax_per_class(a, eps) for a in acc]


# ---------------------------------------------------------------------------------------------------- reading
@dataclass
class _Item:
    index: int
    id: str
    size: tuple[int, int] = (0, 0)  # (H, W)
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    views: list[torch.Tensor] = field(default_factory=list)  # one (3, h_s, w_s) uint8 per scale
    error: str | None = None


def resized_views(image: Image.Image, scales: Sequence[float]) -> list[torch.Tensor]:
    """The image resized by each scale (PIL bicubic, sides rounded), as uint8 tensors (3, h_s, w_s).

    Kept as uint8 so DataLoader workers hand over 4x less data; `to_model_input` normalises on the device.
    """
    out = []
    for s in scales:
        h, w = scaled_size(image.height, image.width, s)
        resized = image if (w, h) == image.size else image.resize((w, h), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1))
    return out


def to_model_input(views: torch.Tensor, norm: str = "imagenet") -> torch.Tensor:
    """uint8 (B, 3, h, w) -> float32 in [0, 1] -> normalised with the named mean/std (as the training transforms)."""
    return normalize(views.float().div_(255.0), norm)


class _GroupReader(torch.utils.data.Dataset):
    """Item j = the images of group j, decoded and resized to every scale (runs in DataLoader workers)."""

    def __init__(self, dataset: SegmentationDataset, groups: list[list[int]], scales: tuple[float, ...],
                 skip_bad: bool) -> None:
        self.dataset, self.groups, self.scales, self.skip_bad = dataset, groups, scales, skip_bad

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, j: int) -> list[_Item]:
        items = []
        for index in self.groups[j]:
            item = _Item(index, self.dataset.ids[index])
            try:
                labels = np.asarray(self.dataset.labels(index))
                image = self.dataset.load_image(index).convert("RGB")
            except DataError as e:
                if not self.skip_bad:
                    raise
                item.error = str(e)
                items.append(item)
                continue
            item.size = (image.height, image.width)
            item.classes = np.flatnonzero(labels > 0).astype(np.int64)
            item.views = resized_views(image, self.scales)
            items.append(item)
        return items


def _identity(batch):
    return batch


def _unwrap(dataset: SegmentationDataset) -> SegmentationDataset:
    """The reader under a `SkipBadItems` wrapper: CAMs must never substitute another image for a bad one."""
    from semples.data.skip import SkipBadItems

    while isinstance(dataset, SkipBadItems):
        dataset = dataset.dataset
    return dataset


# ---------------------------------------------------------------------------------------------------- the run
@dataclass
class CamRunSummary:
    """What a `generate_cams` call did (this process's share).

    Attributes:
        out_dir: the CAM folder.
        total: images asked for (after `limit`).
        written: files written by this call.
        skipped: images whose file already existed (not rewritten).
        computed: images run through the generator (includes finished images of partly done groups).
        failed: "id: problem" for unreadable images (only with data.skip_bad).
        seconds: wall time of the inference loop.
    """

    out_dir: Path
    total: int
    written: int = 0
    skipped: int = 0
    computed: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


def resolve_precision(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for the generator forward ("auto": bf16 where natively supported, else none)."""
    if mixed_precision == "bf16":
        return torch.bfloat16
    if mixed_precision == "fp16":
        return torch.float16
    if mixed_precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def make_groups(indices: Sequence[int], group_size: int) -> list[list[int]]:
    """Consecutive runs of `group_size` indices (the last may be shorter)."""
    indices = list(indices)
    return [indices[i: i + group_size] for i in range(0, len(indices), group_size)]


def _size_batches(items: list[_Item], batch_size: int) -> list[list[_Item]]:
    """Items of equal size together (first-appearance order), split into batches of at most `batch_size`."""
    by_size: OrderedDict[tuple[int, int], list[_Item]] = OrderedDict()
    for it in items:
        by_size.setdefault(it.size, []).append(it)
    return [group[i: i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]


def generate_cams(generator: MaskGenerator, dataset: SegmentationDataset, out_dir: str | Path, cfg, *,
                  device: torch.device | str = "cpu", indices: Sequence[int] | None = None, force: bool = False,
                  num_workers: int = 0, skip_bad: bool = False, progress: bool = True, process_index: int = 0,
                  num_processes: int = 1) -> CamRunSummary:
    """Writes one CAM file per image of `dataset` into `out_dir` (existing files are skipped unless `force`).

    Args:
        generator: any `MaskGenerator`; moved to `device` and put in eval mode.
        dataset: the split (images + image-level labels).
        out_dir: the CAM folder.
        cfg: a `CamConfig` (scales, flip, batch_size, group_size, normalize, align_corners, eps, mixed_precision).
        device: where the generator runs.
        indices: dataset indices to process (default: all), in order; groups are formed over this list.
        force: recompute and overwrite every file.
        num_workers: DataLoader workers decoding and resizing images.
        skip_bad: record unreadable images and go on (else the first one stops the run).
        progress: show a tqdm bar (images/second).
        process_index, num_processes: this process's share of the groups (group j goes to j % num_processes).

    Returns:
        A `CamRunSummary` of this process's work.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    device = torch.device(device)
    dataset = _unwrap(dataset)
    indices = list(range(len(dataset))) if indices is None else list(indices)
    summary = CamRunSummary(out_dir=out_dir, total=len(indices))
    groups = [g for j, g in enumerate(make_groups(indices, cfg.group_size)) if j % num_processes == process_index]
    done = {i for g in groups for i in g if not force and cam_path(out_dir, dataset.ids[i]).is_file()}
    todo = [g for g in groups if any(i not in done for i in g)]
    summary.skipped = sum(1 for g in groups for i in g if i in done)
    if not todo:
        return summary

    generator = generator.to(device).eval()
    dtype = resolve_precision(cfg.mixed_precision, device)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else None
    reader = _GroupReader(dataset, todo, tuple(cfg.scales), skip_bad)
    loader = torch.utils.data.DataLoader(reader, batch_size=None, shuffle=False, num_workers=num_workers,
                                         collate_fn=_identity, prefetch_factor=2 if num_workers else None,
                                         persistent_workers=False)
    bar = tqdm(total=sum(len(g) for g in todo), desc="cams", unit="img", disable=not progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}]")
    pending: list[Future] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="cam-writer") as writer:
        try:
            for items in loader:
                for bad in (it for it in items if it.error is not None):
                    summary.failed.append(f"{bad.id}: {bad.error}")
                    log.warning("skipping unreadable image %s", bad.error)
                    bar.update(1)
                for batch in _size_batches([it for it in items if it.error is None], cfg.batch_size):
                    if all(it.index in done for it in batch):  # (batches are fixed by the whole group)
                        bar.update(len(batch))
                        continue
                    views = [to_model_input(torch.stack([it.views[s] for it in batch]).to(device), cfg.normalize)
                             for s in range(len(cfg.scales))]
                    cams = multiscale_cams(generator, views, batch[0].size, [it.classes for it in batch],
                                           flip=cfg.flip, align_corners=cfg.align_corners, eps=cfg.eps,
                                           autocast=autocast)
                    for it, cam in zip(batch, cams):
                        summary.computed += 1
                        if it.index in done:
                            continue
                        pending.append(writer.submit(save_cam, cam_path(out_dir, it.id), cam.cpu().numpy(),
                                                     it.classes))
                        summary.written += 1
                    bar.update(len(batch))
                # keep the writers at most a few groups behind (bounded memory), surface their errors early
                while len(pending) > 4 * cfg.group_size:
                    pending.pop(0).result()
            for f in pending:
                f.result()
        finally:
            for f in pending:
                f.cancel()
            bar.close()
    summary.seconds = time.perf_counter() - start
    return summary


# ---------------------------------------------------------------------------------------------------- from a config
def default_cams_dir(cfg, split: str) -> Path:
    """<output_dir>/<experiment>/cams/<split> (or ``cams.out_dir`` when set)."""
    if cfg.cams.out_dir:
        return Path(cfg.cams.out_dir)
    return Path(cfg.output_dir) / cfg.experiment / "cams" / split


def cams_split(cfg) -> str:
    """The split CAMs are made for: ``cams.split``, else ``data.eval_split``."""
    return cfg.cams.split or cfg.data.eval_split


def read_manifest(cams_dir: str | Path) -> dict | None:
    """The manifest of a CAM folder, or None when it has none."""
    import json

    p = Path(cams_dir) / MANIFEST_NAME
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: unreadable manifest ({e})") from e


def _check_compatible(old: dict, new: dict, out_dir: Path) -> None:
    """Raises when an existing folder holds CAMs made differently from this run."""
    diffs = []
    if old.get("generator", {}).get("sha256") != new["generator"].get("sha256") or \
            old.get("generator", {}).get("fresh") != new["generator"].get("fresh"):
        diffs.append(f"generator {old.get('generator', {}).get('path', 'random weights')} -> "
                     f"{new['generator'].get('path', 'random weights')}")
    for key in RESULT_SETTINGS:
        a, b = old.get("settings", {}).get(key), new["settings"][key]
        if (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            diffs.append(f"{key} {a} -> {b}")
    for key in ("dataset", "split", "root"):
        if old.get("data", {}).get(key) != new["data"][key]:
            diffs.append(f"data {key} {old.get('data', {}).get(key)} -> {new['data'][key]}")
    if diffs:
        raise ConfigError(f"{out_dir} holds CAMs made differently ({'; '.join(diffs)}); pass --force to overwrite "
                          f"them or --out to write elsewhere")


def _resolve_device(name: str):
    """(device, process_index, num_processes, state) for an inference run (accelerate's PartialState)."""
    from accelerate import PartialState

    cpu = name == "cpu" or (name == "auto" and not torch.cuda.is_available()
                            and not torch.backends.mps.is_available())
    state = PartialState(cpu=cpu)
    device = state.device
    if name.startswith("cuda:") and state.num_processes == 1:
        device = torch.device(name)
    return device, state.process_index, state.num_processes, state


def run_cams(cfg, generator_source: str | Path | None, *, split: str | None = None, out_dir: str | Path | None = None,
             limit: int | None = None, force: bool = False, progress: bool = True) -> tuple[CamRunSummary, dict]:
    """`semples cams`: loads S from a run folder (None = random weights), writes the CAMs and the manifest.

    Args:
        cfg: the experiment `Config` (sections data, generator, cams, device).
        generator_source: run folder or checkpoint of the mask generator; None for random weights (plumbing only).
        split: dataset split (default `cams_split(cfg)`).
        out_dir: CAM folder (default `default_cams_dir(cfg, split)`).
        limit: only the first `limit` images of the split.
        force: recompute every file (also when the folder's manifest names other settings).
        progress: tqdm bar.

    Returns:
        (this process's summary, the manifest written by the main process).
    """
    from semples.data import build_dataset
    from semples.models.mask_generators import generator_context, load_generator

    split = split or cams_split(cfg)
    out_dir = Path(out_dir) if out_dir is not None else default_cams_dir(cfg, split)
    dataset = build_dataset(cfg.data, split)
    names = list(dataset.classes.names)
    gen_cfg = cfg.generator
    if generator_source is None:
        torch.manual_seed(cfg.seed)
        gen_cfg = dataclasses.replace(gen_cfg, pretrained=False, backbone_checkpoint=None)
        log.warning("cams from a mask generator with RANDOM weights: for plumbing tests only")
    # class and background names for generators with text prompts (CLIP Grad-CAM); the others ignore them
    generator, record = load_generator(generator_source, gen_cfg, len(names),
                                       context=generator_context(cfg, dataset.classes))
    device, rank, world, state = _resolve_device(cfg.device)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    manifest = {
        "format": FORMAT, "version": 1,
        "generator": record,
        "settings": {**{k: getattr(cfg.cams, k) for k in RESULT_SETTINGS},
                     "batch_size": cfg.cams.batch_size, "group_size": cfg.cams.group_size},
        "data": {"dataset": cfg.data.dataset, "root": cfg.data.root, "split": split, "name": dataset.name},
        "classes": names,
        "file_format": "one <id>.npz per image: cams (P, H, W) float16 in [0, 1) for the P labelled classes, "
                       "classes (P,) int16 0-based (semples.infer.cam_io)",
    }
    manifest["settings"]["scales"] = list(manifest["settings"]["scales"])
    old = read_manifest(out_dir)
    if old is not None and not force:
        _check_compatible(old, manifest, out_dir)
    if state.is_main_process:
        # written before the first CAM, so an interrupted folder still says what it holds
        atomic_write_json(out_dir / MANIFEST_NAME, {**(old or {}), **manifest, "complete": False,
                                                   "updated": _now()})
    state.wait_for_everyone()
    workers = cfg.cams.num_workers if cfg.cams.num_workers is not None else cfg.data.num_workers
    summary = generate_cams(generator, dataset, out_dir, cfg.cams, device=device, indices=range(n), force=force,
                            num_workers=workers, skip_bad=cfg.data.skip_bad,
                            progress=progress and state.is_main_process, process_index=rank, num_processes=world)
    state.wait_for_everyone()
    present = sum(1 for i in range(len(dataset)) if cam_path(out_dir, dataset.ids[i]).is_file())
    manifest.update({
        "counts": {"split_images": len(dataset), "requested": n, "present": present,
                   "written_this_run": summary.written, "skipped_this_run": summary.skipped,
                   "failed_this_run": len(summary.failed),
                   "this_run_counts_cover": "all processes" if world == 1 else "the main process only"},
        "failed": summary.failed,
        "complete": present == len(dataset),
        "limit": limit,
        "last_run": {"seconds": round(summary.seconds, 3), "images_per_second": round(summary.images_per_second, 3),
                     "device": str(device), "processes": world},
        "updated": _now(),
    })
    if state.is_main_process:
        atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    return summary, manifest


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["CamRunSummary", "MANIFEST_NAME", "cams_split", "default_cams_dir", "generate_cams", "make_groups",
           "minmax_per_class", "multiscale_cams", "read_manifest", "resolve_precision", "run_cams"]
