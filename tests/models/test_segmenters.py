"""Final segmentation models: SMP architectures, Mask2Former (HF), Segmenter — shapes at odd sizes, gradients
everywhere, registry, weights (by name offline, explicit files, hub folders), loading from checkpoints."""

from __future__ import annotations

import pytest
import torch

from semples.config import SegmenterConfig
from semples.errors import CheckpointError, ConfigError, WeightsError
from semples.models.segmenters import SEGMENTERS, SMP_ARCHS, build_segmenter, load_segmenter
from tests.seg_helpers import MASK2FORMER_TINY, RESNET_TINY, SEGMENTER_NAMES, tiny_segmenter, tiny_segmenter_cfg


def test_registry_names_every_smp_architecture_mask2former_and_segmenter():
    import segmentation_models_pytorch as smp

    assert set(SMP_ARCHS) == set(smp.MODEL_ARCHITECTURES_MAPPING)  # in sync with the installed SMP
    assert set(SEGMENTERS) == {*SMP_ARCHS, "mask2former", "segmenter_linear", "segmenter_mask"}
    with pytest.raises(ConfigError, match="unknown segment.model.arch 'deeplab_v9'; valid: deeplabv3plus, "):
        build_segmenter(SegmenterConfig(arch="deeplab_v9"), 21)
    assert SegmenterConfig().arch == "deeplabv3plus" and SegmenterConfig().name == "deeplabv3plus"


def test_the_hand_written_deeplab_is_gone():
    import importlib.util

    assert importlib.util.find_spec("semples.models.segmenters.deeplab") is None
    model = tiny_segmenter("deeplabv3plus")
    assert type(model.model).__module__.startswith("segmentation_models_pytorch")


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
    extra = {"encoder_kwargs": {**RESNET_TINY, "zero_init_last": False}} if name in ("deeplabv3plus", "unet") else {}
    model = tiny_segmenter(name, num_classes=4, **extra).train()
    target = torch.randint(0, 4, (2, 45, 61))
    out = model.loss(torch.randn(2, 3, 45, 61), target)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert params
    assert not [n for n, p in params.items() if p.grad is None]
    # Mask2Former: the level embedding only feeds the deformable attention's sampling offsets and weights, whose
    # projections start at zero (as in the official code), so its gradient is exactly zero at step 0
    zero_at_init = ("model.model.pixel_level_module.decoder.level_embed",) if name == "mask2former" else ()
    missing = [n for n, p in params.items() if not p.grad.abs().sum() > 0 and n not in zero_at_init]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in params.values())


def test_deeplab_output_stride_aspp_rates_and_separable_convolutions():
    from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPPConv, ASPPSeparableConv

    m16 = tiny_segmenter("deeplabv3plus")
    m8 = tiny_segmenter("deeplabv3plus", output_stride=8, aspp_separable=False)
    assert m16.size_multiple == 16 and m8.size_multiple == 8
    aspp16, aspp8 = m16.model.decoder.aspp[0], m8.model.decoder.aspp[0]
    # ASPP rates are given at stride 16 and doubled at stride 8 (same context in pixels)
    assert isinstance(aspp16.convs[1], ASPPSeparableConv) and aspp16.convs[1][0][0].dilation == (6, 6)
    assert isinstance(aspp8.convs[1], ASPPConv) and aspp8.convs[1][0].dilation == (12, 12)
    x = torch.randn(1, 3, 64, 64)
    feats16, feats8 = m16.model.encoder(x), m8.model.encoder(x)
    assert feats16[-1].shape[-1] == 4 and feats8[-1].shape[-1] == 8
    with pytest.raises(ConfigError, match="output_stride"):
        tiny_segmenter("deeplabv3plus", output_stride=32)


def test_deeplab_trains_with_a_micro_batch_of_one():
    # no BatchNorm on the image-pooling branch: one image per GPU must not crash
    out = tiny_segmenter("deeplabv3plus").train()(torch.randn(1, 3, 40, 40))
    assert out.shape == (1, 4, 40, 40)


