"""The GPU figures of issue 14, item 5, from one command (written before any GPU was lent; ≤ 8 minutes on one).

    python benchmarks/gpu_suite.py                      # on a CUDA machine: all sections, VOC preset sizes
    python benchmarks/gpu_suite.py --tiny               # CPU, toy sizes, seconds (what the test suite runs)
    python benchmarks/gpu_suite.py --what match cams --out runs/gpu.json --peak-tflops 989.5

Sections (RANDOM weights everywhere: speed only, never quality):

  match, prompt, refine   one optimiser step of each SemPLeS stage at the VOC preset: CLIP ViT-B/32 (custom blocks =
                          SDPA, flash attention on GPU), WeakTr DeiT-S/16 (trunk frozen), K = 20, batch 64 at 224 px
                          (~1.5 labels per image: 96 positive pairs), bf16 autocast, AdamW; every loss is read back
                          as a float each step, as the engine does. Reported: s/step, images/s, FLOPs per step
                          (`torch.utils.flop_counter`: matmuls, convolutions, attention = the model passes), achieved
                          TFLOP/s, MFU = achieved / the device's dense bf16 peak, peak GPU memory — and the same for
                          the stage's CLIP pass alone (image tower fwd + bwd-to-input on the 2P masked images for
                          match/refine; text fwd + bwd of the batch's prompts for prompt), the MFU to aim at (≥ 40%).
  cams                    `semples cams` end to end (`generate_cams`: DataLoader workers decoding and resizing, the
                          generator, upsampling, compressed float16 files) on random 480x640 JPEGs at VOC scales
                          1.0, 1.2 + flips, cams.batch_size 4, fp32 (the cams default); images/s, peak memory.
                          "default" is what `semples cams` runs (the lean path, item 1, at these sizes);
                          "materialised" keeps every attention map (the path before item 1), for comparison.
  sam                     SAM ViT-H automatic mask generation, 32² points, on a random 480x640 image (quality
                          thresholds 0, so every mask goes through post-processing: an upper bound); s/image.
  train_seg               DeepLabV3+ ResNet-101 at 512², batch 16, bf16 autocast, AdamW: s/step, images/s, MFU, peak
                          memory; contiguous and channels_last (item 6).

The device's peak comes from `PEAK_BF16_TFLOPS` (dense tensor-core bf16, no sparsity) by its CUDA name, or from
``--peak-tflops``; unknown devices report MFU as null. Everything is also written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import read_load, write_json  # noqa: E402

# dense bf16 tensor-core peak in TFLOP/s by a substring of torch.cuda.get_device_name(); first match wins
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.5),
    ("H100 NVL", 835.5),
    ("H100 PCIe", 756.5),
    ("H100", 989.4),  # SXM ("NVIDIA H100 80GB HBM3")
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.05),
    ("L4", 121.0),
    ("RTX 6000 Ada", 364.2),
    ("RTX 4090", 165.2),
    ("RTX A6000", 154.8),
)
SECTIONS = ("match", "prompt", "refine", "cams", "sam", "train_seg")
VOC = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table", "dog",
       "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv monitor"]


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """(dense bf16 peak in TFLOP/s or None, where it came from)."""
    if override:
        return float(override), "--peak-tflops"
    if device.type != "cuda":
        return None, "no table entry for non-CUDA devices (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops, f"table: {key}"
    return None, f"{name!r} is not in PEAK_BF16_TFLOPS (pass --peak-tflops)"


def _register_cpu_attention_flops() -> None:
    """The flop counter knows the CUDA attention kernels only; count CPU flash attention the same way."""
    from torch.utils import flop_counter as fc

    fwd = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is None or fwd in fc.flop_registry or fwd.default in fc.flop_registry:
        return
    fc.register_flop_formula(fwd)(
        lambda query_shape, key_shape, value_shape, *a, out_shape=None, **k: fc.sdpa_flop_count(
            query_shape, key_shape, value_shape))
    if bwd is not None:
        fc.register_flop_formula(bwd)(
            lambda grad_out_shape, query_shape, key_shape, value_shape, *a, out_shape=None, **k:
            fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape))


# ---------------------------------------------------------------------------------------------------- sizes
@dataclass
class Sizes:
    """Everything that differs between the real suite and --tiny."""

    clip_arch: str = "ViT-B-32"
    generator_kwargs: dict = field(default_factory=dict)  # timm kwargs of the DeiT-S/16 trunk ({}: the real one)
    batch: int = 64
    image: int = 224
    steps: int = 10
    warmup: int = 3
    cam_images: int = 16
    cam_warmup: int = 4
    cam_size: tuple[int, int] = (480, 640)
    cam_scales: tuple[float, ...] = (1.0, 1.2)
    cam_workers: int = 4
    sam: str = "vit_h"
    sam_points: int = 32
    sam_images: int = 2
    sam_size: tuple[int, int] = (480, 640)
    seg_kwargs: dict = field(default_factory=dict)  # SegmenterConfig overrides ({}: DeepLabV3+ R101)
    seg_batch: int = 16
    seg_size: int = 512
    seg_steps: int = 10


TINY = Sizes(clip_arch="tiny-clip", generator_kwargs={"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 64},
             batch=4, image=64, steps=2, warmup=1, cam_images=2, cam_warmup=1, cam_size=(48, 64), cam_workers=0,
             sam="tiny", sam_points=4, sam_images=1, sam_size=(40, 56),
             seg_kwargs={"encoder": "tu-resnet18", "decoder_channels": 16,
                         "encoder_kwargs": {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128],
                                            "stem_width": 16}},
             seg_batch=2, seg_size=32, seg_steps=1)


class Env:
    """Device, precision, peak and the timing/memory helpers every section uses."""

    def __init__(self, device: torch.device, sizes: Sizes, peak: float | None, precision: str) -> None:
        self.device, self.sizes, self.peak = device, sizes, peak
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None

    def timed(self, fn, steps: int, warmup: int) -> tuple[float, float | None]:
        """(median seconds per call after `warmup` calls, peak GPU GiB during the timed calls)."""
        for _ in range(warmup):
            fn()
        self.sync()
        self.reset_peak()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        return float(np.median(times)), self.peak_gib()

    def flops(self, fn) -> int:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            fn()
        self.sync()
        return int(counter.get_total_flops())

    def rates(self, flops: int, seconds: float) -> dict:
        achieved = flops / seconds / 1e12
        return {"flops": flops, "tflops_per_s": round(achieved, 3),
                "mfu": round(achieved / self.peak, 4) if self.peak else None}


# ---------------------------------------------------------------------------------------------- the stages
def make_batch(batch: int, size: int, k: int, device: torch.device) -> dict:
    """Random images with 1 or 2 classes each, as VOC (~1.5 on average); same recipe as step_throughput.py."""
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(batch, k)
    for i in range(batch):
        for c in torch.randperm(k, generator=g)[: 1 + (i % 2)]:
            labels[i, c] = 1
    return {"image": torch.randn(batch, 3, size, size, generator=g).to(device), "labels": labels.to(device)}


def stage_section(name: str, env: Env, clip) -> dict:
    from semples.config import GeneratorConfig, LossConfig, MaskingConfig, PromptConfig
    from semples.models.clip import PromptTextEncoder
    from semples.models.mask_generators import build_generator
    from semples.stages import MatchStage, PromptStage, RefineStage

    s, dev, k = env.sizes, env.device, len(VOC)
    torch.manual_seed(0)
    gen = build_generator(GeneratorConfig(pretrained=False, backbone_kwargs=s.generator_kwargs), k, quiet=True)
    prompts = PromptTextEncoder(clip, k, length=PromptConfig().length)
    loss, masking = LossConfig(), MaskingConfig()
    if name == "match":
        stage = MatchStage(gen, clip, VOC, loss=loss, masking=masking)
    elif name == "prompt":
        stage = PromptStage(gen, prompts, clip, VOC, loss=loss, masking=masking)
    else:
        stage = RefineStage(gen, prompts, clip, VOC, loss=loss, masking=masking)
    stage.to(dev).train()
    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=1e-4)
    batch = make_batch(s.batch, s.image, k, dev)
    pairs = int(batch["labels"].sum())
    classes = batch["labels"].nonzero()[:, 1].unique()

    def step():
        with env.autocast():
            out = stage(batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {key: float(v.detach()) for key, v in out.items()}  # the engine reads every loss every step

    sec, mem = env.timed(step, s.steps, s.warmup)
    res = {"s_per_step": round(sec, 4), "images_per_s": round(s.batch / sec, 2), **env.rates(env.flops(step), sec),
           "peak_gpu_gib": mem, "batch": s.batch, "positive_pairs": pairs}

    if name == "prompt":
        def clip_pass():
            with env.autocast():
                u = prompts(classes)
            u.float().sum().backward()
            prompts.zero_grad(set_to_none=True)
        label = f"text fwd+bwd ({len(classes)} prompts, {prompts.eot_position + 1} positions)"
    else:
        x0 = torch.randn(2 * pairs, 3, s.image, s.image, device=dev)

        def clip_pass():
            x = x0.clone().requires_grad_(True)
            with env.autocast():
                f = clip.encode_image(x)
            f.float().sum().backward()
        label = f"image fwd+bwd-to-input ({2 * pairs} images)"
    csec, cmem = env.timed(clip_pass, s.steps, s.warmup)
    res["clip_pass"] = {"what": label, "seconds": round(csec, 4), **env.rates(env.flops(clip_pass), csec),
                        "peak_gpu_gib": cmem}
    return res


# ------------------------------------------------------------------------------------------------------ cams
class RandomImages:
    """A `SegmentationDataset` of random RGB images of one size with 1-2 of K classes each (built lazily)."""

    def __new__(cls, n: int, size: tuple[int, int], k: int):
        from PIL import Image

        from semples.data.base import ClassTable, SegmentationDataset

        class _Images(SegmentationDataset):
            name = "random"

            def __init__(self) -> None:
                self.classes = ClassTable(tuple(VOC[:k]), tuple(VOC[:k]))
                self.ids = [f"rand{i:04d}" for i in range(n)]

            def labels(self, index: int) -> np.ndarray:
                lab = np.zeros(k, np.float32)
                lab[[index % k, (3 * index + 1) % k][: 1 + index % 2]] = 1
                return lab

            def load_image(self, index: int):
                rng = np.random.default_rng(index)
                small = rng.integers(0, 256, size=(size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
                return Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR)

        return _Images()


def cams_section(env: Env) -> dict:
    from semples.config import CamConfig, GeneratorConfig
    from semples.infer.cams import generate_cams
    from semples.models.mask_generators import build_generator

    s = env.sizes
    torch.manual_seed(0)
    gen = build_generator(GeneratorConfig(pretrained=False, drop_path=0.0, backbone_kwargs=s.generator_kwargs),
                          len(VOC), quiet=True)
    data = RandomImages(s.cam_warmup + 2 * s.cam_images, s.cam_size, len(VOC))
    cfg = CamConfig(scales=tuple(s.cam_scales), flip=True, batch_size=4, group_size=max(4, s.cam_warmup),
                    mixed_precision="no")
    res = {"image_size": list(s.cam_size), "scales": list(s.cam_scales), "batch_size": cfg.batch_size}
    with tempfile.TemporaryDirectory() as out:
        generate_cams(gen, data, out, cfg, device=env.device, indices=range(s.cam_warmup), num_workers=s.cam_workers,
                      progress=False)
        variants = (("default", True, s.cam_warmup), ("materialised", False, s.cam_warmup + s.cam_images))
        for variant, lean, first in variants:
            gen.lean_inference = lean
            env.sync()
            env.reset_peak()
            t0 = time.perf_counter()
            summary = generate_cams(gen, data, out, cfg, device=env.device, indices=range(first, first + s.cam_images),
                                    num_workers=s.cam_workers, progress=False)
            env.sync()
            wall = time.perf_counter() - t0
            res[variant] = {"images": summary.computed, "seconds": round(wall, 3),
                            "images_per_s": round(summary.computed / wall, 3), "peak_gpu_gib": env.peak_gib()}
    return res


# ------------------------------------------------------------------------------------------------------- sam
def tiny_sam():
    """A SAM of segment_anything's own classes at toy size (64-px encoder), for --tiny."""
    from functools import partial

    from segment_anything import modeling

    dim, img = 32, 64
    encoder = modeling.ImageEncoderViT(
        depth=1, embed_dim=dim, img_size=img, mlp_ratio=2, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=[0], window_size=4,
        out_chans=dim)
    prompt = modeling.PromptEncoder(embed_dim=dim, image_embedding_size=(img // 16, img // 16),
                                    input_image_size=(img, img), mask_in_chans=4)
    decoder = modeling.MaskDecoder(
        num_multimask_outputs=3, transformer=modeling.TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64,
                                                                        num_heads=2),
        transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=16)
    return modeling.Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder)


