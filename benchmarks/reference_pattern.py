"""semples against the reference code's compute pattern, stage by stage and for CAMs (issue 14, item 4).

The reference pattern is written here fresh from its description (the reference's licence forbids copying):

  every stage   the class texts "a photo of {class}." are re-encoded by the text tower every step; CLIP's
                parameters have requires_grad True, so every backward also computes (and accumulates) their
                weight gradients; the mask generator S runs entirely under autograd (its frozen trunk too: its
                parameters require grad, only the optimiser leaves them alone); every loss is read with
                `.item()` every step (a device sync on GPUs)
  match         S on the batch; the masked foreground and background images are encoded in two calls
  prompt        as match for the background images; the prompt vectors run the text tower over all 77
                positions (semples cuts at EOT, item 2), one prompt per class in the batch (as semples)
  refine        as match, plus the learned prompts re-encoded every step (77 positions) and the foreground
                images encoded a second time for L_refine
  cams          the WeakTr generator keeping every layer's attention maps, one view per forward (each scale
                and its flip separately), under no_grad

semples runs its own stages (MatchStage, PromptStage, RefineStage: u^f cached, CLIP frozen, trunk under no_grad,
one image-tower call per step) and `multiscale_cams` (flip batched with its scale, the lean path). Its step reads
the losses back as floats as the engine (`engine/loop.py`) does today, so the `.item()` of the reference pattern is
not counted as a difference here (it costs nothing on a CPU; on a GPU both sides sync once per step).
Both sides train the same parts with the same optimiser on the same batch; the losses agree at the first step.

Setup of benchmarks/step_throughput.py: CLIP ViT-B/32 and DeiT-S/16 WeakTr, RANDOM weights, VOC's 20 classes,
batch 8 at 224 px (12 positive pairs over 10 classes); CAMs of one 480x640 image at VOC scales 1.0 and 1.2 with
flips. Interleaved in one process (reference, semples, reference, semples, ...); the figure is reference / semples
per pair, printed as the median with the range over pairs, in wall time and in the process's CPU time (the
steadier one on a shared machine: run with --threads 1 there).

    python benchmarks/reference_pattern.py [--what match prompt refine cams] [--pairs 5] [--precision auto]
    python benchmarks/reference_pattern.py --flops          # also each side's FLOPs of one step (no timing needed)

With --flops every row also prints the FLOPs of one step on each side (`torch.utils.flop_counter`: matmuls,
convolutions and attention, i.e. the model passes; CPU flash attention counted as gpu_suite.py does) and their
ratio: the speed-up semples would show if both sides ran their arithmetic equally fast. A time ratio far above it
would mean the reference wastes time outside the model passes; one below it, that semples' kernels are slower.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ratio_stats, read_load, timed_call  # noqa: E402
from step_throughput import VOC, make_batch  # noqa: E402


def count_flops(fn) -> int:
    """FLOPs of the model passes of one call of `fn` (matmuls, convolutions, attention)."""
    from gpu_suite import _register_cpu_attention_flops
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_attention_flops()
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def flops_line(name: str, ref_flops: int, sem_flops: int) -> str:
    return (f"  {name:<7s} FLOPs of one step: reference {ref_flops / 1e9:8.1f} G, semples {sem_flops / 1e9:8.1f} G; "
            f"reference / semples {ref_flops / sem_flops:.2f}x")

TEMPLATE = "a photo of {}."


# ------------------------------------------------------------------------------------------- the reference side
class ReferenceModels:
    """The reference's view of the models: a CLIP whose parameters require grad, S fully under autograd."""

    def __init__(self, clip, generator, prompts) -> None:
        self.model = copy.deepcopy(clip.model).eval().requires_grad_(True)
        self.tokens = clip.tokenize([TEMPLATE.format(n) for n in VOC])
        self.generator = generator
        generator.requires_grad_(True)  # the trunk is "frozen" only in that the optimiser does not hold it
        self.prompts = prompts

    def class_text(self) -> torch.Tensor:
        """u^f of all classes, re-encoded (with autograd through CLIP's parameters)."""
        return self.model.encode_text(self.tokens.to(next(self.model.parameters()).device))

    def prompt_text(self, classes: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """The prompts of `classes`, full 77-position pass of the text tower."""
        text = self.model
        seq = self.prompts.sequences(vectors[classes])
        x = seq.to(text.transformer.get_cast_dtype()) + text.positional_embedding
        x = text.ln_final(text.transformer(x, attn_mask=text.attn_mask))
        x = x[:, self.prompts.eot_position]
        return x @ text.text_projection if isinstance(text.text_projection, torch.Tensor) else text.text_projection(x)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def zero_clip_grads(self) -> None:
        self.model.zero_grad(set_to_none=True)


def reference_step(name: str, ref: ReferenceModels, batch: dict, opt, autocast, loss_cfg, masking) -> dict:
    """One optimiser step of stage `name` in the reference pattern; returns the losses as Python floats."""
    from semples.losses import match_loss, prompt_loss, refine_loss
    from semples.stages.masking import masked_images, pair_masks, positive_pairs

    images, labels = batch["image"], batch["labels"]
    n, k = positive_pairs(labels)
    lo, hi = loss_cfg.sim_min, loss_cfg.sim_max
    with autocast():
        u_fg = ref.class_text()[k]
        out = ref.generator(images)
        eps = masking.eps_prompt if name == "prompt" else masking.eps_match
        masks = pair_masks(out, n, k, eps, masking.align_corners)
        fg, bg = masked_images(images[n], masks, space=masking.space)
        v_bg = ref.encode_image(bg)
        if name == "prompt":
            classes, inverse = torch.unique(k, return_inverse=True)
            u_bg = ref.prompt_text(classes, ref.prompts.prompts)[inverse]
            losses = prompt_loss(u_bg, v_bg, u_fg, lambda_text=loss_cfg.lambda_text, sim_min=lo, sim_max=hi)
            losses["loss"] = losses["prompt_loss"]
        else:
            v_fg = ref.encode_image(fg)
            losses = match_loss(v_fg, v_bg, u_fg, lambda_bg=loss_cfg.lambda_bg, sim_min=lo, sim_max=hi)
            losses["loss"] = losses["match_loss"]
            if name == "refine":
                classes, inverse = torch.unique(k, return_inverse=True)
                u_bg = ref.prompt_text(classes, ref.prompts.prompts.detach())[inverse]
                v_fg_again = ref.encode_image(fg)
                losses.update(refine_loss(v_fg_again, u_bg, lo, hi))
                losses["loss"] = losses["loss"] + loss_cfg.lambda_refine * losses["refine_loss"]
    losses["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    ref.generator.zero_grad(set_to_none=True)
    ref.zero_clip_grads()
    return {key: v.item() for key, v in losses.items()}  # every loss read back every step


def reference_cams(generator, views, size, classes) -> torch.Tensor:
    """Seeds of one image: every layer's attention maps kept, one view per forward."""
    generator.lean_inference = False
    acc = torch.zeros(len(classes), *size)
    with torch.no_grad():
        for x in views:
            for flipped in (False, True):
                out = generator(x.flip(-1) if flipped else x)
                maps = out.to_image_size(out.cam[:, classes].float(), align_corners=False, size=size)[0]
                acc += maps.flip(-1) if flipped else maps
    lo = acc.flatten(1).min(1).values.view(-1, 1, 1)
    hi = acc.flatten(1).max(1).values.view(-1, 1, 1)
    return (acc - lo) / (hi - lo + 1e-5)


# -------------------------------------------------------------------------------------------------- measuring
def interleaved(fn_ref, fn_semples, pairs: int) -> dict[str, list[float]]:
    """Wall and CPU seconds of `pairs` alternating calls (reference first), after one warm-up call each."""
    fn_ref()
    fn_semples()
    t: dict[str, list[float]] = {"ref_wall": [], "ref_cpu": [], "sem_wall": [], "sem_cpu": []}
    for _ in range(pairs):
        for side, fn in (("ref", fn_ref), ("sem", fn_semples)):
            w, c = timed_call(fn)
            t[f"{side}_wall"].append(w)
            t[f"{side}_cpu"].append(c)
    return t


def report(name: str, t: dict[str, list[float]]) -> float:
    """Prints reference / semples (wall and CPU time); returns the median CPU-time ratio."""
    print(f"  {name:<7s} reference {statistics.median(t['ref_wall']):7.3f} s, semples "
          f"{statistics.median(t['sem_wall']):7.3f} s wall; reference / semples: wall "
          f"{ratio_stats(t['ref_wall'], t['sem_wall'])}, CPU {ratio_stats(t['ref_cpu'], t['sem_cpu'])}, "
          f"{len(t['ref_wall'])} pairs", flush=True)
    return statistics.median([a / b for a, b in zip(t["ref_cpu"], t["sem_cpu"])])


def measure_stage(name: str, clip, args, autocast) -> float:
    from semples.config import GeneratorConfig, LossConfig, MaskingConfig, PromptConfig
    from semples.models.clip import PromptTextEncoder
    from semples.models.mask_generators import build_generator
    from semples.stages import MatchStage, PromptStage, RefineStage

    k = len(VOC)
    loss_cfg, masking = LossConfig(), MaskingConfig()
    batch = make_batch(args.batch, args.size, k)

    def build(seed: int):
        torch.manual_seed(seed)
        gen = build_generator(GeneratorConfig(pretrained=False), k, quiet=True)
        prompts = PromptTextEncoder(clip, k, length=PromptConfig().length)
        return gen, prompts

    gen, prompts = build(0)
    if name == "match":
        stage = MatchStage(gen, clip, VOC, loss=loss_cfg, masking=masking)
    elif name == "prompt":
        stage = PromptStage(gen, prompts, clip, VOC, loss=loss_cfg, masking=masking)
    else:
        stage = RefineStage(gen, prompts, clip, VOC, loss=loss_cfg, masking=masking)
    stage.train()
    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=1e-4)

    ref_gen, ref_prompts = build(0)
    trainable = [ref_prompts.prompts] if name == "prompt" else \
        [p for m in (ref_gen.head, ref_gen.fusion) for p in m.parameters()]
    ref_gen.train()
    if name == "prompt":
        ref_gen.eval()  # S only defines the masks in stage prompt
    ref_opt = torch.optim.AdamW(trainable, lr=1e-4)
    ref = ReferenceModels(clip, ref_gen, ref_prompts)

    def semples_step():
        with autocast():
            out = stage(batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return {key: float(v.detach()) for key, v in out.items()}  # as the engine reads them

    with autocast():
        with torch.no_grad():
            first = float(stage(batch)["loss"])
    stage.zero_grad(set_to_none=True)
    ref_first = reference_step(name, ref, batch, torch.optim.SGD(trainable, lr=0.0), autocast, loss_cfg, masking)
    print(f"stage {name}: first-step loss semples {first:.5f}, reference pattern {ref_first['loss']:.5f}")
    if args.flops:
        def semples_pass():  # forward + backward: what the counter counts (the optimiser's update is elementwise)
            with autocast():
                out = stage(batch)
            out["loss"].backward()
            stage.zero_grad(set_to_none=True)

        frozen = torch.optim.SGD(trainable, lr=0.0)
        print(flops_line(name, count_flops(lambda: reference_step(name, ref, batch, frozen, autocast, loss_cfg,
                                                                  masking)), count_flops(semples_pass)))
    if args.flops_only:
        return None
    t = interleaved(lambda: reference_step(name, ref, batch, ref_opt, autocast, loss_cfg, masking), semples_step,
                    args.pairs)
    return report(name, t)


def measure_cams(args) -> float:
    from semples.config import GeneratorConfig
    from semples.infer.cams import multiscale_cams
    from semples.infer.views import scaled_size
    from semples.models.mask_generators import build_generator

    torch.manual_seed(0)
    gen = build_generator(GeneratorConfig(pretrained=False, drop_path=0.0), len(VOC), quiet=True).eval()
    size = tuple(args.cam_size)
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    views = [F.interpolate(image, size=scaled_size(*size, s), mode="bilinear", align_corners=False)
             for s in args.cam_scales]
    classes = [3, 7]

    def semples_cams():
        gen.lean_inference = True
        return multiscale_cams(gen, views, size, [classes])[0]

    diff = float((semples_cams() - reference_cams(gen, views, size, classes)).abs().max())
    print(f"cams: one {size[0]}x{size[1]} image, scales {args.cam_scales} + flips; max |semples - reference| "
          f"{diff:.2e}")
    if args.flops:
        print(flops_line("cams", count_flops(lambda: reference_cams(gen, views, size, classes)),
                         count_flops(semples_cams)))
    if args.flops_only:
        return None
    return report("cams", interleaved(lambda: reference_cams(gen, views, size, classes), semples_cams, args.pairs))


def main(argv: list[str] | None = None) -> None:
    from semples.config import ClipConfig
    from semples.engine.device import resolve_precision
    from semples.models.clip import load_clip

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", nargs="+", default=["match", "prompt", "refine", "cams"],
                    choices=["match", "prompt", "refine", "cams"])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--precision", default="auto", choices=["auto", "no", "bf16"],
                    help="autocast of the stage steps (CAMs run fp32, as `semples cams` by default)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--cam-size", type=int, nargs=2, default=[480, 640])
    ap.add_argument("--cam-scales", type=float, nargs="+", default=[1.0, 1.2])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--flops", action="store_true", help="also count each side's FLOPs of one step")
    ap.add_argument("--flops-only", action="store_true", help="count FLOPs, time nothing (implies --flops)")
    args = ap.parse_args(argv)
    args.flops = args.flops or args.flops_only
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, "cpu")
    dtype = {"bf16": torch.bfloat16}.get(precision)

    def autocast():
        return torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, stage precision {precision}, load {read_load()}")
    results = {}
    stages = [w for w in args.what if w != "cams"]
    if stages:
        torch.manual_seed(0)
        clip = load_clip(ClipConfig(arch="ViT-B-32", pretrained="none"))
        for name in stages:
            results[name] = measure_stage(name, clip, args, autocast)
    if "cams" in args.what:
        results["cams"] = measure_cams(args)
    if not args.flops_only:
        print("summary (reference / semples, median of CPU-time ratios): "
              + ", ".join(f"{k} {v:.2f}x" for k, v in results.items()) + f"; load after {read_load()}")


if __name__ == "__main__":
    main()
