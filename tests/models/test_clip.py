"""Frozen CLIP wrapper and the prompt text path."""

from __future__ import annotations

import pytest
import torch

from semples.config import ClipConfig
from semples.errors import WeightsError
from semples.models.clip import FrozenCLIP, PromptTextEncoder, load_clip


def test_prompt_path_reproduces_encode_text_in_template(tiny_clip: FrozenCLIP):
    # the real token embeddings of "a dog" in the class slot of "a photo of {}." must give encode_text exactly
    sentence = "a photo of a dog."
    ids = tiny_clip.token_ids("a dog")
    vectors = tiny_clip.embed_tokens(torch.tensor([ids]))
    enc = PromptTextEncoder(tiny_clip, 1, length=len(ids), template="a photo of {}.")
    assert enc.eot_position == 5 + len(ids)
    torch.testing.assert_close(enc.encode_vectors(vectors), tiny_clip.encode_text([sentence]), rtol=1e-5, atol=1e-6)


def test_prompt_path_reproduces_encode_text_bare_and_batched(tiny_clip: FrozenCLIP):
    sentences = ["a photo of a cat on the grass.", "a photo of a dog on the snow."]
    ids = [tiny_clip.token_ids(s) for s in sentences]
    assert len(ids[0]) == len(ids[1])  # same length so they batch as one (N, L, D) tensor
    vectors = tiny_clip.embed_tokens(torch.tensor(ids))
    enc = PromptTextEncoder(tiny_clip, 2, length=len(ids[0]), template="{}")
    assert enc.eot_position == 1 + len(ids[0])
    torch.testing.assert_close(enc.encode_vectors(vectors), tiny_clip.encode_text(sentences), rtol=1e-5, atol=1e-6)


def test_prompt_encoder_params_and_init(tiny_clip: FrozenCLIP):
    enc = PromptTextEncoder(tiny_clip, 5, length=7)
    assert list(enc.state_dict()) == ["prompts"]  # CLIP is held aside, never saved with the prompts
    assert enc.prompts.shape == (5, 7, tiny_clip.token_width)
    assert 0.0 <= float(enc.prompts.detach().min()) and float(enc.prompts.detach().max()) < 1.0  # U[0, 1) by default
    assert [n for n, _ in enc.named_parameters()] == ["prompts"]
    feats = enc(torch.tensor([4, 1]))
    assert feats.shape == (2, tiny_clip.embed_dim)
    feats.sum().backward()
    grad = enc.prompts.grad
    assert grad[[1, 4]].abs().sum() > 0 and grad[[0, 2, 3]].abs().sum() == 0


def test_prompt_template_too_long_is_an_error(tiny_clip: FrozenCLIP):
    with pytest.raises(ValueError, match="positions"):
        PromptTextEncoder(tiny_clip, 1, length=80)
    with pytest.raises(ValueError, match="exactly one"):
        PromptTextEncoder(tiny_clip, 1, length=3, template="no slot")


def test_clip_is_frozen_but_passes_gradients_to_inputs(tiny_clip: FrozenCLIP):
    assert not any(p.requires_grad for p in tiny_clip.parameters())
    tiny_clip.train()
    assert not tiny_clip.training and not any(m.training for m in tiny_clip.modules())
    images = torch.randn(2, 3, 40, 40, requires_grad=True)  # resized to the tower's 32 px inside
    feats = tiny_clip.encode_image(images)
    assert feats.shape == (2, tiny_clip.embed_dim)
    feats.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_class_text_features_are_computed_once(tiny_clip: FrozenCLIP, monkeypatch):
    calls = []
    original = tiny_clip.encode_text
    monkeypatch.setattr(tiny_clip, "encode_text", lambda texts: calls.append(texts) or original(texts))
    a = tiny_clip.class_text_features(["zebra", "yak"], "a photo of {}.")
    b = tiny_clip.class_text_features(["zebra", "yak"], "a photo of {}.")
    assert a is b and len(calls) == 1
    torch.testing.assert_close(a, original(["a photo of zebra.", "a photo of yak."]))


def test_local_checkpoint_loads_exactly(tmp_path, tiny_clip: FrozenCLIP):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    loaded = load_clip(ClipConfig(arch="tiny-clip", pretrained=str(path)))
    for (name, a), (_, b) in zip(tiny_clip.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.source["sha256"] and len(loaded.source["sha256"]) == 64


def test_default_and_custom_blocks_agree(tmp_path, tiny_clip: FrozenCLIP):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    default = load_clip(ClipConfig(arch="tiny-clip", pretrained=str(path), block_type="default"))
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(default.encode_image(images), tiny_clip.encode_image(images), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(default.encode_text(["a dog"]), tiny_clip.encode_text(["a dog"]), rtol=1e-4,
                               atol=1e-5)


def test_missing_weights_give_one_clear_error(monkeypatch):
    import open_clip

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(WeightsError, match=r"clip\.pretrained=/path/to/ViT-B-32\.pt"):
        load_clip(ClipConfig(arch="ViT-B-32", pretrained="openai"))
    with pytest.raises(WeightsError, match="neither a file nor a pretrained tag"):
        load_clip(ClipConfig(arch="ViT-B-32", pretrained="/no/such/file.pt"))
    with pytest.raises(WeightsError, match="unknown open_clip architecture"):
        load_clip(ClipConfig(arch="ViT-Q-99", pretrained="none"))


def test_corrupt_weights_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="bad.pt"):
        load_clip(ClipConfig(arch="tiny-clip", pretrained=str(bad)))