def sam_section(env: Env) -> dict:
    from semples.models.regions import SamRegions, build_sam

    s = env.sizes
    torch.manual_seed(0)
    if s.sam == "tiny":
        model = tiny_sam().to(env.device)
    else:
        model = build_sam(s.sam, None, str(env.device), random_init=True)
    source = SamRegions(model, points_per_side=s.sam_points, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    rng = np.random.default_rng(0)
    image = np.repeat(np.repeat(rng.integers(0, 256, (s.sam_size[0] // 8, s.sam_size[1] // 8, 3), dtype=np.uint8),
                                8, 0), 8, 1)
    regions = source(image)  # warm-up
    sec, mem = env.timed(lambda: source(image), s.sam_images, 0)
    return {"model": s.sam, "points_per_side": s.sam_points, "image_size": list(s.sam_size), "thresholds": 0.0,
            "s_per_image": round(sec, 3), "masks": int(regions.num_regions), "peak_gpu_gib": mem}


# ------------------------------------------------------------------------------------------------- train-seg
def seg_section(env: Env) -> dict:
    from semples.config import SegmenterConfig
    from semples.models.segmenters import build_segmenter
    from semples.stages.train_segmenter import SegmentStage

    s = env.sizes
    g = torch.Generator().manual_seed(0)
    images = torch.randn(s.seg_batch, 3, s.seg_size, s.seg_size, generator=g).to(env.device)
    masks = torch.randint(0, 21, (s.seg_batch, s.seg_size, s.seg_size), generator=g)
    masks[:, :8] = 255  # some ignored pixels, as crop padding gives
    batch = {"image": images, "mask": masks.to(env.device)}
    res = {"model": "deeplabv3plus (SMP) " + (s.seg_kwargs.get("encoder") or "tu-resnet101"), "batch": s.seg_batch,
           "size": s.seg_size}
    for variant in ("contiguous", "channels_last"):
        torch.manual_seed(0)
        stage = SegmentStage(build_segmenter(SegmenterConfig(pretrained=False, **s.seg_kwargs), 21, quiet=True))
        stage.to(env.device).train()
        if variant == "channels_last":
            stage.to(memory_format=torch.channels_last)
            batch = {**batch, "image": images.contiguous(memory_format=torch.channels_last)}
        opt = torch.optim.AdamW(stage.parameters(), lr=1e-4)

        def step(stage=stage, batch=batch, opt=opt):
            with env.autocast():
                out = stage(batch)
            out["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(out["loss"].detach())

        sec, mem = env.timed(step, s.seg_steps, s.warmup)
        res[variant] = {"s_per_step": round(sec, 4), "images_per_s": round(s.seg_batch / sec, 2),
                        **env.rates(env.flops(step), sec), "peak_gpu_gib": mem}
        del stage, opt
    return res


# ------------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    ap.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (seconds): the test suite's mode")
    ap.add_argument("--device", default=None, help="default: cuda when available (cpu with --tiny)")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "no"],
                    help="autocast of the training steps (cams run fp32, the `semples cams` default)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device (overrides the "
                    "table); MFU = achieved / this")
    ap.add_argument("--compile", action="store_true", help="also torch.compile CLIP's towers (clip.compile) in the "
                    "stage sections (adds their compilation time)")
    ap.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/gpu_suite_<device>.json; "
                    "--tiny: not written unless given)")
    args = ap.parse_args(argv)
    sizes = TINY if args.tiny else Sizes()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    if device.type == "cpu" and not args.tiny and args.device is None:
        print("no GPU here: the full sizes take hours on a CPU; pass --tiny (or --device cpu to insist)",
              file=sys.stderr)
        raise SystemExit(2)
    if args.tiny and args.precision == "bf16" and device.type == "cpu":
        args.precision = "no"  # CPU bf16 is slow or emulated on most machines; the toy run checks wiring only
    _register_cpu_attention_flops()
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    env = Env(device, sizes, peak, args.precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                              platform.machine())
    meta = {"device": name, "device_type": device.type, "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None, "peak_bf16_tflops": peak,
            "peak_source": peak_source, "precision": args.precision, "tiny": args.tiny, "compile": args.compile,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_before": read_load(), "random_weights": True}
    print(f"gpu suite on {name} ({device}), torch {torch.__version__}, peak {peak} TFLOP/s ({peak_source}), "
          f"precision {args.precision}{', tiny' if args.tiny else ''}", flush=True)
    result: dict = {"meta": meta}
    t_all = time.perf_counter()
    stages = [w for w in args.what if w in ("match", "prompt", "refine")]
    if stages:
        from semples.config import ClipConfig
        from semples.models.clip import load_clip

        torch.manual_seed(0)
        clip = load_clip(ClipConfig(arch=sizes.clip_arch, pretrained="none",
                                    compile="default" if args.compile else None), device)
    runners = {"match": lambda: stage_section("match", env, clip), "prompt": lambda: stage_section("prompt", env, clip),
               "refine": lambda: stage_section("refine", env, clip), "cams": lambda: cams_section(env),
               "sam": lambda: sam_section(env), "train_seg": lambda: seg_section(env)}
    for what in args.what:
        t0 = time.perf_counter()
        result[what] = runners[what]()
        result[what]["section_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{what}: {json.dumps(result[what])}", flush=True)
    meta["total_seconds"] = round(time.perf_counter() - t_all, 1)
    meta["load_after"] = read_load()
    print_summary(result)
    out = args.out
    if out is None and not args.tiny:
        slug = "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()
        out = str(Path(__file__).resolve().parent / "results" / f"gpu_suite_{slug}.json")
    if out:
        write_json(Path(out), result)
        print(f"written: {out}")
    return result


def print_summary(result: dict) -> None:
    def mfu(x):
        return f"{100 * x:.1f}%" if x is not None else "n/a"

    def gib(x):
        return f"{x:.2f} GiB" if x is not None else "n/a"

    print(f"\nsummary ({result['meta']['device']}, {result['meta']['total_seconds']} s):")
    for name in ("match", "prompt", "refine"):
        if name in result:
            r, c = result[name], result[name]["clip_pass"]
            print(f"  {name:<7s} {r['s_per_step']:.4f} s/step  {r['images_per_s']:8.1f} img/s  MFU {mfu(r['mfu'])}  "
                  f"peak {gib(r['peak_gpu_gib'])}   CLIP pass ({c['what']}): {c['seconds']:.4f} s, MFU {mfu(c['mfu'])}")
    if "cams" in result:
        for v in ("default", "materialised"):
            r = result["cams"][v]
            print(f"  cams ({v:<12s}) {r['images_per_s']:.3f} img/s  peak {gib(r['peak_gpu_gib'])}")
    if "sam" in result:
        r = result["sam"]
        print(f"  sam {r['model']} {r['points_per_side']}² points: {r['s_per_image']:.3f} s/image ({r['masks']} masks) "
              f"peak {gib(r['peak_gpu_gib'])}")
    if "train_seg" in result:
        for v in ("contiguous", "channels_last"):
            r = result["train_seg"][v]
            print(f"  train-seg {v:<13s} {r['s_per_step']:.4f} s/step  {r['images_per_s']:.1f} img/s  "
                  f"MFU {mfu(r['mfu'])}  peak {gib(r['peak_gpu_gib'])}")


if __name__ == "__main__":
    main()
