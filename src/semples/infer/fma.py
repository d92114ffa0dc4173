"""FMA-WSSS seeds and pseudo masks, written in the folder formats the shared evaluation verbs read (METHOD.md §2).

What this module provides (the pieces ``semples run --method fma | semples+fma`` chains):

- `write_clip_cams`: CLIP Grad-CAM seeds of a `ClipGradCAM` generator over a split — multi-scale + flip views,
  each view's grid CAMs refined by CAA (`semples.infer.caa`) with the attention of the same forward pass, brought
  to full resolution, summed, min-max per class — into a CAM folder (`semples.infer.cam_io`: ``<id>.npz`` +
  ``manifest.json``), which ``semples eval-seeds --cams DIR`` evaluates and ``semples pseudo-masks`` reads.
- `caa_refine_cam_folder`: CAA refinement of *any* CAM folder (SemPLeS seeds from ``semples cams``) with the
  attention of a frozen CLIP — the "SemPLeS + FMA" path — into a new CAM folder.
- `region_vote_seeds`: SAMS region voting of a CAM folder into label PNGs ``<id>.png`` (0 background, k + 1 =
  class k, 255 ignore) + ``manifest.json``, via the shared pseudo-mask writer — what ``semples eval-masks``
  scores, what stage fma-segment reads with ``--seeds``, what ``semples train-seg`` trains on.
- Config-driven wrappers for the pipeline: `fma_cams` (coarse / fine / training-free CLIP-ES seeds of a run folder
  or of hand-written prompts), `fma_seeds` (their SAMS seeds / pseudo masks), `semples_fma_cams`.

The FMA-WSSS pipeline with these pieces (VOC; each arrow hands a folder explicitly to the next step):

    semples train --stage fma-classify                     -> runs/<exp>/fma-classify
    fma_cams(cfg, that run, cams/coarse, phase="coarse")    CAA boxes at 0.4
    fma_seeds(cfg, cams/coarse, seeds/coarse, "coarse")     SAMS, background power 0.6
    semples train --stage fma-segment --seeds seeds/coarse  -> runs/<exp>/fma-segment
    fma_cams(cfg, that run, cams/fine, phase="fine")        CAA boxes at 0.5
    fma_seeds(cfg, cams/fine, pseudo_masks/fma, "fine")     SAMS, background power 0.7 = the pseudo masks

SemPLeS + FMA: ``semples cams`` of the SemPLeS refine run -> `semples_fma_cams` (CAA, fine settings) ->
`fma_seeds(..., "fine")`. This measures the pipeline path (SemPLeS CAMs fed to CAA + SAMS), not the probability
ensemble (0.85 · FMA + 0.15 · SemPLeS) the paper's best numbers most likely come from (METHOD.md §2).

Region sources follow the ``pseudo`` section: SAM when ``pseudo.sam.checkpoint`` is set (``pseudo.region_vote
.source``), superpixels otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from semples.data.transforms import multiscale_views, normalize, to_tensor
from semples.infer.caa import attention_affinity, caa_refine, refine_with_attention
from semples.infer.cam_io import cam_path, load_cam, save_cam
from semples.infer.cams import minmax_per_class
from semples.models.clip_visual import embed, patch_size, run_blocks
from semples.utils.checkpoint_io import atomic_write_json
from semples.utils.dataclass_config import ConfigError, to_dict

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
PHASES = ("coarse", "fine")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _unwrap(dataset):
    from semples.data.skip import SkipBadItems

    while isinstance(dataset, SkipBadItems):
        dataset = dataset.dataset
    return dataset


def _check_folder(out_dir: Path, settings: dict, force: bool) -> dict | None:
    """The folder's previous manifest; raises when it holds files made with other settings (unless `force`)."""
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    import json

    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not force and old.get("settings") != json.loads(json.dumps(settings)):
        raise ConfigError(f"{out_dir} holds CAMs made with other settings (see its {MANIFEST_NAME}); pass force=True "
                          "to overwrite them or write elsewhere")
    return old


