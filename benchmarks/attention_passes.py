"""What one DeiT-S layer's attention costs on each way of getting the WeakTr fusion's inputs (issue 14, item 1).

`semples cams` (the lean path of `WeakTrViT`) runs three fused attention passes per layer where a plain forward runs
one: the layer's own (which on CPU also returns each row's log-sum-exp), one on scores x 2^24 for the row maxima
the max-pooled gates need, and after the last layer the recomputation of P_l @ fused for the fine map. The question
this script answers is whether a *single explicit pass* (scores, softmax and P v in row chunks, keeping the row
peaks, the class rows and, memory allowing, the patch rows of P for the fine map) would be cheaper. Timed per layer
on random q, k, v of the VOC sizes (B = 2 views: an image and its flip, 6 heads of 64, K = 20 class tokens),
interleaved in one process (so load hits every variant alike), in process CPU seconds; printed as ratios to the
plain fused pass, median over rounds.

    python benchmarks/attention_passes.py [--tokens 1220 1748] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import read_load  # noqa: E402


def variants(n: int, k: int = 20, b: int = 2, heads: int = 6, hd: int = 64, chunk: int = 128) -> dict:
    from semples.models.mask_generators import weaktr

    g = torch.Generator().manual_seed(0)
    q, key, v = (torch.randn(b, heads, n, hd, generator=g) for _ in range(3))
    scale = hd ** -0.5
    fused = torch.rand(b, n - k, k, generator=g)
    store = torch.empty(b, heads, n - k, n - k)

    def explicit(keep: bool):
        qs, kt = q * scale, key.transpose(-2, -1)
        out, peak, rows = torch.empty_like(q), None, None
        for r0 in range(0, n, chunk):
            p = torch.softmax(torch.matmul(qs[:, :, r0:r0 + chunk], kt), dim=-1)
            out[:, :, r0:r0 + chunk] = p @ v
            pk = p.amax(dim=(-2, -1))
            peak = pk if peak is None else torch.maximum(peak, pk)
            if r0 < k:
                rows = p[:, :, :k, k:].clone()
            if keep:
                lo = max(r0, k)
                store[:, :, lo - k:r0 + p.shape[2] - k] = p[:, :, lo - r0:, k:]
        return out, peak, rows

    return {
        "plain fused pass (what a plain forward runs)": lambda: F.scaled_dot_product_attention(q, key, v, scale=scale),
        "lean today: fused pass + row-maxima pass": lambda: weaktr.attention_statistics(q, key, v, scale, k, "max"),
        "lean today: + fine-map recomputation (3 passes)": lambda: (
            weaktr.attention_statistics(q, key, v, scale, k, "max"),
            weaktr.attention_apply(q[:, :, k:] * scale, key, fused, skip=k)),
        "one explicit pass (out, peaks, class rows)": lambda: explicit(False),
        "one explicit pass + patch rows kept (fp32)": lambda: explicit(True),
        "fine map from kept rows (P @ fused, per head)": lambda: torch.matmul(store, fused[:, None]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[1220, 1748],
                   help="tokens per view (480x640 at scale 1.0: 1200 + 20; at 1.2: 1728 + 20)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"load {read_load()[0]:.1f}")
    for n in args.tokens:
        fns = variants(n)
        times = {name: [] for name in fns}
        with torch.inference_mode():
            for fn in fns.values():
                fn()  # warm-up
            for _ in range(args.rounds):
                for name, fn in fns.items():
                    start = time.process_time()
                    fn()
                    times[name].append(time.process_time() - start)
        plain = [t for t in times[next(iter(fns))]]
        print(f"\nN = {n} tokens per view (B = 2, 6 heads, K = 20); CPU s per layer, median of {args.rounds}; "
              f"ratio = median of per-round ratios to the plain pass (range)")
        for name, ts in times.items():
            r = [a / b for a, b in zip(ts, plain)]
            print(f"  {name:<50} {statistics.median(ts):7.3f} s   {statistics.median(r):5.2f}x "
                  f"({min(r):.2f}-{max(r):.2f})")
    print(f"\nload at the end {read_load()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
