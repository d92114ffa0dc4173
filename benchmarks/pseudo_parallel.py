"""`semples pseudo-masks` on one process against several: the speed-up of the CRF / superpixel worker pool, and a
check that the masks are the same bytes.

Each round runs the `semples pseudo-masks` command (a fresh process, as a user runs it) twice on the same seeds, once
with ``--workers 1`` (everything in the one process) and once with ``--workers N`` (default 2: the dense CRF or the
superpixels in N spawned worker processes, reading and writing in the main one), into fresh folders. The order
alternates between rounds (1 then N, N then 1, ...), so load from other jobs hits both alike; the figure is the
median over rounds of the per-round ratio time(1) / time(N), with its range. Two times are reported:

- *end to end*: the command's wall time (interpreter, imports, dataset index, worker start-up, reading, writing);
- *loop*: the generation loop alone, as the folder's manifest records it (``last_run.seconds``).

CPU seconds (the command's process and its workers, from ``getrusage(RUSAGE_CHILDREN)``) are printed beside: with
N workers the work is the same, so CPU(N) / CPU(1) near 1 says the pool adds little overhead, and a wall ratio far
below N with CPU ratio near 1 says the cores were busy with something else.

Images: the first --images images of the VOC-layout folder --root (default: the voc128 fixtures at
../shared/data/voc128 or $SEMPLES_FIXTURES/voc128, real VOC sizes), else a synthetic VOC folder made here
(--synthetic, or when no fixtures are found). Seeds: the ground truth blurred, shifted and noised, written once in
the `semples cams` file format. Every PNG of every run is compared byte for byte with the first 1-process run.

    python benchmarks/pseudo_parallel.py                      # 24 voc128 images, dense CRF, 3 rounds
    python benchmarks/pseudo_parallel.py --method region-vote --images 24 --rounds 3
    python benchmarks/pseudo_parallel.py --tiny               # seconds: the test suite's mode

Prints its figures (and writes them as JSON with --out); never a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VOC_CLASSES = 20


def fixtures_root() -> Path:
    env = os.environ.get("SEMPLES_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "data"


# ------------------------------------------------------------------------------------------------------ inputs
def make_synthetic_voc(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """A VOC2012 layout under `folder` with `n` images of `size` (H, W): 1-3 ellipses of random VOC classes on a
    smooth noisy background, their exact masks, and ``train.txt`` listing them. Returns `folder`."""
    from PIL import Image

    from semples.data.io import write_mask_png

    voc = folder / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    ids = []
    for i in range(n):
        image_id = f"synth_{i:04d}"
        base = rng.integers(60, 160, size=3)
        img = np.clip(base + rng.normal(0, 18, size=(h, w, 3)), 0, 255)
        mask = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(1, VOC_CLASSES + 1))
            cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
            ry, rx = rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            img[inside] = np.clip(rng.integers(0, 256, size=3) + rng.normal(0, 12, size=(int(inside.sum()), 3)),
                                  0, 255)
            mask[inside] = k
        Image.fromarray(img.astype(np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=92)
        write_mask_png(voc / "SegmentationClass" / f"{image_id}.png", mask)
        ids.append(image_id)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    return folder


def write_seeds(dataset, out: Path, n: int, seed: int = 0) -> None:
    """CAM-like seeds of the first `n` images: each present class's mask blurred, shifted a few pixels, plus
    smooth noise, min-max scaled; saved as `semples cams` writes them."""
    from scipy import ndimage

    from semples.infer.cam_io import cam_path, save_cam

    rng = np.random.default_rng(seed)
    for i in range(n):
        gt = dataset.load_mask(i)
        classes = np.flatnonzero(dataset.labels(i))
        maps = []
        for c in classes:
            m = ndimage.gaussian_filter((gt == c + 1).astype(np.float32), max(min(gt.shape) / 25, 1.0))
            m = np.roll(m, tuple(int(s) for s in rng.integers(-8, 9, 2)), axis=(0, 1))
            m += 0.3 * ndimage.gaussian_filter(rng.random(gt.shape, dtype=np.float32), 4)
            maps.append((m - m.min()) / (m.max() - m.min() + 1e-6))
        maps = np.stack(maps) if maps else np.zeros((0, *gt.shape), np.float32)
        save_cam(cam_path(out, dataset.ids[i]), maps, classes)


# ------------------------------------------------------------------------------------------------------ one run
def run_command(root: Path, split: str, cams: Path, out: Path, *, method: str, workers: int, images: int,
                threshold: float, env: dict) -> dict:
    """One `semples pseudo-masks` process into `out`: wall and CPU seconds, and the manifest's loop seconds."""
    cmd = [sys.executable, "-m", "semples", "pseudo-masks", "--set", "data.dataset=voc", "--set",
           f"data.root={root}", "--set", "data.num_workers=0", "--split", split, "--cams", str(cams),
           "--out", str(out), "--method", method, "--limit", str(images), "--workers", str(workers),
           "--no-progress"]
    if method in ("crf", "threshold"):
        cmd += ["--threshold", str(threshold)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    last = manifest.get("last_run", {})
    return {"workers": workers, "wall": wall,
            "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "loop": float(last.get("seconds", float("nan"))), "compute_processes": last.get("compute_processes"),
            "written": manifest.get("counts", {}).get("written_this_run")}


def png_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def ratio_line(num: list[float], den: list[float]) -> tuple[float, float, float]:
    r = [a / b for a, b in zip(num, den, strict=True)]
    return float(np.median(r)), float(min(r)), float(max(r))


# ------------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=None, help="a VOC-layout folder (default: the voc128 fixtures)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--synthetic", action="store_true", help="a synthetic VOC folder made here (no fixtures)")
    ap.add_argument("--size", type=int, nargs=2, default=[375, 500], metavar=("H", "W"),
                    help="image size of the synthetic folder (VOC's usual 375x500)")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--method", default="crf", choices=["crf", "region-vote"],
                    help="crf: threshold + dense CRF; region-vote: SLIC superpixel voting (the CPU-bound methods)")
    ap.add_argument("--workers", type=int, default=2, help="processes of the parallel run (against 1)")
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--tiny", action="store_true", help="12 synthetic 96x128 images, one round (seconds)")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.tiny:
        args.synthetic, args.size, args.images, args.rounds = True, [96, 128], 12, 1
    if args.images < 4 * args.workers:  # the runner keeps a handful of images in one process
        ap.error(f"--images must be >= 4 x --workers ({4 * args.workers}) for the worker pool to be used")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from semples.data import DataConfig, build_dataset

    work = Path(tempfile.mkdtemp(prefix="semples-pseudo-parallel-"))
    env = {**os.environ, "SEMPLES_CACHE_DIR": str(work / "cache")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    os.environ["SEMPLES_CACHE_DIR"] = env["SEMPLES_CACHE_DIR"]
    try:
        if args.root:
            root, source = Path(args.root), args.root
        elif not args.synthetic and (fixtures_root() / "voc128" / "VOC2012" / "JPEGImages").is_dir():
            root, source = fixtures_root() / "voc128", "voc128 fixtures"
        else:
            root = make_synthetic_voc(work / "voc", args.images, tuple(args.size))
            source = f"synthetic VOC folder, {args.size[0]}x{args.size[1]}"
        dataset = build_dataset(DataConfig(dataset="voc", root=str(root), num_workers=0), args.split)
        n = min(args.images, len(dataset))
        cams = work / "cams"
        write_seeds(dataset, cams, n)
        pixels = [np.prod(dataset.load_image(i).size) for i in range(n)]

        load_before = os.getloadavg()
        print(f"{platform.machine()}, {os.cpu_count()} CPUs (affinity {len(os.sched_getaffinity(0))}), "
              f"python {platform.python_version()}, load {tuple(round(x, 2) for x in load_before)}")
        print(f"`semples pseudo-masks --method {args.method}` on {n} images of {source} (mean "
              f"{np.mean(pixels) / 1e3:.0f} kpixel), --workers 1 against --workers {args.workers}, {args.rounds} "
              f"round(s), order alternating")
        runs: dict[int, list[dict]] = {1: [], args.workers: []}
        outputs: list[tuple[int, dict[str, bytes]]] = []  # (workers, PNG bytes by name) of every run
        for r in range(args.rounds):
            order = (1, args.workers) if r % 2 == 0 else (args.workers, 1)
            for workers in order:
                out = work / f"masks_w{workers}_r{r}"
                result = run_command(root, args.split, cams, out, method=args.method, workers=workers, images=n,
                                     threshold=args.threshold, env=env)
                runs[workers].append(result)
                outputs.append((workers, png_bytes(out)))
                shutil.rmtree(out)
                print(f"  round {r + 1}, --workers {workers}: {result['wall']:6.2f} s end to end, loop "
                      f"{result['loop']:6.2f} s, CPU {result['cpu']:6.2f} s, compute processes "
                      f"{result['compute_processes']}, {result['written']} written")
        reference = next(got for workers, got in outputs if workers == 1)
        identical = all(got == reference for _, got in outputs)
        assert len(reference) == n, f"the 1-process run wrote {len(reference)} of {n} masks"
        one, many = runs[1], runs[args.workers]
        figures = {}
        for key in ("wall", "loop", "cpu"):
            figures[key] = ratio_line([x[key] for x in one], [x[key] for x in many])
        load_after = os.getloadavg()
        w = args.workers
        print(f"1 / {w} processes, end to end: median {figures['wall'][0]:.2f}x (range {figures['wall'][1]:.2f}-"
              f"{figures['wall'][2]:.2f}); loop: median {figures['loop'][0]:.2f}x (range {figures['loop'][1]:.2f}-"
              f"{figures['loop'][2]:.2f}); CPU seconds 1 / {w}: median {figures['cpu'][0]:.2f}")
        print(f"masks byte for byte identical between 1 and {w} processes: {identical} ({len(reference)} PNGs per "
              f"run); load after {tuple(round(x, 2) for x in load_after)}")
        result = {"method": args.method, "images": n, "source": source, "workers": w, "rounds": args.rounds,
                  "mean_kpixel": float(np.mean(pixels) / 1e3), "runs": runs,
                  "ratio_wall": figures["wall"], "ratio_loop": figures["loop"], "ratio_cpu": figures["cpu"],
                  "identical": bool(identical), "load_before": load_before, "load_after": load_after,
                  "cpus": os.cpu_count(), "machine": platform.machine()}
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1, default=str))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