# ------------------------------------------------------------------------------------------------ CLIP CAMs
@torch.no_grad()
def clip_seed_maps(generator, image, classes: np.ndarray, *, scales: tuple[float, ...] = (1.0,), flip: bool = True,
                   normalize_name: str = "imagenet", caa=None, box_threshold: float = 0.4, eps: float = 1e-5,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Seeds of one image from a `ClipGradCAM`: every view's Grad-CAMs (softmax over the image's classes and the
    background prompts), CAA-refined on the patch grid with the same pass's attention, at full resolution, summed
    over views, min-max per class.

    Args:
        generator: a `ClipGradCAM` (eval mode, on `device`).
        image: PIL RGB image (H, W).
        classes: (P,) 0-based classes of the image label.
        scales, flip: the views (`semples.data.transforms.multiscale_views`).
        normalize_name: normalisation the generator expects ("imagenet" unless clip_cam.input_norm is "clip").
        caa: a `CaaConfig` (None or ``enabled: false``: plain Grad-CAM).
        box_threshold: CAA box threshold (0.4 coarse, 0.5 fine).
        eps: of the per-class min-max.

    Returns:
        (P, H, W) float32 in [0, 1) on `device`, maps in the order of `classes`.
    """
    classes = np.asarray(classes, dtype=np.int64)
    size = (image.height, image.width)
    acc = torch.zeros((len(classes), *size), dtype=torch.float32, device=device)
    if len(classes) == 0:
        return acc
    use_caa = caa is not None and caa.enabled
    labels = torch.zeros(1, generator.num_classes, device=device)
    labels[0, torch.as_tensor(classes)] = 1.0
    cls = torch.as_tensor(classes, device=device)
    for tensor, _, flipped in multiscale_views(image, scales, flip=flip, norm=normalize_name):
        x = tensor[None].to(device)
        if use_caa:
            out, attn = generator.forward_with_attention(x, labels, layers=caa.layers)
            grid = refine_with_attention(out.cam[0, cls].float(), attn[0], box_threshold=box_threshold,
                                         iterations=caa.sinkhorn_iterations, power=caa.power,
                                         restrict_targets=caa.restrict_targets)
        else:
            out = generator(x, labels=labels)
            grid = out.cam[0, cls].float()
        full = out.to_image_size(grid[None], align_corners=False, size=size)[0]
        acc += full.flip(-1) if flipped else full
    return minmax_per_class(acc, eps)


def write_clip_cams(generator, dataset, out_dir: str | Path, *, scales: tuple[float, ...] = (1.0,), flip: bool = True,
                    normalize_name: str = "imagenet", caa=None, box_threshold: float = 0.4, eps: float = 1e-5,
                    device: torch.device | str = "cpu", limit: int | None = None, force: bool = False,
                    progress: bool = True, manifest_extra: dict[str, Any] | None = None) -> dict:
    """Writes `clip_seed_maps` of every image of `dataset` as ``<out_dir>/<id>.npz`` (cam_io) + manifest.json.

    Existing files are skipped (a re-run continues an interrupted one) unless `force`; a folder never mixes
    settings. Returns the manifest written.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    dataset = _unwrap(dataset)
    device = torch.device(device)
    settings = {"scales": [float(s) for s in scales], "flip": flip, "normalize": normalize_name, "eps": eps,
                "caa": to_dict(caa) if caa is not None and caa.enabled else None, "box_threshold": box_threshold,
                "prompts": generator.prompt_record()}
    _check_folder(out_dir, settings, force)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    manifest = {"format": "semples-cams", "version": 1, "producer": "semples.infer.fma.write_clip_cams",
                "settings": settings, "classes": list(dataset.classes.names), **(manifest_extra or {}),
                "file_format": "one <id>.npz per image: cams (P, H, W) float16 in [0, 1) for the P labelled "
                               "classes, classes (P,) int16 0-based (semples.infer.cam_io)",
                "complete": False, "updated": _now()}
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    generator = generator.to(device).eval()
    written = skipped = 0
    for i in tqdm(range(n), desc="clip cams", unit="img", disable=not progress, dynamic_ncols=True):
        image_id = dataset.ids[i]
        path = cam_path(out_dir, image_id)
        if path.is_file() and not force:
            skipped += 1
            continue
        classes = np.flatnonzero(np.asarray(dataset.labels(i)) > 0).astype(np.int64)
        maps = clip_seed_maps(generator, dataset.load_image(i).convert("RGB"), classes, scales=scales, flip=flip,
                              normalize_name=normalize_name, caa=caa, box_threshold=box_threshold, eps=eps,
                              device=device)
        save_cam(path, maps.cpu().numpy(), classes)
        written += 1
    present = sum(1 for i in range(len(dataset)) if cam_path(out_dir, dataset.ids[i]).is_file())
    manifest.update(counts={"split_images": len(dataset), "requested": n, "present": present,
                            "written_this_run": written, "skipped_this_run": skipped},
                    complete=present == len(dataset), limit=limit, updated=_now())
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    log.info("clip cams: %d written, %d already there -> %s", written, skipped, out_dir)
    return manifest