def test_any_smp_architecture_takes_arch_kwargs():
    unet = tiny_segmenter("unet")
    assert unet.model.decoder.blocks[-1].conv2[0].out_channels == 8
    with pytest.raises(ConfigError, match="cannot build"):
        build_segmenter(tiny_segmenter_cfg("unet", arch_kwargs={"no_such_argument": 1}), 3, quiet=True)


def test_family_default_encoders():
    from semples.models.segmenters.segmenter import _vit
    from semples.models.segmenters.smp import DEFAULT_ENCODER

    assert DEFAULT_ENCODER == "tu-resnet101" and SegmenterConfig().encoder is None
    vit, name = _vit(SegmenterConfig(arch="segmenter_mask", pretrained=False,
                                     encoder_kwargs={"embed_dim": 32, "depth": 1, "num_heads": 2}), quiet=True)
    assert name == "deit_small_patch16_224" and vit.patch_embed.patch_size == (16, 16)


@pytest.mark.parametrize("name", ["deeplabv3plus", "segmenter_mask"])
def test_offline_imagenet_encoder_names_what_to_pass(name, monkeypatch):
    import timm

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return create(*args, **kwargs)

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsError, match=r"segment\.model\.backbone_checkpoint=.*segment\.model\.pretrained=false"):
        build_segmenter(tiny_segmenter_cfg(name, pretrained=True), 21)


def test_offline_smp_native_encoder_names_what_to_pass(monkeypatch):
    """SMP's own encoders (no tu- prefix) fetch their ImageNet weights from the HF hub: offline, the same error."""
    import segmentation_models_pytorch.encoders as smp_encoders
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot reach the hub and the file is not in the local cache")

    monkeypatch.setattr(smp_encoders, "hf_hub_download", offline)
    cfg = SegmenterConfig(arch="unet", encoder="resnet18", pretrained=True)
    with pytest.raises(WeightsError, match=r"encoder resnet18 .*backbone_checkpoint=/path/to/resnet18\.pth"):
        build_segmenter(cfg, 3)


def test_offline_hub_id_of_mask2former_names_a_local_folder(monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    cfg = tiny_segmenter_cfg("mask2former", pretrained=True,
                             hf_weights="microsoft/swin-large-patch4-window12-384-in22k")
    with pytest.raises(WeightsError, match=r"local folder .*segment\.model\.hf_weights=/path/to/folder.*"
                                           r"segment\.model\.pretrained=false"):
        build_segmenter(cfg, 21)
    with pytest.raises(WeightsError, match="needs segment.model.hf_weights"):
        build_segmenter(tiny_segmenter_cfg("mask2former", pretrained=True), 21)


def test_random_weights_warn(caplog):
    with caplog.at_level("WARNING"):
        build_segmenter(tiny_segmenter_cfg(), 3)
        build_segmenter(tiny_segmenter_cfg("mask2former"), 3)
    assert caplog.text.count("RANDOM weights") == 2


def test_backbone_checkpoint_file_is_loaded(tmp_path):
    import timm

    torch.manual_seed(5)
    resnet = timm.create_model("resnet18", pretrained=False, **RESNET_TINY)
    path = tmp_path / "resnet_tiny.pth"
    torch.save(resnet.state_dict(), path)  # a classification checkpoint, fc included
    model = build_segmenter(tiny_segmenter_cfg(backbone_checkpoint=str(path)), 3)
    assert torch.equal(model.model.encoder.model.layer4[0].conv1.weight, resnet.layer4[0].conv1.weight)
    assert model.source == {"backbone": "tu-resnet18", "weights": "file", "path": str(path), "arch": "deeplabv3plus"}
    # a state dict saved from another wrapper ("module." prefix) loads too
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet.state_dict().items()}}, tmp_path / "wrapped.pth")
    build_segmenter(tiny_segmenter_cfg(backbone_checkpoint=str(tmp_path / "wrapped.pth")), 3)
    with pytest.raises(WeightsError, match="cannot load as tu-resnet18 encoder weights"):
        build_segmenter(tiny_segmenter_cfg(backbone_checkpoint=str(tmp_path / "missing.pth")), 3)
    wide = timm.create_model("resnet18", pretrained=False)
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(WeightsError, match="do not fit .*conv1.weight"):
        build_segmenter(tiny_segmenter_cfg(backbone_checkpoint=str(tmp_path / "wide.pth")), 3)


