"""CLIP's image tower with its last block run for the class token only, against open_clip's full pass.

What every CLIP stage pays per step: the masked images through the image tower and, in match and refine, the
gradient back to the images (CLIP's weights frozen). The feature is the class token after the last block, so that
block's queries, attention output, projection and MLP are needed at that one token (keys and values at all):
`FrozenCLIP.encode_image` runs it so (`semples.models.clip._class_token_block`), exact to 1e-5 with its image
gradients (tests/models/test_clip_class_token_cut.py). Interleaved in one process, full then cut, per round; prints
the ratio cut / full (median and range) in wall and CPU time, and the FLOPs of each (`torch.utils.flop_counter`).

    python benchmarks/clip_class_token.py [--arch ViT-B-32] [--images 24] [--rounds 5] [--precision auto]

RANDOM weights (no downloads here); the figure is a speed ratio, not a quality number.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ratio_stats, read_load, timed_call  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    from semples.config import ClipConfig
    from semples.engine.device import resolve_precision
    from semples.models.clip import load_clip

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="ViT-B-32")
    ap.add_argument("--images", type=int, default=24, help="2P masked images of a batch of 8 (12 positive pairs)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--precision", default="auto", choices=["auto", "no", "bf16"])
    ap.add_argument("--forward-only", action="store_true", help="no gradient to the images (stage prompt's u^b "
                                                                 "side)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    clip = load_clip(ClipConfig(arch=args.arch, pretrained="none"))
    assert clip.class_token_cut, f"{args.arch}: the class-token cut does not apply to this tower"
    dtype = {"bf16": torch.bfloat16}.get(resolve_precision(args.precision, "cpu"))
    images = torch.randn(args.images, 3, *clip.image_size)

    def step(encode):
        def run():
            x = images.clone().requires_grad_(not args.forward_only)
            with torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext():
                feats = encode(x)
            if not args.forward_only:
                feats.float().square().sum().backward()
        return run

    full, cut = step(clip.model.encode_image), step(clip.encode_image)
    from gpu_suite import _register_cpu_attention_flops
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention_flops()
    flops = {}
    for name, fn in (("full", full), ("cut", cut)):
        with FlopCounterMode(display=False) as counter:
            fn()
        flops[name] = counter.get_total_flops()
    t = {"full_wall": [], "full_cpu": [], "cut_wall": [], "cut_cpu": []}
    for _ in range(args.rounds):
        for name, fn in (("full", full), ("cut", cut)):
            w, c = timed_call(fn)
            t[f"{name}_wall"].append(w)
            t[f"{name}_cpu"].append(c)
    what = "forward" if args.forward_only else "forward + gradient to the images"
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, precision "
          f"{dtype or 'fp32'}, load {read_load()}")
    print(f"{args.arch} image tower, {args.images} images at {clip.image_size[0]} px, {what}, {args.rounds} rounds")
    print(f"  full pass {statistics.median(t['full_wall']):.3f} s, cut {statistics.median(t['cut_wall']):.3f} s "
          f"(median wall); cut / full: wall {ratio_stats(t['cut_wall'], t['full_wall'])}, CPU "
          f"{ratio_stats(t['cut_cpu'], t['full_cpu'])}; FLOPs {flops['full'] / 1e9:.1f} G -> "
          f"{flops['cut'] / 1e9:.1f} G ({flops['cut'] / flops['full']:.3f})")
    return {"flops": flops, **t}


if __name__ == "__main__":
    main()
