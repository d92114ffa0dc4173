"""DeepLabV3+ on segmentation_models_pytorch against the hand-written DeepLabV3+ it replaced (issue 13): train-seg
seconds per step and predict images per second, at the same size, measured in one run, interleaved A/B.

The hand-written model is read from git (``git show <baseline>:src/semples/models/segmenters/deeplab.py``, the
commit before it was deleted) and built with the same encoder and widths: the same timm ResNet (dilated to output
stride 16), ASPP rates 6/12/18, ``decoder_channels`` wide, 48 low-level channels (SMP's fixed width). SMP is
measured with its default separable ASPP/decoder convolutions and with ordinary ones (``aspp_separable: false``,
the hand-written model's kind).

A train step = the segment stage's loss (cross-entropy), backward and an AdamW step on a batch of random images
and masks; predict = `semples.infer.segment.segment_probs` at one scale on one image, under no_grad. Each round
times every model once per measure, in an order that alternates between rounds; the figures are medians over
rounds and the paired ratio SMP / hand-written (mean and 95% interval over rounds). Both wall time and this
process's CPU time are taken: on a machine shared with other jobs the CPU time (with ``--threads 1``, so no
thread spins on a barrier) measures the work each model needs, the wall time also the others' load.

    python benchmarks/segmenter_throughput.py --rounds 7
    python benchmarks/segmenter_throughput.py --size default --rounds 5      (ResNet-101, 256 wide)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import paired, read_load  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINE = "ea03f4e"  # the last commit with the hand-written DeepLabV3+

SIZES = {
    # the demo's final model (synth_demo.yaml): a half-width ResNet-18, 64-wide decoder; 96 px crops, batch 16
    "demo": {"encoder": "resnet18", "encoder_kwargs": {"channels": [32, 64, 128, 256], "stem_width": 32},
             "decoder_channels": 64, "batch": 16, "crop": 96, "predict": (240, 320)},
    # the default final model (ResNet-101, OS 16, 256 wide) at CPU-sized inputs
    "default": {"encoder": "resnet101", "encoder_kwargs": {}, "decoder_channels": 256, "batch": 2, "crop": 192,
                "predict": (240, 320)},
}


def hand_written_class():
    """DeepLabV3Plus of the baseline commit, imported from a temporary copy of its file."""
    code = subprocess.run(["git", "show", f"{BASELINE}:src/semples/models/segmenters/deeplab.py"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "handwritten_deeplab.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("handwritten_deeplab", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(kind: str, size: dict, num_classes: int):
    from semples.config import SegmenterConfig
    from semples.models.segmenters import build_segmenter

    torch.manual_seed(0)
    if kind == "hand-written":
        module = hand_written_class()
        from semples.models.segmenters.base import create_timm_backbone

        backbone = create_timm_backbone(size["encoder"], pretrained=False, checkpoint=None,
                                        kwargs=size["encoder_kwargs"], quiet=True, features_only=True,
                                        out_indices=(1, 4), output_stride=16)
        return module.DeepLabV3Plus(backbone, num_classes, channels=size["decoder_channels"], low_level_channels=48,
                                    rates=(6, 12, 18), dropout=0.1, output_stride=16)
    cfg = SegmenterConfig(arch="deeplabv3plus", encoder=f"tu-{size['encoder']}", encoder_kwargs=size["encoder_kwargs"],
                          pretrained=False, decoder_channels=size["decoder_channels"],
                          aspp_separable=kind == "smp (separable)")
    return build_segmenter(cfg, num_classes, quiet=True)


def train_step_seconds(model, batch: int, crop: int, num_classes: int, steps: int) -> float:
    from semples.losses.segmentation import segmentation_cross_entropy

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, crop, crop, generator=g)
    y = torch.randint(0, num_classes, (batch, crop, crop), generator=g)
    times, cpu = [], []
    for _ in range(steps + 1):  # the first step warms up (allocator, oneDNN kernels)
        t, c = time.perf_counter(), time.process_time()
        loss = segmentation_cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return float(np.median(times[1:])), float(np.median(cpu[1:]))


@torch.no_grad()
def predict_images_per_second(model, size: tuple[int, int], images: int) -> float:
    from semples.infer.segment import segment_probs

    model.eval()
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
    segment_probs(model, x)  # warm-up
    t, c = time.perf_counter(), time.process_time()
    for _ in range(images):
        segment_probs(model, x).argmax(1)
    return images / (time.perf_counter() - t), images / (time.process_time() - c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=list(SIZES), default="demo")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="timed train steps per model and round (median)")
    p.add_argument("--images", type=int, default=6, help="timed predictions per model and round")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size, k = SIZES[args.size], 7
    kinds = ["hand-written", "smp (separable)", "smp (ordinary convs)"]
    models = {kind: build(kind, size, k) for kind in kinds}
    params = {kind: sum(p.numel() for p in m.parameters()) for kind, m in models.items()}
    loads = [read_load()[0]]
    figures = {name: {kind: [] for kind in kinds} for name in ("step_wall", "step_cpu", "rate_wall", "rate_cpu")}
    for r in range(args.rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]  # interleaved, alternating order
        for kind in order:
            wall, cpu = train_step_seconds(models[kind], size["batch"], size["crop"], k, args.steps)
            figures["step_wall"][kind].append(wall)
            figures["step_cpu"][kind].append(cpu)
            wall, cpu = predict_images_per_second(models[kind], size["predict"], args.images)
            figures["rate_wall"][kind].append(wall)
            figures["rate_cpu"][kind].append(cpu)
        loads.append(read_load()[0])
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{kind} {figures['step_cpu'][kind][-1]:.3f} cpu-s/step {figures['rate_cpu'][kind][-1]:.2f} img/cpu-s"
            for kind in kinds), flush=True)
    base = "hand-written"
    result = {"size": args.size, "settings": {**size, "predict": list(size["predict"])}, "rounds": args.rounds,
              "threads": torch.get_num_threads(), "load_1min": {"min": min(loads), "max": max(loads),
                                                                  "median": float(np.median(loads))},
              "parameters": params, "models": {}}
    for kind in kinds:
        entry = {f"median_{name}": float(np.median(values[kind])) for name, values in figures.items()}
        if kind != base:
            for name, values in figures.items():
                entry[f"ratio_{name}_vs_hand_written"] = paired([a / b for a, b in zip(values[kind], values[base])])
        result["models"][kind] = entry
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