def test_mask2former_weights_from_a_local_folder(tmp_path):
    """A whole Mask2Former checkpoint (class head re-made for another class count) and a Swin backbone folder."""
    from transformers import Mask2FormerForUniversalSegmentation, SwinBackbone

    from semples.models.segmenters.mask2former import hf_config

    torch.manual_seed(1)
    cfg = tiny_segmenter_cfg("mask2former")
    full = Mask2FormerForUniversalSegmentation(hf_config(cfg, 7))
    full.save_pretrained(tmp_path / "m2f")
    model = build_segmenter(tiny_segmenter_cfg("mask2former", pretrained=True, hf_weights=str(tmp_path / "m2f")), 4)
    ours, theirs = model.model.state_dict(), full.state_dict()
    assert torch.equal(ours["model.pixel_level_module.encoder.swin.embeddings.patch_embeddings.projection.weight"],
                       theirs["model.pixel_level_module.encoder.swin.embeddings.patch_embeddings.projection.weight"])
    assert ours["class_predictor.weight"].shape == (5, 32) and "mask2former" in model.source["weights"]

    backbone = SwinBackbone(hf_config(cfg, 4).backbone_config)
    backbone.save_pretrained(tmp_path / "swin")
    model = build_segmenter(tiny_segmenter_cfg("mask2former", pretrained=True, hf_weights=str(tmp_path / "swin")), 4)
    assert torch.equal(model.model.model.pixel_level_module.encoder.swin.embeddings.patch_embeddings.projection.weight,
                       backbone.swin.embeddings.patch_embeddings.projection.weight)
    assert "backbone" in model.source["weights"]
    bigger = {**MASK2FORMER_TINY, "backbone_config": {**MASK2FORMER_TINY["backbone_config"], "embed_dim": 32}}
    with pytest.raises(WeightsError, match="do not fit the configured Mask2Former"):
        build_segmenter(tiny_segmenter_cfg("mask2former", pretrained=True, hf_weights=str(tmp_path / "swin"),
                                           hf_config=bigger), 4)


