"""Stage prompt with the text tower cut at EOT against the full 77-position pass (issue 14, item 2).

Setup of benchmarks/step_throughput.py (CLIP ViT-B/32 and DeiT-S/16 WeakTr with RANDOM weights, VOC's 20 classes,
batch 8 at 224 px, prompts of length 30 in "a photo of {}." = 36 of 77 positions). Interleaved in one process
(full, cut, full, cut, ...): one optimiser step of stage prompt each, and the text forward + backward alone.
Prints cut / full per pair (median and range; wall and CPU time), and whether the text features of both passes
are bit-identical.

    python benchmarks/prompt_eot.py [--pairs 5] [--block-type custom|default] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ratio_stats, read_load, timed_call  # noqa: E402
from step_throughput import VOC, make_batch  # noqa: E402


@contextlib.contextmanager
def full_length(clip):
    """Every prompt runs all context_length positions (the pass before the EOT cut)."""
    original = type(clip).encode_embeddings

    def encode(self, embeddings, eot_index, length=None):
        return original(self, embeddings, eot_index, length=self.context_length)

    type(clip).encode_embeddings = encode
    try:
        yield
    finally:
        type(clip).encode_embeddings = original


def main(argv: list[str] | None = None) -> None:
    from semples.config import ClipConfig, GeneratorConfig, LossConfig, MaskingConfig, PromptConfig
    from semples.models.clip import PromptTextEncoder, load_clip
    from semples.models.mask_generators import build_generator
    from semples.stages import PromptStage

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--block-type", default="custom", choices=["custom", "default"])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clip = load_clip(ClipConfig(arch="ViT-B-32", pretrained="none", block_type=args.block_type))
    k = len(VOC)
    gen = build_generator(GeneratorConfig(pretrained=False), k, quiet=True)
    prompts = PromptTextEncoder(clip, k, length=PromptConfig().length)
    stage = PromptStage(gen, prompts, clip, VOC, loss=LossConfig(), masking=MaskingConfig()).train()
    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=1e-4)
    batch = make_batch(8, 224, k)
    classes = batch["labels"].nonzero()[:, 1].unique()

    with torch.no_grad():
        cut = prompts(classes)
        with full_length(clip):
            full = prompts(classes)
    rel = float((cut - full).abs().max() / full.abs().max())
    print(f"ViT-B/32 text tower ({args.block_type} blocks), {len(classes)} prompts, {prompts.eot_position + 1} of "
          f"{clip.context_length} positions: features bit-identical: {torch.equal(cut, full)}, max relative "
          f"difference {rel:.2e}; load {read_load()}")

    def step():
        out = stage(batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def text():
        prompts(classes).sum().backward()
        prompts.zero_grad(set_to_none=True)

    for name, fn in (("prompt step", step), ("text fwd+bwd", text)):
        fn()
        with full_length(clip):
            fn()
        t: dict[str, list[float]] = {"full_wall": [], "full_cpu": [], "cut_wall": [], "cut_cpu": []}
        for _ in range(args.pairs):
            with full_length(clip):
                w, c = timed_call(fn)
            t["full_wall"].append(w)
            t["full_cpu"].append(c)
            w, c = timed_call(fn)
            t["cut_wall"].append(w)
            t["cut_cpu"].append(c)
        print(f"  {name:<13s} full {statistics.median(t['full_wall']):.3f} s, cut "
              f"{statistics.median(t['cut_wall']):.3f} s wall; cut / full: wall "
              f"{ratio_stats(t['cut_wall'], t['full_wall'])}, CPU {ratio_stats(t['cut_cpu'], t['full_cpu'])}",
              flush=True)
    print(f"load after: {read_load()}")


if __name__ == "__main__":
    main()
