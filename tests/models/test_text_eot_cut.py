"""The text tower cut at EOT (issue 14, item 2): under the causal mask, running prompts only up to their EOT gives
the features (and gradients) of the full-length pass."""

from __future__ import annotations

import json

import pytest
import torch

from semples.config import ClipConfig
from semples.models.clip import PromptTextEncoder, _is_causal_mask, load_clip
from semples.models.prompts import CoOpPrompts


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    err, scale = float((a - b).abs().max().detach()), float(b.abs().max().detach())
    assert err <= rel * scale, f"max |diff| {err:.3g} vs max |ref| {scale:.3g}"


def test_causal_mask_is_recognised(tiny_clip):
    assert tiny_clip.causal_text
    n = 5
    causal = torch.full((n, n), float("-inf")).triu(1)
    assert _is_causal_mask(causal, n)
    assert not _is_causal_mask(None, n)
    assert not _is_causal_mask(torch.zeros(n, n), n)
    assert not _is_causal_mask(causal[:4, :4], n)


@pytest.mark.parametrize("template", ["a photo of {}.", "{}"])
def test_prompt_features_and_gradients_equal_the_full_length_pass(tiny_clip, template):
    torch.manual_seed(0)
    enc = PromptTextEncoder(tiny_clip, 4, length=6, template=template)
    assert enc.eot_position + 1 < tiny_clip.context_length
    cut = enc()
    grad_cut = torch.autograd.grad(cut.sum(), enc.prompts)[0]
    eot = torch.full((4,), enc.eot_position, dtype=torch.long)
    full = tiny_clip.encode_embeddings(enc.sequences(enc.prompts), eot, length=tiny_clip.context_length)
    grad_full = torch.autograd.grad(full.sum(), enc.prompts)[0]
    _close(cut, full)
    _close(grad_cut, grad_full)


def test_default_length_is_the_last_eot(tiny_clip):
    enc = PromptTextEncoder(tiny_clip, 3, length=4)
    eot = torch.tensor([enc.eot_position, enc.eot_position - 2, 1])
    seqs = enc.sequences(enc.prompts.detach())
    _close(tiny_clip.encode_embeddings(seqs, eot), tiny_clip.encode_embeddings(seqs, eot, length=77))


def test_coop_prompts_cut_at_the_last_eot_of_all_prompts(tiny_clip):
    torch.manual_seed(0)
    names = ["cat", "dining table", "potted plant", "a"]
    prompts = CoOpPrompts(tiny_clip, names, context_length=3, shared=False)
    assert prompts.sequence_length == int(prompts.eot_index.max()) + 1 < tiny_clip.context_length
    cut = prompts()
    emb, eot = prompts.sequences()
    full = tiny_clip.encode_embeddings(emb, eot, length=tiny_clip.context_length)
    _close(cut, full)
    # a subset runs the same length: its features are the full set's rows
    sub = prompts(torch.tensor([3, 0]))
    torch.testing.assert_close(sub, cut[[3, 0]], rtol=1e-6, atol=1e-7)


def test_coop_sequence_length_follows_a_loaded_state_dict(tiny_clip):
    short = CoOpPrompts(tiny_clip, ["cat"], context_length=2)
    long = CoOpPrompts(tiny_clip, ["potted plant"], context_length=2)
    assert long.sequence_length > short.sequence_length
    short.load_state_dict(long.state_dict())
    assert short.sequence_length == long.sequence_length


def test_bidirectional_text_towers_run_full_length(tmp_path):
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2,
                        "no_causal_mask": True}}
    path = tmp_path / "bidir-clip.json"
    path.write_text(json.dumps(cfg))
    torch.manual_seed(0)
    clip = load_clip(ClipConfig(arch=str(path), pretrained="none"))
    assert not clip.causal_text
    enc = PromptTextEncoder(clip, 2, length=3)
    eot = torch.full((2,), enc.eot_position, dtype=torch.long)
    seqs = enc.sequences(enc.prompts.detach())
    # without a causal mask the EOT sees the padding: the result is the full-length one, whatever length says
    torch.testing.assert_close(enc(), clip.encode_embeddings(seqs, eot, length=16), rtol=0, atol=0)
    assert not torch.allclose(clip.encode_embeddings(seqs[:, : enc.eot_position + 1], eot), enc(), atol=1e-6)
