"""Final segmentation models: shapes at odd sizes, gradients everywhere, registry, weights, loading."""

from __future__ import annotations

import pytest
import torch

from semples.config import SegmenterConfig
from semples.errors import CheckpointError, ConfigError, WeightsError
from semples.models.segmenters import SEGMENTERS, build_segmenter, load_segmenter
from tests.seg_helpers import RESNET_TINY, SEGMENTER_NAMES, tiny_segmenter, tiny_segmenter_cfg


def test_registry_names_the_required_families():
    assert set(SEGMENTERS) >= {"deeplabv3plus", "segmenter_linear", "segmenter_mask"}
    with pytest.raises(ConfigError, match="valid: deeplabv3plus, segmenter_linear, segmenter_mask"):
        build_segmenter(SegmenterConfig(name="deeplab_v9"), 21)


@pytest.mark.parametrize("name", SEGMENTER_NAMES)
@pytest.mark.parametrize("size", [(37, 53), (64, 48), (17, 16)])
def test_logits_have_the_input_size_at_odd_sizes(name, size):
    model = tiny_segmenter(name, num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", SEGMENTER_NAMES)
def test_every_trainable_parameter_gets_a_gradient(name):
    # timm zero-initialises each residual branch's last BatchNorm (random init only), which blocks the gradient
    # of the branch's earlier layers at step 0; switch that off to see that every parameter is connected
    extra = {"backbone_kwargs": {**RESNET_TINY, "zero_init_last": False}} if name == "deeplabv3plus" else {}
    model = tiny_segmenter(name, num_classes=4, **extra).train()
    out = model(torch.randn(2, 3, 45, 61))
    loss = torch.nn.functional.cross_entropy(out, torch.randint(0, 4, (2, 45, 61)))
    loss.backward()
    assert torch.isfinite(loss)
    params = dict(model.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    missing = [n for n, p in params.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in params.values())


def test_deeplab_uses_a_dilated_resnet_with_the_configured_output_stride():
    m16 = tiny_segmenter("deeplabv3plus")
    m8 = tiny_segmenter("deeplabv3plus", output_stride=8)
    assert m16.backbone.feature_info.reduction() == [4, 16]
    assert m8.backbone.feature_info.reduction() == [4, 8]
    # ASPP rates are given at stride 16 and doubled at stride 8 (same context in pixels)
    assert m16.decoder.aspp.branches[1][0].dilation == (6, 6)
    assert m8.decoder.aspp.branches[1][0].dilation == (12, 12)
    with pytest.raises(ConfigError, match="output_stride"):
        tiny_segmenter("deeplabv3plus", output_stride=32)


def test_deeplab_trains_with_a_micro_batch_of_one():
    # no BatchNorm on the image-pooling branch: one image per GPU must not crash
    out = tiny_segmenter("deeplabv3plus").train()(torch.randn(1, 3, 40, 40))
    assert out.shape == (1, 4, 40, 40)


def test_family_default_backbones():
    from semples.models.segmenters.segmenter import _vit

    assert SegmenterConfig().backbone is None and SegmenterConfig().name == "deeplabv3plus"
    vit, name = _vit(SegmenterConfig(name="segmenter_mask", pretrained=False,
                                     backbone_kwargs={"embed_dim": 32, "depth": 1, "num_heads": 2}), quiet=True)
    assert name == "deit_small_patch16_224" and vit.patch_embed.patch_size == (16, 16)


@pytest.mark.parametrize("name", ["deeplabv3plus", "segmenter_mask"])
def test_offline_pretrained_backbone_names_what_to_pass(name, monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError, match=r"segment\.model\.backbone_checkpoint=.*segment\.model\.pretrained=false"):
        build_segmenter(SegmenterConfig(name=name, pretrained=True), 21)


def test_random_weights_warn(caplog):
    tiny_segmenter_cfg()
    with caplog.at_level("WARNING"):
        build_segmenter(tiny_segmenter_cfg(), 3)
    assert "RANDOM weights" in caplog.text


def test_backbone_checkpoint_file_is_loaded(tmp_path):
    import timm

    torch.manual_seed(5)
    resnet = timm.create_model("resnet18", pretrained=False, **RESNET_TINY)
    path = tmp_path / "resnet_tiny.pth"
    torch.save(resnet.state_dict(), path)  # a classification checkpoint, fc included
    model = build_segmenter(tiny_segmenter_cfg(backbone_checkpoint=str(path)), 3)
    assert torch.equal(model.backbone.layer4[0].conv1.weight, resnet.layer4[0].conv1.weight)
    loaded = model.source.pop("loaded")
    assert model.source == {"backbone": "resnet18", "weights": "file", "path": str(path)}
    assert loaded["fraction_of_model"] == 1.0 and loaded["num_missing"] == 0 and loaded["heads_dropped"] == 2
    with pytest.raises(WeightsError, match=r"missing\.pth: segment\.model\.backbone_checkpoint file not found"):
        build_segmenter(tiny_segmenter_cfg(backbone_checkpoint=str(tmp_path / "missing.pth")), 3)


@pytest.mark.parametrize("name", SEGMENTER_NAMES)
def test_a_backbone_file_that_does_not_fit_is_an_error_not_random_weights(tmp_path, name):
    """timm loads a file into these headless backbones non-strictly; a file of keys that fit nothing, or of another
    depth, used to train from random weights with the file named in the manifest (issue 12, item 1)."""
    import timm

    cfg = tiny_segmenter_cfg(name)
    nothing = tmp_path / "nothing.pth"
    torch.save({f"layer{i}.weight": torch.randn(4, 4) for i in range(4)}, nothing)
    with pytest.raises(WeightsError, match=r"nothing\.pth: does not fit the backbone \(segment\.model\."
                                           r"backbone_checkpoint\): 0% of the model's parameters would load"):
        build_segmenter(tiny_segmenter_cfg(name, backbone_checkpoint=str(nothing)), 3)
    kw = dict(cfg.backbone_kwargs)
    if name == "deeplabv3plus":
        deeper = timm.create_model("resnet18", pretrained=False, **{**kw, "layers": [2, 1, 1, 1]})
    else:
        deeper = timm.create_model("deit_small_patch16_224", pretrained=False, **{**kw, "depth": 4})
    path = tmp_path / "deeper.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in deeper.state_dict().items()}}, path)
    with pytest.raises(WeightsError, match=r"deeper\.pth: does not fit the backbone.*file's tensors fit"):
        build_segmenter(tiny_segmenter_cfg(name, backbone_checkpoint=str(path)), 3)


def _fake_checkpoint(tmp_path, model, seg_cfg):
    import dataclasses

    from semples.utils.checkpoint_io import FORMAT

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "stage": "segment", "finished": True, "progress": {"epoch": 1},
                "config": {"segment": {"model": dataclasses.asdict(seg_cfg), "transform": {"normalize": "imagenet"}}},
                "modules": {"segmenter": model.state_dict()}}, path)
    return path


def test_load_segmenter_takes_the_architecture_from_the_checkpoint(tmp_path):
    seg_cfg = tiny_segmenter_cfg("segmenter_mask", decoder_layers=1)
    model = build_segmenter(seg_cfg, 4, quiet=True).eval()
    path = _fake_checkpoint(tmp_path, model, seg_cfg)
    # the current config names another family: the checkpoint's architecture wins, no weights are fetched
    loaded, record = load_segmenter(tmp_path, SegmenterConfig(pretrained=True), 4)
    assert type(loaded).__name__ == "Segmenter" and not loaded.training
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert record["path"] == str(path) and len(record["sha256"]) == 64
    with pytest.raises(CheckpointError, match="do not fit.*6 classes incl. background"):
        load_segmenter(tmp_path, SegmenterConfig(), 6)
