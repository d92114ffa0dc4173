"""Backbone weights files are loaded strictly (issue 12, item 1): a file that does not fit is an error, never random
weights; wrappers and prefixes are found; what loaded is reported and recorded in the manifest."""

from __future__ import annotations

import pytest
import torch

from semples.config import GeneratorConfig
from semples.errors import WeightsError
from semples.models.mask_generators import build_generator, load_generator
from semples.models.weights import create_timm_model, load_backbone_weights, match_prefix, unwrap_state_dict

VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 64}


def tiny_vit(seed: int = 3, **overrides):
    import timm

    torch.manual_seed(seed)
    return timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=10, **{**VIT, **overrides})


def generator_from(path, **kwargs):
    return build_generator(GeneratorConfig(backbone_checkpoint=str(path), backbone_kwargs=VIT, **kwargs), 2)


def test_keys_that_match_nothing_are_an_error_not_random_weights(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({f"layer{i}.weight": torch.randn(8, 8) for i in range(5)}, path)
    with pytest.raises(WeightsError) as info:
        generator_from(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "generator.backbone_checkpoint" in msg
    assert "0% of the model's parameters" in msg and "missing" in msg and "unexpected 5" in msg


@pytest.mark.parametrize("wrap", [
    lambda sd: {"module." + k: v for k, v in sd.items()},  # DataParallel / DDP
    lambda sd: {"model": {"model." + k: v for k, v in sd.items()}},  # a training script's container + prefix
    lambda sd: {"state_dict": sd, "epoch": 3, "optimizer": {}},  # a checkpoint with more than weights
    lambda sd: {"model_ema": {"module." + k: v for k, v in sd.items()}, "model": {}},  # EMA weights first (timm)
    lambda sd: {**{"backbone." + k: v for k, v in sd.items()}, "decode_head.conv.weight": torch.zeros(3, 3)},
], ids=["module.", "model+model.", "state_dict", "model_ema", "whole-model backbone."])
def test_wrappers_and_prefixes_are_found_and_everything_loads(tmp_path, wrap):
    vit = tiny_vit()
    path = tmp_path / "w.pth"
    torch.save(wrap(vit.state_dict()), path)
    gen = generator_from(path)
    assert torch.equal(gen.blocks[1].attn.qkv.weight, vit.blocks[1].attn.qkv.weight)
    assert torch.equal(gen.embed.pos_embed, vit.pos_embed[:, 1:])
    record = gen.backbone_weights
    assert record["fraction_of_model"] == 1.0 and record["num_missing"] == 0
    assert record["heads_dropped"] == 2  # head.weight / head.bias: the head the generator replaces


def test_a_missing_block_is_refused(tmp_path):
    state = {k: v for k, v in tiny_vit().state_dict().items() if not k.startswith("blocks.1.")}
    path = tmp_path / "half.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"of the model's parameters would load \(needs 99%.*missing \d+: blocks\.1"):
        generator_from(path)


def test_a_bigger_architecture_whose_first_layers_fit_is_refused(tmp_path):
    path = tmp_path / "deeper.pth"
    torch.save(tiny_vit(depth=4).state_dict(), path)  # blocks 0-1 fit the 2-block model exactly
    with pytest.raises(WeightsError, match=r"only \d+% of the file's tensors fit the model.*unexpected \d+: blocks\.2"):
        generator_from(path)


def test_a_shape_mismatch_names_the_tensor(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(tiny_vit(embed_dim=64).state_dict(), path)
    with pytest.raises(WeightsError, match=r"cls_token is \(1, 1, 64\) in the file, \(1, 1, 32\) in the model"):
        generator_from(path)


def test_a_small_tolerated_gap_loads_and_is_reported(tmp_path, caplog):
    state = tiny_vit().state_dict()
    del state["norm.bias"]  # 32 of ~30k parameters
    state["dist_token"] = torch.zeros(1, 1, 32)  # a distilled checkpoint's extra token
    path = tmp_path / "near.pth"
    torch.save(state, path)
    gen = generator_from(path)
    record = gen.backbone_weights
    assert record["missing"] == ["norm.bias"] and record["unexpected"] == ["dist_token"]
    assert 0.99 < record["fraction_of_model"] < 1.0
    assert "missing 1: norm.bias" in caplog.text and "unexpected 1: dist_token" in caplog.text


def test_the_manifest_record_of_a_fresh_generator_names_what_loaded(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"model": tiny_vit().state_dict()}, path)
    cfg = GeneratorConfig(backbone_checkpoint=str(path), backbone_kwargs=VIT)
    _, record = load_generator(None, cfg, 2)
    assert record["fresh"]["backbone_checkpoint"] == str(path)
    weights = record["backbone_weights"]
    assert weights["path"] == str(path) and len(weights["sha256"]) == 64 and weights["loaded"] > 0


def test_safetensors_files_load(tmp_path):
    from safetensors.torch import save_file

    vit = tiny_vit()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    gen = generator_from(path)
    assert torch.equal(gen.blocks[0].mlp.fc1.weight, vit.blocks[0].mlp.fc1.weight)


class _Payload:  # a pickled object: weights_only refuses to build it (no code from a file runs)
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("content", [b"not a checkpoint at all", None], ids=["garbage", "pickled-code"])
def test_unreadable_or_code_carrying_files_are_one_line_errors(tmp_path, content, capsys):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save({"x": _Payload()}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=r"cannot read as weights") as info:
        generator_from(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert "must never run" not in capsys.readouterr().out


def test_resnet_backbone_files_with_their_fc_head_load_strictly(tmp_path):
    import timm

    torch.manual_seed(0)
    kwargs = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]}
    net = timm.create_model("resnet18", pretrained=False, **kwargs)  # with its 1000-class fc, torchvision-style
    path = tmp_path / "r.pth"
    torch.save(net.state_dict(), path)
    model = create_timm_model("resnet18", pretrained=False, checkpoint=str(path), config_key="generator",
                              num_classes=0, **kwargs)
    assert torch.equal(model.layer3[0].conv1.weight, net.layer3[0].conv1.weight)
    assert model.weights_record["heads_dropped"] == 2 and model.weights_record["num_unexpected"] == 0


def test_missing_file_names_the_setting(tmp_path):
    with pytest.raises(WeightsError, match=r"nope\.pth: generator\.backbone_checkpoint file not found"):
        generator_from(tmp_path / "nope.pth")


def test_prefix_matching_and_unwrapping():
    own = {"blocks.0.w", "blocks.1.w", "norm.w"}
    assert match_prefix(["module.blocks.0.w", "module.blocks.1.w", "module.norm.w"], own) == ("module.", "")
    assert match_prefix(["blocks.0.w", "norm.w"], {"model.blocks.0.w", "model.norm.w"}) == ("", "model.")
    assert match_prefix(["a.b", "c.d"], own) == ("", "")
    t = torch.zeros(1)
    assert unwrap_state_dict({"state_dict": {"model": {"w": t}}}) == {"w": t}
    assert unwrap_state_dict({"w": t, "step": 3}) == {"w": t}


def test_load_backbone_weights_is_usable_on_any_module(tmp_path):
    """The segmenter side calls the same function (its own config key in the messages)."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    path = tmp_path / "seq.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)
    other = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    record = load_backbone_weights(other, path, config_key="segment.model.backbone_checkpoint")
    assert record["prefix"] == "module." and torch.equal(other[1].weight, net[1].weight)
    with pytest.raises(WeightsError, match=r"segment\.model\.backbone_checkpoint"):
        load_backbone_weights(torch.nn.Linear(3, 3), path, config_key="segment.model.backbone_checkpoint")


def test_feature_extractors_of_the_segmenter_side(tmp_path):
    """What the final model's backbones need: timm features_only models, a cut-off last stage (`unused`), and
    SMP-style encoders that hold the timm model as ``.model`` (a model-side prefix)."""
    import timm

    kwargs = {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128]}
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, **kwargs)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    key = "segment.model"
    full = create_timm_model("resnet18", pretrained=False, checkpoint=str(path), config_key=key, features_only=True,
                             out_indices=(1, 2, 3, 4), **kwargs)
    assert torch.equal(full.layer4[0].conv1.weight, net.layer4[0].conv1.weight)
    with pytest.raises(WeightsError, match=r"only \d+% of the file's tensors fit the model.*unexpected \d+: layer4"):
        create_timm_model("resnet18", pretrained=False, checkpoint=str(path), config_key=key, features_only=True,
                          out_indices=(1, 2, 3), **kwargs)
    cut = create_timm_model("resnet18", pretrained=False, checkpoint=str(path), config_key=key, features_only=True,
                            out_indices=(1, 2, 3), unused=("layer4.",), **kwargs)
    assert torch.equal(cut.layer3[0].conv1.weight, net.layer3[0].conv1.weight)

    class Encoder(torch.nn.Module):  # segmentation_models_pytorch's TimmUniversalEncoder keeps it as .model
        def __init__(self):
            super().__init__()
            self.model = timm.create_model("resnet18", pretrained=False, features_only=True, **kwargs)

    enc = Encoder()
    record = load_backbone_weights(enc, path, config_key=f"{key}.backbone_checkpoint")
    assert torch.equal(enc.model.layer2[0].conv1.weight, net.layer2[0].conv1.weight)
    assert record["fraction_of_model"] == 1.0
