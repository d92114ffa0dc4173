"""Images/second of the inference steps on real image sizes (fixtures at ../shared/data or $SEMPLES_FIXTURES).

One function per measured thing, picked with --what (default: all):

  cams   `semples cams` end to end (`semples.infer.cams.generate_cams`): DeiT-S/16 WeakTr generator with random
         weights, K = 20 (VOC), scales 1.0 and 1.2 each with its flip, full resolution, on voc128 images read
         through the VOC reader (DataLoader workers decode and resize), CAM files written (float16, compressed).
         Also reported: the share of the time spent in the generator's forward passes, and peak memory.

    python benchmarks/infer_throughput.py --what cams                    # 24 images of voc128 train, batch 1
    python benchmarks/infer_throughput.py --what cams --images 73 --batch-size 2 --device cuda

  pseudo-threshold, pseudo-crf, pseudo-slic, pseudo-felzenszwalb
         `semples pseudo-masks` (`semples.infer.pseudo_masks.generate_pseudo_masks`) per method on the first
         --pm-images voc128 train images (real sizes, ~500x375) with synthetic seeds (blurred, shifted ground truth
         plus noise, written once in the CAM file format): end to end with --pm-workers processes (start-up
         included), and the compute alone per image in one process.
  sam-regions
         SAM ViT-B automatic mask generator with RANDOM weights on one small image (a quarter of a voc128 image),
         timed once: the cost of region generation, not of quality (weights cannot be downloaded here).

    python benchmarks/infer_throughput.py --what pseudo-threshold pseudo-crf pseudo-slic pseudo-felzenszwalb
    python benchmarks/infer_throughput.py --what sam-regions --sam-points 16

The first group of images (warm-up: worker start, first allocations) is run and left out of the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def fixtures_root() -> Path:
    env = os.environ.get("SEMPLES_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "data"


class TimedGenerator(torch.nn.Module):
    """Wraps a mask generator and accumulates the wall time of its forward passes (synchronised on CUDA)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def forward(self, images: torch.Tensor):
        if images.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.inner(images)
        if images.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def measure_cams(args: argparse.Namespace) -> dict:
    """`generate_cams` images/second with a DeiT-S/16 generator (random weights, K = 20) on voc128."""
    from semples.config import CamConfig, GeneratorConfig
    from semples.data import DataConfig, build_dataset
    from semples.infer.cams import generate_cams
    from semples.models.mask_generators import build_generator

    root = fixtures_root() / "voc128"
    if not (root / "VOC2012" / "JPEGImages").is_dir():
        sys.exit(f"fixtures not found at {root} (set SEMPLES_FIXTURES)")
    cache = tempfile.mkdtemp(prefix="semples-bench-cache-")
    os.environ.setdefault("SEMPLES_CACHE_DIR", cache)
    dataset = build_dataset(DataConfig(dataset="voc", root=str(root), num_workers=args.workers), args.split)
    torch.manual_seed(0)
    gen_cfg = GeneratorConfig(pretrained=False, drop_path=0.0)  # deit_small_patch16_224, WeakTr fusion
    generator = TimedGenerator(build_generator(gen_cfg, 20, quiet=True)).eval()
    cfg = CamConfig(scales=tuple(args.scales), flip=True, batch_size=args.batch_size, group_size=args.group_size,
                    mixed_precision=args.precision)
    device = torch.device(args.device)
    n = min(args.images, len(dataset) - args.group_size)
    warm = range(args.group_size)
    timed = range(args.group_size, args.group_size + n)
    sizes = {dataset.load_image(i).size for i in timed}
    with tempfile.TemporaryDirectory() as out:
        generate_cams(generator, dataset, out, cfg, device=device, indices=warm, num_workers=args.workers,
                      progress=False)
        generator.seconds, generator.calls = 0.0, 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        summary = generate_cams(generator, dataset, out, cfg, device=device, indices=timed,
                                num_workers=args.workers, progress=not args.no_progress)
        wall = time.perf_counter() - t0
    result = {
        "what": "cams", "images": summary.computed, "seconds": wall, "images_per_second": summary.computed / wall,
        "forward_seconds": generator.seconds, "forward_share": generator.seconds / wall,
        "forward_calls": generator.calls, "distinct_sizes": len(sizes),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if device.type == "cuda":
        result["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


# ----------------------------------------------------------------------------------------------- pseudo masks
_SEEDS: dict[str, object] = {}  # one synthetic seed folder per run of this script, shared by the measures


def _voc128_dataset(args: argparse.Namespace):
    from semples.data import DataConfig, build_dataset

    root = fixtures_root() / "voc128"
    if not (root / "VOC2012" / "JPEGImages").is_dir():
        sys.exit(f"fixtures not found at {root} (set SEMPLES_FIXTURES)")
    os.environ.setdefault("SEMPLES_CACHE_DIR", tempfile.mkdtemp(prefix="semples-bench-cache-"))
    return build_dataset(DataConfig(dataset="voc", root=str(root), num_workers=0), args.split)


def synthetic_seeds(args: argparse.Namespace):
    """(dataset, cams folder): CAM-like seeds for the first --pm-images images of voc128 (blurred, shifted ground
    truth plus noise, min-max per class), written once per run in the `semples cams` file format."""
    if "dir" not in _SEEDS:
        import numpy as np
        from scipy import ndimage

        from semples.infer.cam_io import cam_path, save_cam

        dataset = _voc128_dataset(args)
        out = Path(tempfile.mkdtemp(prefix="semples-bench-seeds-"))
        rng = np.random.default_rng(0)
        for i in range(min(args.pm_images, len(dataset))):
            gt = dataset.load_mask(i)
            classes = np.flatnonzero(dataset.labels(i))
            maps = []
            for c in classes:
                m = ndimage.gaussian_filter((gt == c + 1).astype(np.float32), min(gt.shape) / 25)
                m = np.roll(m, tuple(rng.integers(-8, 9, 2)), axis=(0, 1))
                m += 0.3 * ndimage.gaussian_filter(rng.random(gt.shape, dtype=np.float32), 4)
                maps.append((m - m.min()) / (m.max() - m.min() + 1e-6))
            save_cam(cam_path(out, dataset.ids[i]), np.stack(maps), classes)
        _SEEDS.update(dataset=dataset, dir=out)
    return _SEEDS["dataset"], _SEEDS["dir"]


def _pseudo_config(method: str, superpixels: str | None, workers: int):
    from semples.infer.config import PseudoMaskConfig
    from semples.models.regions import SuperpixelConfig

    return PseudoMaskConfig(method=method, workers=workers,
                            superpixels=SuperpixelConfig(method=superpixels or "slic"))


def _measure_pseudo(args: argparse.Namespace, method: str, superpixels: str | None = None) -> dict:
    """`semples pseudo-masks` end to end in a fresh process (interpreter and imports, dataset index, reading
    images and CAM files, --pm-workers processes, writing PNGs), and the compute alone per image in one process.

    The CLI runs as a subprocess on purpose: worker processes are spawned, and a spawned worker re-imports the
    parent's main module; this script's main module imports torch, the `semples` command's does not.
    """
    import json
    import subprocess

    import numpy as np

    from semples.infer.cam_io import cam_path, load_cam
    from semples.infer.pseudo_masks import PseudoMaskMaker

    dataset, cams = synthetic_seeds(args)
    n = min(args.pm_images, len(dataset))
    threshold = 0.3
    maker = PseudoMaskMaker(_pseudo_config(method, superpixels, 0), threshold)
    compute, pixels = [], []
    for i in range(n):
        image = np.asarray(dataset.load_image(i).convert("RGB"))
        maps, classes = load_cam(cam_path(cams, dataset.ids[i]))
        t0 = time.perf_counter()
        maker(image, maps, classes)
        compute.append(time.perf_counter() - t0)
        pixels.append(image.shape[0] * image.shape[1])
    root = fixtures_root() / "voc128"
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "semples", "pseudo-masks", "--set", "data.dataset=voc", "--set",
               f"data.root={root}", "--set", "data.num_workers=0", "--split", args.split, "--cams", str(cams),
               "--out", out, "--method", method, "--threshold", str(threshold), "--limit", str(n),
               "--workers", str(args.pm_workers), "--no-progress"]
        if superpixels:
            cmd += ["--superpixels", superpixels]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=os.environ.copy())
        wall = time.perf_counter() - t0
        manifest = json.loads((Path(out) / "manifest.json").read_text())
    written = manifest["counts"]["written_this_run"]
    loop_s, workers = manifest["last_run"]["seconds"], manifest["last_run"]["compute_processes"]
    label = method + (f" ({superpixels})" if superpixels else "")
    return {
        "what": label, "images": written, "seconds": wall, "images_per_second": written / wall,
        "summary": f"{written / wall:.2f} images/s end to end (`semples pseudo-masks` process, {wall:.1f} s for "
                   f"{written} voc128 images of mean {np.mean(pixels) / 1e3:.0f} kpixel, {workers} worker "
                   f"process(es)); generation loop {written / loop_s:.2f} images/s; compute alone "
                   f"{1 / np.median(compute):.2f} images/s in one process (median {1e3 * np.median(compute):.0f} "
                   f"ms/image); load average {os.getloadavg()[0]:.1f}",
    }


