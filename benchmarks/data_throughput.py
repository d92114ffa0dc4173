"""Images/second through the data pipelines on the real fixtures (voc128, coco128), DataLoader with 2 workers.

    python benchmarks/data_throughput.py                      # fixtures at ../shared/data (or $SEMPLES_FIXTURES)
    python benchmarks/data_throughput.py --workers 4 --images 800

Pipelines:
  train      TrainTransform at 224 (random resized crop, flip, RandAugment rand-m9-mstd0.5-inc1, random erasing),
             with masks, batch 8 — what the SemPLeS training stages read;
  multiscale what `semples cams` reads: the one inference runner's loader (`semples.infer.runner.image_loader`)
             with the CAM task's reader (`semples.infer.cams.CamReader`: decode, label, bicubic resize to each scale
             of (1.0, 1.2) as uint8 views; flips and normalisation happen on the device), groups of 32 images.

Figures are steady-state: the first batch (worker start-up, first decodes) is timed separately and left out.

Hook for the step benchmark (loader time / step time of stage match at batch 8)::

    from data_throughput import train_loader_seconds_per_batch     # with benchmarks/ on sys.path
    loader_s = train_loader_seconds_per_batch(DataConfig(dataset="voc", root=...), "train")
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from semples.data import DataConfig, TrainTransformConfig, TransformedDataset, build_dataset, collate
from semples.data.transforms import TrainTransform
from semples.infer.cams import CamReader
from semples.infer.runner import image_loader, make_groups

REPO = Path(__file__).resolve().parents[1]


class EpochKeys(torch.utils.data.Sampler):
    """Yields (index, epoch) keys over as many epochs as needed for `total` items (TransformedDataset seeding)."""

    def __init__(self, n: int, total: int) -> None:
        self.n, self.total = n, total

    def __len__(self) -> int:
        return self.total

    def __iter__(self):
        for k in range(self.total):
            yield (k % self.n, k // self.n)


def _time_loader(loader: torch.utils.data.DataLoader, count_images) -> tuple[float, float, int]:
    """(first-batch seconds, steady seconds, steady images) over one pass of `loader`."""
    it = iter(loader)
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    images = 0
    t1 = time.perf_counter()
    for batch in it:
        images += count_images(batch)
    return first, time.perf_counter() - t1, images


def train_loader(data_cfg: DataConfig, split: str, transform: TrainTransformConfig | None = None,
                 batch_size: int = 8, num_workers: int = 2, total: int = 400) -> torch.utils.data.DataLoader:
    """A DataLoader over the training pipeline (with masks) yielding `total` items."""
    ds = build_dataset(data_cfg, split)
    tds = TransformedDataset(ds, TrainTransform(transform or TrainTransformConfig(crop_size=224)), seed=0,
                             with_mask=ds.has_masks)
    return torch.utils.data.DataLoader(tds, batch_size=batch_size, sampler=EpochKeys(len(tds), total),
                                       num_workers=num_workers, collate_fn=collate, drop_last=True)


def train_loader_seconds_per_batch(data_cfg: DataConfig, split: str, transform: TrainTransformConfig | None = None,
                                   batch_size: int = 8, num_workers: int = 2, batches: int = 30) -> float:
    """Steady-state seconds per batch of the training pipeline (the loader side of loader/step ratios).

    With `num_workers` > 0 this is the time the loader needs per batch when the consumer never waits on
    anything else, i.e. its throughput limit; compare with the step time at the same batch size.
    """
    loader = train_loader(data_cfg, split, transform, batch_size, num_workers, total=(batches + 1) * batch_size)
    _, seconds, images = _time_loader(loader, lambda b: len(b["id"]))
    return seconds / max(1, images // batch_size)


def multiscale_loader(data_cfg: DataConfig, split: str, scales=(1.0, 1.2), num_workers: int = 2,
                      total: int = 200, group_size: int = 32):
    """The loader of `semples cams` over `total` images (cycling through the split): batches are groups of images."""
    ds = build_dataset(data_cfg, split)
    groups = make_groups([k % len(ds) for k in range(total)], group_size)
    return image_loader(ds, groups, CamReader(tuple(scales)), num_workers=num_workers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixtures", default=os.environ.get("SEMPLES_FIXTURES", str(REPO.parent / "shared" / "data")))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images", type=int, default=400, help="images per measurement (several epochs of a fixture)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    fixtures = Path(args.fixtures)
    sets = [("voc128", DataConfig(dataset="voc", root=str(fixtures / "voc128")), "train"),
            ("coco128", DataConfig(dataset="coco", root=str(fixtures / "coco128")), "train2017")]
    if not (fixtures / "voc128").is_dir():
        print(f"fixtures not found at {fixtures}", file=sys.stderr)
        return 1
    print(f"workers {args.workers}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    print(f"{'pipeline':<34} {'dataset':<8} {'images/s':>9} {'s/batch':>8} {'first batch s':>14}")
    for name, cfg, split in sets:
        loader = train_loader(cfg, split, batch_size=8, num_workers=args.workers, total=args.images)
        first, secs, n = _time_loader(loader, lambda b: len(b["id"]))
        print(f"{'train 224 RandAugment, batch 8':<34} {name:<8} {n / secs:>9.1f} {secs / (n / 8):>8.3f} "
              f"{first:>14.2f}")
    for name, cfg, split in sets:
        loader = multiscale_loader(cfg, split, num_workers=args.workers, total=args.images // 2, group_size=8)
        first, secs, n = _time_loader(loader, len)
        print(f"{'cams reader 1.0,1.2 uint8, group 8':<34} {name:<8} {n / secs:>9.1f} {secs / (n / 8):>8.3f} "
              f"{first:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