# ------------------------------------------------------------------------------------------------ CAA of any CAMs
@torch.no_grad()
def clip_attention(clip, image, *, scale: float = 1.0, layers: int = 8, device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int], int]:
    """Mean attention of the last `layers` blocks (all heads) of CLIP's image tower on one image.

    The image is resized by `scale`, CLIP-normalised and padded (bottom/right) to a multiple of the patch size.

    Returns:
        (attention (1 + h·w, 1 + h·w) float32, grid (h, w), resized image size (h_s, w_s), patch size).
    """
    from semples.data.transforms import scaled_size

    visual = clip.model.visual
    p = patch_size(visual)
    h, w = scaled_size(image.height, image.width, scale)
    resized = image if (w, h) == image.size else image.resize((w, h))
    x = normalize(to_tensor(resized), "clip")[None].to(device)
    x = F.pad(x, (0, (-w) % p, 0, (-h) % p))
    depth = len(visual.transformer.resblocks)
    layers = min(layers, depth)
    tokens, grid = embed(visual, x)
    _, attns = run_blocks(visual, tokens, depth, attention_from=depth - layers)
    attn = torch.stack([a.float().mean(1) for a in attns]).mean(0)[0]
    return attn, grid, (h, w), p


def caa_refine_full(cams: torch.Tensor, attention: torch.Tensor, grid: tuple[int, int], resized: tuple[int, int],
                    patch: int, caa, box_threshold: float, eps: float = 1e-5) -> torch.Tensor:
    """CAA of full-resolution CAMs with the attention of a resized, padded copy of their image.

    The CAMs are resized to the resized image, zero-padded like it, average-pooled to the patch grid, refined,
    upsampled back (padding cropped), resized to full resolution and min-max normalised per class.

    Shape: cams (P, H, W); attention (1 + h·w, 1 + h·w). Returns (P, H, W) float32 in [0, 1).
    """
    p, height, width = cams.shape
    if p == 0:
        return cams.float()
    gh, gw = grid
    hs, ws = resized
    x = F.interpolate(cams.float()[None], size=(hs, ws), mode="bilinear", align_corners=False)
    x = F.pad(x, (0, gw * patch - ws, 0, gh * patch - hs))
    pooled = F.avg_pool2d(x, patch)[0]  # (P, gh, gw)
    aff = attention_affinity(attention[1:, 1:].to(pooled.device), caa.sinkhorn_iterations, caa.power)
    refined = caa_refine(pooled, aff, box_threshold, caa.restrict_targets)
    up = F.interpolate(refined[None], size=(gh * patch, gw * patch), mode="bilinear", align_corners=False)
    up = up[..., :hs, :ws]
    full = F.interpolate(up, size=(height, width), mode="bilinear", align_corners=False)[0]
    return minmax_per_class(full, eps)


def caa_refine_cam_folder(clip, dataset, cams_in: str | Path, out_dir: str | Path, *, caa, box_threshold: float = 0.5,
                          scale: float = 1.0, eps: float = 1e-5, device: torch.device | str = "cpu",
                          limit: int | None = None, force: bool = False, progress: bool = True,
                          manifest_extra: dict[str, Any] | None = None) -> dict:
    """CAA-refines every CAM file of `cams_in` (any generator's seeds) into a new CAM folder `out_dir`.

    Args:
        clip: the frozen CLIP whose attention builds the affinity (FMA-WSSS: ViT-B/16).
        dataset: the split the CAMs belong to (ids = file names).
        cams_in: CAM folder (`semples cams` output).
        out_dir: new CAM folder (cam_io + manifest.json).
        caa: a `CaaConfig`.
        box_threshold: CAA box threshold (SemPLeS + FMA: the fine value, 0.5).
        scale: resize factor of the image CLIP sees.

    Returns:
        The manifest written. Raises FileNotFoundError when an image of the split has no CAM file.
    """
    from tqdm.auto import tqdm

    from semples.infer.cams import read_manifest

    cams_in, out_dir = Path(cams_in), Path(out_dir)
    dataset = _unwrap(dataset)
    device = torch.device(device)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    missing = [dataset.ids[i] for i in range(n) if not cam_path(cams_in, dataset.ids[i]).is_file()]
    if missing:
        raise FileNotFoundError(f"{cams_in}: no CAM file for {len(missing)} of {n} images (first: {missing[0]})")
    settings = {"caa": to_dict(caa), "box_threshold": box_threshold, "scale": scale, "eps": eps,
                "clip": getattr(clip, "source", None), "cams_in": str(cams_in)}
    _check_folder(out_dir, settings, force)
    source = read_manifest(cams_in) or {}
    manifest = {"format": "semples-cams", "version": 1, "producer": "semples.infer.fma.caa_refine_cam_folder",
                "settings": settings, "source_manifest": {k: source.get(k) for k in ("generator", "settings")},
                "data": source.get("data"), "classes": list(dataset.classes.names), **(manifest_extra or {}),
                "complete": False, "updated": _now()}
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    clip = clip.to(device)
    written = skipped = 0
    for i in tqdm(range(n), desc="caa", unit="img", disable=not progress, dynamic_ncols=True):
        image_id = dataset.ids[i]
        path = cam_path(out_dir, image_id)
        if path.is_file() and not force:
            skipped += 1
            continue
        cams, classes = load_cam(cam_path(cams_in, image_id))
        image = dataset.load_image(i).convert("RGB")
        attn, grid, resized, patch = clip_attention(clip, image, scale=scale, layers=caa.layers, device=device)
        refined = caa_refine_full(torch.from_numpy(cams).to(device), attn, grid, resized, patch, caa, box_threshold,
                                  eps)
        save_cam(path, refined.cpu().numpy(), classes)
        written += 1
    present = sum(1 for i in range(len(dataset)) if cam_path(out_dir, dataset.ids[i]).is_file())
    manifest.update(counts={"split_images": len(dataset), "requested": n, "present": present,
                            "written_this_run": written, "skipped_this_run": skipped},
                    complete=present == len(dataset), limit=limit, updated=_now())
    atomic_write_json(out_dir / MANIFEST_NAME, manifest)
    return manifest


