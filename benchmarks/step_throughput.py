"""Seconds per training step of stages match, prompt and refine, and how much of it is unavoidable work.

Fixed setup (issue 2): CLIP ViT-B/32 with random weights, mask generator DeiT-S/16 (random weights, trunk frozen
as in the reference), VOC's 20 classes, batch 8 at 224 px, ~1.5 labels per image.

Unavoidable work, each part timed alone in the same run:
  match / refine: S forward on B images + backward through S's trainable parts,
                  CLIP image tower forward + backward-to-input on 2P masked images (P positive pairs)
  prompt:         S forward (no grad) on B images, text tower forward + backward on the prompts of the classes in
                  the batch, CLIP image forward (no grad) on P background images
Everything else (masking, normalisation, losses, optimiser, Python) is overhead.
ratio = (sum of the unavoidable parts) / (full step). Target >= 0.9 on CPU.

    python benchmarks/step_throughput.py [--precision no|bf16|auto] [--repeats 5] [--stages match prompt refine]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch

from semples.config import ClipConfig, GeneratorConfig, LossConfig, MaskingConfig, PromptConfig
from semples.engine.device import resolve_precision
from semples.models.clip import PromptTextEncoder, load_clip
from semples.models.mask_generators import build_generator
from semples.stages import MatchStage, PromptStage, RefineStage

VOC = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table", "dog",
       "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv monitor"]


def make_batch(batch: int, size: int, k: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch, k)
    for i in range(batch):  # 1 or 2 classes per image, as in VOC (~1.5 on average)
        for c in torch.randperm(k, generator=g)[: 1 + (i % 2)]:
            labels[i, c] = 1
    return {"image": torch.randn(batch, 3, size, size, generator=g), "labels": labels}


def timed(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_stage(name, clip, batch, classes, p, k, args, autocast, sync, generator, device):
    """Times one stage's full step and its unavoidable parts; prints them; returns (name, s/step, ratio)."""
    loss, masking = LossConfig(), MaskingConfig()
    gen = generator()
    prompts = PromptTextEncoder(clip, k, length=PromptConfig().length).to(device)
    if name == "match":
        stage = MatchStage(gen, clip, VOC, loss=loss, masking=masking)
    elif name == "prompt":
        stage = PromptStage(gen, prompts, clip, VOC, loss=loss, masking=masking)
    else:
        stage = RefineStage(gen, prompts, clip, VOC, loss=loss, masking=masking)
    stage.to(device).train()
    opt = torch.optim.AdamW([q for q in stage.parameters() if q.requires_grad], lr=1e-4)

    def full_step():
        b = {key: v.to(device, non_blocking=True) for key, v in batch.items()}
        with autocast():
            out = stage(b)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()

    images = batch["image"]
    parts = {}
    if name in ("match", "refine"):
        def gen_fwd_bwd():
            with autocast():
                cam = gen(images).cam
            cam.float().sum().backward()
            gen.zero_grad(set_to_none=True)
            sync()

        def clip_fwd_bwd():
            x = torch.randn(2 * p, 3, args.size, args.size, device=device, requires_grad=True)
            with autocast():
                f = clip.encode_image(x)
            f.float().sum().backward()
            sync()

        parts = {"S fwd+bwd (B)": gen_fwd_bwd, "CLIP image fwd+bwd-to-input (2P)": clip_fwd_bwd}
    else:
        def gen_fwd():
            with torch.no_grad(), autocast():
                gen(images)
            sync()

        def text_fwd_bwd():
            with autocast():
                u = prompts(classes)
            u.float().sum().backward()
            prompts.zero_grad(set_to_none=True)
            sync()

        def clip_fwd():
            x = torch.randn(p, 3, args.size, args.size, device=device)
            with torch.no_grad(), autocast():
                clip.encode_image(x)
            sync()

        parts = {"S fwd (B)": gen_fwd, "text fwd+bwd (classes in batch)": text_fwd_bwd,
                 "CLIP image fwd (P)": clip_fwd}
    # interleave measurements so machine noise hits all of them alike
    full = timed(full_step, args.repeats, args.warmup)
    part_times = {label: timed(fn, args.repeats, args.warmup) for label, fn in parts.items()}
    full2 = timed(full_step, args.repeats, 0)
    full = min(full, full2)
    unavoidable = sum(part_times.values())
    ratio = unavoidable / full
    print(f"\nstage {name}: {full:.3f} s/step ({args.batch / full:.1f} images/s)")
    for label, t in part_times.items():
        print(f"  {label:<36s} {t:.3f} s")
    print(f"  {'unavoidable total':<36s} {unavoidable:.3f} s   ratio unavoidable/full = {ratio:.3f}")
    return name, full, ratio


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", default="auto", choices=["auto", "no", "bf16", "fp16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--stages", nargs="+", default=["match", "prompt", "refine"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--loader-ratio", metavar="VOC_ROOT",
                    help="also run stage match on real data from this VOC-layout folder (e.g. ../shared/data/voc128) "
                         "and report the share of each step spent waiting for the loader")
    ap.add_argument("--workers", type=int, default=2, help="loader workers for --loader-ratio")
    ap.add_argument("--loader-steps", type=int, default=12, help="steps measured for --loader-ratio")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device.type)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch.manual_seed(0)
    clip = load_clip(ClipConfig(arch="ViT-B-32", pretrained="none"), device)
    k = len(VOC)
    batch = make_batch(args.batch, args.size, k)
    batch = {key: v.to(device) for key, v in batch.items()}
    p = int(batch["labels"].sum())
    classes = batch["labels"].nonzero()[:, 1].unique()
    print(f"device {device} ({platform.processor() or platform.machine()}), threads {torch.get_num_threads()}, "
          f"precision {precision}, batch {args.batch} at {args.size}px, P={p} positive pairs, "
          f"{len(classes)} classes in the batch")

    def generator():
        g = build_generator(GeneratorConfig(pretrained=False), k, quiet=True).to(device)
        return g

    results = [measure_stage(name, clip, batch, classes, p, k, args, autocast, sync, generator, device)
               for name in args.stages]
    print("\nsummary: " + ", ".join(f"{n} {t:.3f} s/step ratio {r:.2f}" for n, t, r in results))
    if args.loader_ratio:
        loader_ratio(args, clip, generator, autocast, device)


