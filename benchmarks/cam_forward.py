"""CAMs of one image against a plain ViT forward of the same views (issue 14, item 1).

Per image, `semples cams` runs the WeakTr generator (DeiT-S/16, K = 20, RANDOM weights) on every scale's view
batched with its flip. This script times, interleaved in one process (A, B, C, A, B, C, ... so that load from
other jobs hits all alike), on the views of one H x W image at the given scales:

  plain         timm DeiT-S/16 `forward_features` (fused SDPA, no attention map kept) on the same views
  materialised  `multiscale_cams` with the generator keeping every layer's attention maps (the training path,
                which every forward took before the lean path existed)
  lean_fused_max  the lean path with its row maxima from a second fused attention pass (what it ran before the
                bf16 row maxima, and what it runs on CPUs without bf16 GEMM instructions)
  lean          `multiscale_cams` with the lean path (what `semples cams` runs now, under inference mode): row
                maxima from bounded bf16 scores + an fp32 recheck where the CPU has bf16 instructions

and prints each variant's time over plain's per round (median and range over rounds), in wall time and in the
process's CPU time (the steadier figure on a shared machine; use --threads 1 there). Peak memory: the growth of
the process's peak RSS during one image of each variant (Linux: the peak is reset through /proc/self/clear_refs
before each variant; freed memory goes back to the system between variants, so the figures do not add up).

    python benchmarks/cam_forward.py [--size 480 640] [--scales 1.0 1.2] [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ratio_stats, read_load, timed_call  # noqa: E402

VARIANTS = ("plain", "materialised", "lean_fused_max", "lean")


def build(k: int = 20):
    """(plain timm DeiT-S, WeakTr generator) with random weights, eval mode."""
    import timm

    from semples.config import GeneratorConfig
    from semples.models.mask_generators import build_generator

    torch.manual_seed(0)
    plain = timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=0,
                              dynamic_img_size=True).eval()
    gen = build_generator(GeneratorConfig(pretrained=False, drop_path=0.0), k, quiet=True).eval()
    return plain, gen


def views_of(size: tuple[int, int], scales: list[float]) -> list[torch.Tensor]:
    """One random image's views (1, 3, h_s, w_s) at each scale (sides rounded as `semples cams` does)."""
    from semples.infer.views import scaled_size

    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, *size, generator=g)
    out = []
    for s in scales:
        h, w = scaled_size(size[0], size[1], s)
        out.append(torch.nn.functional.interpolate(image, size=(h, w), mode="bilinear", align_corners=False))
    return out


def runner(name: str, plain, gen, views, size, classes):
    """A zero-argument function that computes one image's CAMs (or plain features) for variant `name`."""
    from semples.infer.cams import multiscale_cams

    if name == "plain":
        p = gen.patch_size

        def run():
            with torch.inference_mode():
                for x in views:  # the flip batched with its scale, as `semples cams` batches it; padded as S pads
                    x = torch.nn.functional.pad(x, (0, (-x.shape[-1]) % p, 0, (-x.shape[-2]) % p))
                    plain.forward_features(torch.cat([x, x.flip(-1)]))
        return run

    from semples.models.mask_generators import weaktr

    def run():
        gen.lean_inference = name != "materialised"
        gen.lean_min_map_bytes = 0  # forced, whatever the size (by default small inputs stay materialised)
        weaktr.BF16_ROW_MAXIMA = False if name == "lean_fused_max" else None
        try:
            multiscale_cams(gen, views, size, [classes], flip=True)
        finally:
            weaktr.BF16_ROW_MAXIMA = None
    return run


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def peak_rss_growth_gib(fn) -> float | None:
    """GiB by which the peak RSS exceeds the RSS before `fn()` (None where /proc cannot reset the peak)."""
    try:
        gc.collect()
        base = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        fn()
        return (_status_kib("VmHWM") - base) / 2**20
    except OSError:
        return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(args.size)
    from semples.models.mask_generators import weaktr

    plain, gen = build()
    views = views_of(size, args.scales)
    fns = {name: runner(name, plain, gen, views, size, [3, 7]) for name in VARIANTS}
    load0 = read_load()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, image {size[0]}x{size[1]}, scales {args.scales} + flips, load {load0}")
    for fn in fns.values():  # warm-up
        fn()
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            w, c = timed_call(fn)
            wall[name].append(w)
            cpu[name].append(c)
    print(f"load after: {read_load()}")
    for name in VARIANTS:
        print(f"  {name:<15s} s/image wall {statistics.median(wall[name]):6.2f}, CPU "
              f"{statistics.median(cpu[name]):6.2f}   / plain: wall {ratio_stats(wall[name], wall['plain'])}, "
              f"CPU {ratio_stats(cpu[name], cpu['plain'])}")
    print(f"  lean / lean_fused_max: wall {ratio_stats(wall['lean'], wall['lean_fused_max'])}, CPU "
          f"{ratio_stats(cpu['lean'], cpu['lean_fused_max'])}; bf16 row maxima on this CPU: "
          f"{weaktr.bf16_row_maxima_enabled()}")
    print(f"  materialised / lean: wall {ratio_stats(wall['materialised'], wall['lean'])}, CPU "
          f"{ratio_stats(cpu['materialised'], cpu['lean'])}")
    if not args.no_memory:
        for name, fn in fns.items():
            gib = peak_rss_growth_gib(fn)
            print(f"  {name:<15s} peak RSS growth during one image: "
                  + (f"{gib:.2f} GiB" if gib is not None else "n/a (no /proc/self/clear_refs)"))


if __name__ == "__main__":
    main()
