"""What cheap torch features buy here (issue 14, item 6): channels_last for the CNN paths, torch.compile of CLIP.

Each measure runs A (as the code runs by default) and B (with the feature) interleaved in one process (A, B, A,
B, ...) and prints B / A per pair (median and range, wall and CPU time), so load from other jobs hits both alike.
RANDOM weights.

  channels-last-resnet   ResNet-50 CAM generator (timm, output stride 16): forward + backward at batch 8 x 224
                         (stage classify's pass) and `semples cams`-style inference on one 480x640 view + flip
  channels-last-deeplab  DeepLabV3+ ResNet-101: forward + backward at batch 2 x 512 (train-seg) and inference on
                         one 512x512 image + flip (eval-seg)
  channels-last-shipped  inference as the code ships it (ResNet CAM seeds, DeepLabV3+ evaluation: NHWC input)
                         against the NCHW forward it replaced (the A of the two lines above is already NHWC there)
  compile-clip           CLIP ViT-B/32 (custom blocks): image tower forward + backward-to-input on 24 images (the
                         match step's CLIP pass) and text forward + backward of 10 prompts (stage prompt), eager
                         against `clip.compile: default` (the first compiled call's time is printed apart)

"B" for channels_last = model and input in `torch.channels_last`.

    python benchmarks/torch_features.py --what channels-last-resnet channels-last-deeplab compile-clip [--pairs 5]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ratio_stats, read_load, timed_call  # noqa: E402

CL = torch.channels_last


def ab(label: str, fn_a, fn_b, pairs: int) -> float:
    """Prints B / A (wall and CPU time) over `pairs` alternating calls; returns the median CPU-time ratio."""
    fn_a()
    fn_b()
    t: dict[str, list[float]] = {"a_wall": [], "a_cpu": [], "b_wall": [], "b_cpu": []}
    for _ in range(pairs):
        for side, fn in (("a", fn_a), ("b", fn_b)):
            w, c = timed_call(fn)
            t[f"{side}_wall"].append(w)
            t[f"{side}_cpu"].append(c)
    print(f"  {label:<44s} A {statistics.median(t['a_wall']):7.3f} s  B {statistics.median(t['b_wall']):7.3f} s wall;"
          f" B / A: wall {ratio_stats(t['b_wall'], t['a_wall'])}, CPU {ratio_stats(t['b_cpu'], t['a_cpu'])}, "
          f"{pairs} pairs", flush=True)
    return statistics.median([b / a for a, b in zip(t["a_cpu"], t["b_cpu"])])


def train_pass(model, x, out_of):
    def run():
        out_of(model, x).float().sum().backward()
        model.zero_grad(set_to_none=True)
    return run


def infer_pass(model, x, out_of):
    def run():
        model.eval()
        with torch.inference_mode():
            out_of(model, torch.cat([x, x.flip(-1)]))
        model.train()
    return run


def channels_last(name: str, model, train_x, infer_x, out_of, pairs: int) -> dict:
    model.train()
    cl = copy.deepcopy(model).to(memory_format=CL)
    res = {}
    res["train"] = ab(f"{name} fwd+bwd {tuple(train_x.shape)}", train_pass(model, train_x, out_of),
                      train_pass(cl, train_x.contiguous(memory_format=CL), out_of), pairs)
    res["inference"] = ab(f"{name} inference {tuple(infer_x.shape)} + flip", infer_pass(model, infer_x, out_of),
                          infer_pass(cl, infer_x.contiguous(memory_format=CL), out_of), pairs)
    return res


def measure_resnet(args) -> dict:
    from semples.config import GeneratorConfig
    from semples.models.mask_generators import build_generator

    torch.manual_seed(0)
    gen = build_generator(GeneratorConfig(name="resnet_cam", backbone="resnet50", pretrained=False), 20, quiet=True)
    return channels_last("ResNet-50 CAM", gen, torch.randn(8, 3, 224, 224), torch.randn(1, 3, 480, 640),
                         lambda m, x: m(x).cam, args.pairs)


def measure_deeplab(args) -> dict:
    from semples.config import SegmenterConfig
    from semples.models.segmenters import build_segmenter

    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig(pretrained=False), 21, quiet=True)
    return channels_last("DeepLabV3+ R101", model, torch.randn(2, 3, 512, 512), torch.randn(1, 3, 512, 512),
                         lambda m, x: m(x), args.pairs)


def measure_shipped(args) -> dict:
    """What the code ships against the NCHW forward it replaced, at inference: ResNet CAM seeds (NHWC input under
    inference mode) and evaluation of DeepLabV3+ (`channels_last_inference`). A = NCHW: ResNet under no_grad (the
    NHWC switch keys on inference mode), DeepLab with the switch off; B = the default code path."""
    from semples.config import GeneratorConfig, SegmenterConfig
    from semples.models.mask_generators import build_generator
    from semples.models.segmenters import build_segmenter

    torch.manual_seed(0)
    gen = build_generator(GeneratorConfig(name="resnet_cam", backbone="resnet50", pretrained=False), 20,
                          quiet=True).eval()
    x = torch.randn(1, 3, 480, 640)
    x2 = torch.cat([x, x.flip(-1)])

    def resnet(mode):
        def run():
            with mode():
                _ = gen(x2).cam
        return run

    torch.manual_seed(0)
    seg = build_segmenter(SegmenterConfig(pretrained=False), 21, quiet=True).eval()
    y = torch.randn(1, 3, 512, 512)
    y2 = torch.cat([y, y.flip(-1)])

    def deeplab(nhwc: bool):
        def run():
            seg.channels_last_inference = nhwc
            with torch.no_grad():
                seg(y2)
            seg.channels_last_inference = True
        return run

    with torch.no_grad():
        nchw = gen(x2).cam
    with torch.inference_mode():
        assert torch.allclose(gen(x2).cam, nchw, atol=1e-4)
    return {"resnet": ab("ResNet-50 CAM seeds (1, 3, 480, 640) + flip, NCHW -> shipped",
                         resnet(torch.no_grad), resnet(torch.inference_mode), args.pairs),
            "deeplab": ab("DeepLabV3+ R101 eval (1, 3, 512, 512) + flip, NCHW -> shipped",
                          deeplab(False), deeplab(True), args.pairs)}


def measure_compile(args) -> dict:
    from semples.config import ClipConfig
    from semples.models.clip import PromptTextEncoder, load_clip

    torch.manual_seed(0)
    eager = load_clip(ClipConfig(arch="ViT-B-32", pretrained="none"))
    torch.manual_seed(0)
    compiled = load_clip(ClipConfig(arch="ViT-B-32", pretrained="none", compile="default"))
    images = torch.randn(24, 3, 224, 224)
    classes = torch.arange(10)
    prompts = {id(c): PromptTextEncoder(c, 20, length=30) for c in (eager, compiled)}

    def image_pass(clip):
        def run():
            x = images.clone().requires_grad_(True)
            clip.encode_image(x).sum().backward()
        return run

    def text_pass(clip):
        enc = prompts[id(clip)]

        def run():
            enc(classes).sum().backward()
            enc.zero_grad(set_to_none=True)
        return run

    res = {}
    for label, make in (("CLIP image fwd+bwd-to-input (24 x 224)", image_pass),
                        ("CLIP text fwd+bwd (10 prompts, 36 positions)", text_pass)):
        t0 = time.perf_counter()
        make(compiled)()
        print(f"  {label}: first compiled call (compilation) {time.perf_counter() - t0:.1f} s", flush=True)
        res[label] = ab(label + " eager / compiled", make(eager), make(compiled), args.pairs)
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", nargs="+", default=["channels-last-resnet", "channels-last-deeplab", "compile-clip"],
                    choices=["channels-last-resnet", "channels-last-deeplab", "channels-last-shipped",
                             "compile-clip"])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, fp32, load {read_load()}")
    for what in args.what:
        {"channels-last-resnet": measure_resnet, "channels-last-deeplab": measure_deeplab,
         "channels-last-shipped": measure_shipped, "compile-clip": measure_compile}[what](args)
    print(f"load after: {read_load()}")


if __name__ == "__main__":
    main()