def loader_ratio(args, clip, generator, autocast, device) -> None:
    """Stage match fed by the real data pipeline (voc128 fixture, the engine's loader, 2 workers): how long each
    step waits for its batch, against the step time. The loader runs beside the step on the same cores."""
    from semples.config import StageConfig
    from semples.data import DataConfig, TransformedDataset, build_dataset, collate
    from semples.data.transforms import TrainTransform
    from semples.engine.sampler import EpochShardSampler

    ds = build_dataset(DataConfig(dataset="voc", root=args.loader_ratio), "train")
    tcfg = StageConfig().transform  # the match stage's augmentation: RRC 224, flip, RandAugment, erasing
    data = TransformedDataset(ds, TrainTransform(tcfg), seed=0)
    sampler = EpochShardSampler(len(data), args.batch, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch, sampler=sampler, num_workers=args.workers,
                                         collate_fn=collate, persistent_workers=True)
    names = list(ds.classes.prompt_names)
    stage = MatchStage(generator(), clip, names, loss=LossConfig(), masking=MaskingConfig()).to(device).train()
    opt = torch.optim.AdamW([q for q in stage.parameters() if q.requires_grad], lr=1e-4)
    waits, steps = [], []
    epoch = 0
    while len(steps) < args.loader_steps + 2:
        sampler.set_epoch(epoch)
        epoch += 1
        it = iter(loader)
        while len(steps) < args.loader_steps + 2:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            b = {key: (v.to(device) if isinstance(v, torch.Tensor) else v) for key, v in batch.items()}
            with autocast():
                out = stage(b)
            out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            waits.append(t1 - t0)
            steps.append(t2 - t0)
    waits, steps = waits[2:], steps[2:]  # leave out worker start-up
    wait, step = statistics.mean(waits), statistics.mean(steps)
    print(f"\nstage match on voc128 through the engine's loader ({args.workers} workers, batch {args.batch}, "
          f"{len(steps)} steps): {step:.3f} s/step, waiting for data {wait:.3f} s/step -> "
          f"loader-wait / step = {wait / step:.3f}")


if __name__ == "__main__":
    main()