def measure_pseudo_threshold(args: argparse.Namespace) -> dict:
    """Pseudo masks by plain threshold (argmax over t and the CAMs)."""
    return _measure_pseudo(args, "threshold")


def measure_pseudo_crf(args: argparse.Namespace) -> dict:
    """Pseudo masks by threshold + dense CRF on labels (METHOD.md reference parameters, 10 iterations)."""
    return _measure_pseudo(args, "crf")


def measure_pseudo_slic(args: argparse.Namespace) -> dict:
    """Pseudo masks by region voting over SLIC superpixels (default pseudo.superpixels: 100 segments)."""
    return _measure_pseudo(args, "region-vote", "slic")


def measure_pseudo_felzenszwalb(args: argparse.Namespace) -> dict:
    """Pseudo masks by region voting over Felzenszwalb superpixels (scale 300, min size 100)."""
    return _measure_pseudo(args, "region-vote", "felzenszwalb")


def measure_sam_regions(args: argparse.Namespace) -> dict:
    """SAM ViT-B automatic mask generator, RANDOM weights, on one small voc128 image, timed once.

    Random weights: the masks mean nothing and the quality thresholds are set to 0 so that every mask goes
    through the post-processing (a real SAM keeps fewer). The image encoder always runs at 1024 px, whatever the
    image size; the rest scales with points_per_side ** 2 (--sam-points; METHOD.md uses 32).
    """
    import numpy as np

    from semples.models.regions import SamRegions, build_sam

    dataset = _voc128_dataset(args)
    image = dataset.load_image(0).convert("RGB")
    image = np.asarray(image.resize((image.width // 4, image.height // 4)))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_sam("vit_b", None, args.device, random_init=True)
    build = time.perf_counter() - t0
    source = SamRegions(model, points_per_side=args.sam_points, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    t0 = time.perf_counter()
    regions = source(image)
    seconds = time.perf_counter() - t0
    return {
        "what": "sam-regions", "images": 1, "seconds": seconds, "images_per_second": 1 / seconds,
        "summary": f"SAM ViT-B, RANDOM weights, {args.sam_points}x{args.sam_points} points, one "
                   f"{image.shape[1]}x{image.shape[0]} image, fp32 on {args.device}: {seconds:.1f} s "
                   f"({1 / seconds:.3f} images/s; {regions.num_regions} masks; building the model {build:.1f} s); "
                   f"load average {os.getloadavg()[0]:.1f}",
    }


MEASURES: dict[str, Callable[[argparse.Namespace], dict]] = {
    "cams": measure_cams,
    "pseudo-threshold": measure_pseudo_threshold,
    "pseudo-crf": measure_pseudo_crf,
    "pseudo-slic": measure_pseudo_slic,
    "pseudo-felzenszwalb": measure_pseudo_felzenszwalb,
    "sam-regions": measure_sam_regions,
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", nargs="+", choices=list(MEASURES), default=list(MEASURES), help="what to measure")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--split", default="train", help="voc128 split")
    ap.add_argument("--images", type=int, default=24, help="images timed (after the warm-up group)")
    ap.add_argument("--batch-size", type=int, default=1, help="cams.batch_size")
    ap.add_argument("--group-size", type=int, default=8, help="cams.group_size (also the warm-up size)")
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.2])
    ap.add_argument("--precision", default="no", choices=["no", "bf16", "fp16", "auto"])
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--pm-images", type=int, default=12, help="pseudo-mask measures: voc128 images timed")
    ap.add_argument("--pm-workers", type=int, default=2, help="pseudo-mask measures: processes (pseudo.workers)")
    ap.add_argument("--sam-points", type=int, default=16, help="sam-regions: points per side")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, load average {os.getloadavg()[0]:.1f}")
    for what in args.what:
        r = MEASURES[what](args)
        if "summary" in r:  # measures that word their own line
            print(f"{what}: {r['summary']}")
            continue
        extra = f", peak CUDA {r['peak_cuda_gib']:.1f} GiB" if "peak_cuda_gib" in r else ""
        print(f"{what}: {r['images_per_second']:.3f} images/s ({r['images']} images in {r['seconds']:.1f} s, "
              f"generator forward {100 * r['forward_share']:.0f}% of the time in {r['forward_calls']} calls, "
              f"{r['distinct_sizes']} distinct image sizes, batch {args.batch_size}, precision {args.precision}, "
              f"peak RSS {r['peak_rss_gib']:.1f} GiB{extra}, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
