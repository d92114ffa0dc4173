"""channels_last where it measured faster (issue 14, item 6): inference of the convolutional paths; training
forwards keep their memory format (and so their numerics) unless segment.model.channels_last asks."""

from __future__ import annotations

import dataclasses

import torch

from semples.stages.train_segmenter import build_segment_stage
from tests.fma_helpers import make_resnet_generator
from tests.seg_helpers import tiny_segmenter, tiny_segmenter_cfg

CL = torch.channels_last


def _input_formats(module: torch.nn.Module) -> list[bool]:
    """Records, per call, whether `module` received a channels_last input."""
    seen: list[bool] = []
    module.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=CL)
                                                                  and not args[0].is_contiguous()))
    return seen


def test_resnet_cam_seeds_run_channels_last_and_equal_the_default():
    gen = make_resnet_generator(4).eval()
    seen = _input_formats(gen.backbone.conv1)
    x = torch.randn(2, 3, 61, 45)
    with torch.no_grad():
        ref = gen(x)
    with torch.inference_mode():
        out = gen(x)
    assert seen == [False, True]
    torch.testing.assert_close(out.cam, ref.cam, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits["gap"], ref.logits["gap"], rtol=1e-5, atol=1e-6)
    gen.train()
    gen(x)  # a training forward: the input as given
    assert seen[-1] is False


def test_segmenter_evaluation_runs_channels_last_and_equals_training_format():
    model = tiny_segmenter("deeplabv3plus").eval()
    seen = _input_formats(model.model.encoder)
    x = torch.randn(2, 3, 40, 52)
    ref = model(x).detach()
    with torch.no_grad():
        out = model(x)
    assert seen == [False, True]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    vit = tiny_segmenter("segmenter_linear").eval()
    assert not vit.channels_last_inference


def test_channels_last_training_flag():
    cfg = tiny_segmenter_cfg("deeplabv3plus")
    assert not any(p.dim() == 4 and not p.is_contiguous() for p in build_segment_stage(cfg, 4).parameters())
    stage = build_segment_stage(dataclasses.replace(cfg, channels_last=True), 4)
    convs = [p for p in stage.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=CL) for p in convs)
    x = torch.randn(2, 3, 32, 32)
    masks = torch.randint(0, 4, (2, 32, 32))
    out = stage({"image": x, "mask": masks})
    out["loss"].backward()
    assert all(p.grad is not None for p in stage.parameters() if p.requires_grad)