# ------------------------------------------------------------------------------------------------ SAMS
def region_vote_seeds(dataset, cams_dir: str | Path, out_dir: str | Path, pseudo_cfg, *, bg_power: float,
                      region_source=None, force: bool = False, limit: int | None = None, progress: bool = True,
                      extra_manifest: dict[str, Any] | None = None):
    """SAMS seeds of a CAM folder: region voting (`semples.infer.region_vote`) with background power `bg_power`
    over SAM masks or superpixels (``pseudo_cfg``, a `PseudoMaskConfig`), written as label PNGs by the shared
    pseudo-mask writer. Returns its `PseudoMaskRun`."""
    from semples.infer.pseudo_masks import generate_pseudo_masks

    cfg = dataclasses.replace(pseudo_cfg, method="region-vote",
                              region_vote=dataclasses.replace(pseudo_cfg.region_vote, bg_power=bg_power))
    return generate_pseudo_masks(dataset, cams_dir, out_dir, cfg, force=force, limit=limit, progress=progress,
                                 region_source=region_source, extra_manifest=extra_manifest)


# ------------------------------------------------------------------------------------------------ from a config
def phase_settings(cfg, phase: str) -> tuple[float, float]:
    """(CAA box threshold, SAMS background power) of phase "coarse" or "fine" from ``cfg.fma``."""
    if phase not in PHASES:
        raise ConfigError(f"unknown FMA phase {phase!r}; valid: {', '.join(PHASES)}")
    f = cfg.fma
    return (f.coarse_box_threshold, f.coarse_bg_power) if phase == "coarse" else (f.fine_box_threshold,
                                                                                  f.fine_bg_power)


def fma_generator(cfg, source: str | Path | None, classes, clip=None, *, prompts: str | None = None,
                  device: torch.device | str = "cpu"):
    """The `ClipGradCAM` of a run folder / checkpoint (fma-classify, fma-segment, or SemPLeS stages on the CLIP
    generator), or — `source` None — a fresh one from ``cfg.generator.clip_cam`` (`prompts` overrides its prompt
    set; "handcrafted" = the training-free CLIP-ES baseline). Returns (generator, record for manifests)."""
    from semples.models.clip import load_clip
    from semples.models.mask_generators import ClipGradCAM, generator_context, load_generator

    gen_cfg = cfg.generator
    clip_cam = gen_cfg.clip_cam if prompts is None else dataclasses.replace(gen_cfg.clip_cam, prompts=prompts)
    gen_cfg = dataclasses.replace(gen_cfg, name="clip_gradcam", clip_cam=clip_cam)
    if source is None and clip_cam.prompts != "handcrafted":
        log.warning("CLIP Grad-CAM with UNTRAINED %s prompts (no run folder given)", clip_cam.prompts)
    if clip is None:
        clip = load_clip(cfg.clip, device)
    ctx_cfg = dataclasses.replace(cfg, generator=gen_cfg)
    generator, record = load_generator(source, gen_cfg, len(classes), context=generator_context(ctx_cfg, classes, clip))
    if not isinstance(generator, ClipGradCAM):
        raise ConfigError(f"{source}: holds a {type(generator).__name__}, not a CLIP Grad-CAM generator")
    return generator, record


