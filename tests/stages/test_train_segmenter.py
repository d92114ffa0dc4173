"""Stage segment: cross-entropy with ignore 255 (checked by hand), gradients, one step through the engine."""

from __future__ import annotations

import math

import pytest
import torch

from semples.losses.segmentation import segmentation_cross_entropy
from semples.stages.base import Stage
from semples.stages.train_segmenter import SegmentStage, build_segment_stage
from tests.seg_helpers import RESNET_TINY, tiny_segmenter, tiny_segmenter_cfg


def test_cross_entropy_ignores_255_by_hand():
    # one image, 2 classes, 2×2 pixels; pixel (0, 1) is ignored
    logits = torch.tensor([[[[2.0, 0.0], [0.0, 1.0]],
                            [[0.0, 5.0], [3.0, 1.0]]]])
    target = torch.tensor([[[0, 255], [1, 0]]])
    # -log softmax at the target: (2 vs 0 -> class 0), (0 vs 3 -> class 1), (1 vs 1 -> class 0)
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-3)) + math.log(2)) / 3
    loss = segmentation_cross_entropy(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # whatever the logits of the ignored pixel, the loss stays the same
    changed = logits.clone()
    changed[0, :, 0, 1] = torch.tensor([-40.0, 40.0])
    assert segmentation_cross_entropy(changed, target).item() == pytest.approx(expected, rel=1e-6)


def test_all_ignored_gives_zero_not_nan():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = segmentation_cross_entropy(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all() and not logits.grad.any()


def test_coarse_logits_are_upsampled_to_the_mask():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 16, 16))
    up = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    assert segmentation_cross_entropy(logits, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(up, target).item(), rel=1e-6)


def test_stage_contract_and_one_step_trains_every_parameter():
    model = tiny_segmenter("deeplabv3plus", num_classes=4,
                           encoder_kwargs={**RESNET_TINY, "zero_init_last": False})
    stage = SegmentStage(model)
    assert isinstance(stage, Stage) and stage.name == "segment" and stage.trains == ("segmenter",)
    assert set(stage.trainable_modules()) == {"segmenter"} and not stage.frozen_modules()
    stage.train()
    g = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 4, (2, 40, 40), generator=g)
    mask[:, :5] = 255
    out = stage({"image": torch.randn(2, 3, 40, 40, generator=g), "mask": mask})
    assert set(out) == {"loss", "ce_loss"} and torch.isfinite(out["loss"])
    before = {k: v.clone() for k, v in stage.state_dict().items()}
    out["loss"].backward()
    no_grad = [n for n, p in stage.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad, no_grad
    torch.optim.AdamW(stage.parameters(), lr=1e-3).step()
    assert all(not torch.equal(before[n], p) for n, p in stage.named_parameters())
    info = stage.describe()
    assert info["segmenter"]["num_classes"] == 4 and info["losses"] == ["ce_loss"]
    with pytest.raises(KeyError, match="mask"):
        stage({"image": torch.randn(1, 3, 8, 8)})


def test_build_segment_stage_can_use_sync_batchnorm():
    stage = build_segment_stage(tiny_segmenter_cfg(), 3, sync_bn=True)
    kinds = {type(m).__name__ for m in stage.modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm2d" not in kinds
    assert stage.segmenter.source["weights"] == "random"


def test_a_stage_about_to_load_a_checkpoint_does_not_fetch_backbone_weights(monkeypatch):
    import timm

    create = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("offline")
        return create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    stage = build_segment_stage(tiny_segmenter_cfg(pretrained=True), 3, fetch_weights=False)
    assert stage.segmenter.source == {"backbone": "tu-resnet18", "weights": "imagenet", "arch": "deeplabv3plus"}


def test_mask2former_stage_trains_on_its_own_losses():
    stage = SegmentStage(tiny_segmenter("mask2former", num_classes=3))
    assert stage.loss_names == ("class_loss", "mask_loss", "dice_loss")
    mask = torch.randint(0, 3, (2, 40, 40))
    mask[:, :4] = 255
    out = stage.train()({"image": torch.randn(2, 3, 40, 40), "mask": mask})
    assert set(out) == {"loss", "class_loss", "mask_loss", "dice_loss"}
    assert out["loss"].item() == pytest.approx(sum(out[k].item() for k in stage.loss_names), rel=1e-5)


def test_backbone_lr_multiplier_groups_the_encoder():
    from semples.engine.loop import param_groups

    stage = build_segment_stage(tiny_segmenter_cfg(), 3, backbone_lr_mult=0.1)
    assert stage.lr_multipliers() == {"segmenter.model.encoder.": 0.1}
    groups = param_groups(stage, 1e-4, stage.lr_multipliers())
    encoder = {id(p) for p in stage.segmenter.model.encoder.parameters()}
    for g in groups:
        assert all((id(p) in encoder) == (g["lr_mult"] == 0.1) for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(stage.parameters()))
    assert build_segment_stage(tiny_segmenter_cfg(), 3).lr_multipliers() == {}  # default: one lr, two groups
    assert len(param_groups(build_segment_stage(tiny_segmenter_cfg(), 3), 1e-4)) == 2