def test_mask2former_semantic_inference_is_the_official_one():
    from semples.models.segmenters.mask2former import semantic_scores, semantic_targets

    model = tiny_segmenter("mask2former", num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model.model(pixel_values=x)
        official = semantic_scores(out.class_queries_logits, out.masks_queries_logits)  # (1, 3, 16, 16)
        probs = model(x).softmax(1)
    up = torch.nn.functional.interpolate(official / official.sum(1, keepdim=True), size=(64, 64), mode="bilinear",
                                         align_corners=False)
    assert torch.allclose(probs, up, atol=1e-4)
    masks, classes = semantic_targets(torch.tensor([[[0, 2], [255, 2]]]))
    assert classes[0].tolist() == [0, 2] and masks[0].tolist() == [[[1, 0], [0, 0]], [[0, 1], [0, 1]]]


def _fake_checkpoint(tmp_path, model, seg_cfg, classes=None):
    import dataclasses

    from semples.utils.checkpoint_io import FORMAT

    path = tmp_path / "checkpoint.pt"
    config = {"segment": {"model": dataclasses.asdict(seg_cfg), "transform": {"normalize": "imagenet"}}}
    if classes is not None:
        config["classes"] = classes
    torch.save({"format": FORMAT, "stage": "segment", "finished": True, "progress": {"epoch": 1},
                "config": config, "modules": {"segmenter": model.state_dict()}}, path)
    return path


@pytest.mark.parametrize("name", ["segmenter_mask", "mask2former"])
def test_load_segmenter_takes_the_architecture_from_the_checkpoint(tmp_path, name):
    seg_cfg = tiny_segmenter_cfg(name, decoder_layers=1)
    model = build_segmenter(seg_cfg, 4, quiet=True).eval()
    path = _fake_checkpoint(tmp_path, model, seg_cfg, classes=["a", "b", "c"])
    # the current config names another family: the checkpoint's architecture wins, no weights are fetched
    loaded, record = load_segmenter(tmp_path, SegmenterConfig(pretrained=True, hf_weights="some/hub-id"))
    assert type(loaded) is type(model) and not loaded.training and record["classes"] == ["a", "b", "c"]
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert record["path"] == str(path) and len(record["sha256"]) == 64
    with pytest.raises(CheckpointError, match="do not fit.*6 classes incl. background"):
        load_segmenter(tmp_path, SegmenterConfig(), 6)


def test_a_checkpoint_of_the_hand_written_deeplab_is_refused_clearly(tmp_path):
    from semples.utils.checkpoint_io import FORMAT

    torch.save({"format": FORMAT, "stage": "segment", "finished": True, "progress": {"epoch": 1},
                "config": {"segment": {"model": {"name": "deeplabv3plus", "low_level_channels": 48}}},
                "modules": {"segmenter": {}}}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="older semples .*train-seg --force"):
        load_segmenter(tmp_path, SegmenterConfig(), 4)


def test_voc_semples_final_model_is_the_papers_mask2former_swin_l_and_deeplab_preset_is_deeplabs_recipe():
    """The presets as docs/segmentation.md states them; the Swin-L model is built on the meta device (no memory),
    and its size is the official Mask2Former Swin-L's (216M parameters, 195M of them the backbone)."""
    from transformers import Mask2FormerForUniversalSegmentation

    from semples.config import load_config
    from semples.models.segmenters.mask2former import hf_config

    seg = load_config("voc_semples").segment
    assert seg.model.arch == "mask2former" and seg.model.hf_weights == "microsoft/swin-large-patch4-window12-384-in22k"
    assert (seg.optimizer, seg.lr, seg.backbone_lr_mult, seg.weight_decay, seg.clip_grad_norm, seg.schedule,
            seg.warmup_epochs, seg.batch_size, seg.transform.crop_size) == \
        ("adamw", 1e-4, 0.1, 0.05, 0.01, "poly", 0.0, 16, 512)
    config = hf_config(seg.model, 21)
    swin = config.backbone_config
    assert (swin.embed_dim, list(swin.depths), list(swin.num_heads), swin.window_size, swin.image_size) == \
        (192, [2, 2, 18, 2], [6, 12, 24, 48], 12, 384)
    assert (config.num_queries, config.decoder_layers, config.class_weight, config.mask_weight, config.dice_weight,
            config.no_object_weight, config.train_num_points) == (100, 10, 2.0, 5.0, 5.0, 0.1, 12544)
    with torch.device("meta"):
        model = Mask2FormerForUniversalSegmentation(config)
    total = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.model.pixel_level_module.encoder.parameters())
    assert 214e6 < total < 217e6 and 194e6 < backbone < 197e6

    deeplab = load_config("voc_semples_deeplab").segment
    assert (deeplab.model.arch, deeplab.model.encoder, deeplab.model.output_stride) == \
        ("deeplabv3plus", "tu-resnet101", 16)
    assert (deeplab.optimizer, deeplab.momentum, deeplab.lr, deeplab.backbone_lr_mult, deeplab.weight_decay,
            deeplab.schedule, deeplab.poly_power) == ("sgd", 0.9, 0.01, 0.1, 1e-4, "poly", 0.9)