def fma_cams(cfg, source: str | Path | None, out_dir: str | Path, *, phase: str = "coarse", split: str | None = None,
             prompts: str | None = None, clip=None, limit: int | None = None, force: bool = False,
             progress: bool = True) -> dict:
    """CLIP Grad-CAM (+ CAA) seeds of a split into a CAM folder, from an experiment config.

    Args:
        cfg: the experiment `Config` (data, clip, generator.clip_cam, cams: scales/flip/eps, fma: CAA and phases).
        source: run folder of fma-classify (phase "coarse"), fma-segment (phase "fine"), or None with
            ``prompts="handcrafted"`` for the training-free CLIP-ES baseline.
        out_dir: the CAM folder.
        phase: "coarse" or "fine": the CAA box threshold (``fma.coarse_box_threshold`` / ``fine_box_threshold``).
        split: dataset split (default ``data.train_split``: FMA seeds feed stage fma-segment and the pseudo masks).
        prompts: override of the generator's prompt set (fresh generators only).
        clip: an already loaded frozen CLIP.

    Returns:
        The CAM folder's manifest.
    """
    from semples.data import build_dataset

    split = split or cfg.data.train_split
    dataset = build_dataset(cfg.data, split)
    device = resolve_device(cfg.device)
    generator, record = fma_generator(cfg, source, dataset.classes, clip, prompts=prompts, device=device)
    box, _ = phase_settings(cfg, phase)
    caa = cfg.fma.caa
    extra = {"generator": record, "phase": phase,
             "data": {"dataset": cfg.data.dataset, "root": cfg.data.root, "split": split, "name": dataset.name}}
    return write_clip_cams(generator, dataset, out_dir, scales=tuple(cfg.cams.scales), flip=cfg.cams.flip,
                           normalize_name=generator.input_norm, caa=caa if caa.enabled else None, box_threshold=box,
                           eps=cfg.cams.eps, device=device, limit=limit, force=force, progress=progress,
                           manifest_extra=extra)


def fma_seeds(cfg, cams_dir: str | Path, out_dir: str | Path, *, phase: str = "coarse", split: str | None = None,
              region_source=None, limit: int | None = None, force: bool = False, progress: bool = True):
    """SAMS seeds (label PNGs) of a CAM folder with the background power of `phase` (``fma.coarse_bg_power`` 0.6 /
    ``fine_bg_power`` 0.7), regions from the ``pseudo`` section (SAM checkpoint or superpixels). The fine seeds are
    FMA-WSSS's pseudo masks. Returns the `PseudoMaskRun`."""
    from semples.data import build_dataset

    split = split or cfg.data.train_split
    dataset = build_dataset(cfg.data, split)
    _, power = phase_settings(cfg, phase)
    return region_vote_seeds(dataset, cams_dir, out_dir, cfg.pseudo, bg_power=power, region_source=region_source,
                             force=force, limit=limit, progress=progress,
                             extra_manifest={"split": split, "phase": phase, "producer": "semples.infer.fma"})


def semples_fma_cams(cfg, cams_in: str | Path, out_dir: str | Path, *, phase: str = "fine", split: str | None = None,
                     clip=None, scale: float = 1.0, limit: int | None = None, force: bool = False,
                     progress: bool = True) -> dict:
    """SemPLeS + FMA: CAA refinement (box threshold of `phase`) of a SemPLeS CAM folder with the attention of the
    experiment's frozen CLIP (``clip`` section; FMA-WSSS: ViT-B-16). Follow with `fma_seeds(..., phase)`."""
    from semples.data import build_dataset
    from semples.models.clip import load_clip

    split = split or cfg.data.train_split
    dataset = build_dataset(cfg.data, split)
    device = resolve_device(cfg.device)
    if clip is None:
        clip = load_clip(cfg.clip, device)
    box, _ = phase_settings(cfg, phase)
    return caa_refine_cam_folder(clip, dataset, cams_in, out_dir, caa=cfg.fma.caa, box_threshold=box, scale=scale,
                                 eps=cfg.cams.eps, device=device, limit=limit, force=force, progress=progress,
                                 manifest_extra={"phase": phase})


__all__ = ["MANIFEST_NAME", "PHASES", "caa_refine_cam_folder", "caa_refine_full", "clip_attention", "clip_seed_maps",
           "fma_cams", "fma_generator", "fma_seeds", "phase_settings", "region_vote_seeds", "resolve_device",
           "semples_fma_cams", "write_clip_cams"]
