"""CoOp prompts: token layout (class name last / first), shared vs per-class contexts, only the contexts learn;
hand-written prompts; background names per dataset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semples.config import load_config
from semples.data.coco import background_names as coco_background_names
from semples.data.voc import VOC_BACKGROUND_NAMES
from semples.models.prompts import (
    CoOpPrompts,
    HandcraftedPrompts,
    background_names_for,
)


@pytest.mark.parametrize("position", ["end", "front"])
def test_token_layout(position, tiny_clip):
    p = CoOpPrompts(tiny_clip, ["dining table", "cat"], context_length=3, shared=False, class_position=position)
    sot, eot, dot = tiny_clip.sot_id, tiny_clip.eot_id, tiny_clip.token_ids(".")
    name = tiny_clip.token_ids("dining table")
    assert len(name) == 2
    ids, slots = p.token_ids[0].tolist(), p.context_slots[0].tolist()
    if position == "end":  # [SOT] c c c dining table . [EOT]
        assert slots[:7] == [False, True, True, True, False, False, False]
        assert ids[0] == sot and ids[4:6] == name and ids[6:7] == dot and ids[7] == eot
    else:  # [SOT] dining table c c c . [EOT]
        assert slots[:7] == [False, False, False, True, True, True, False]
        assert ids[0] == sot and ids[1:3] == name and ids[6:7] == dot and ids[7] == eot
    assert p.eot_index.tolist() == [7, 6]
    assert p.holds_name(0, "dining table") and p.holds_name(1, "cat") and not p.holds_name(1, "dog")


def test_sequences_put_the_context_in_its_slots(tiny_clip):
    p = CoOpPrompts(tiny_clip, ["cat", "boat"], context_length=2, shared=False, class_position="front")
    emb, eot = p.sequences()
    assert emb.shape == (2, tiny_clip.context_length, tiny_clip.token_width)
    torch.testing.assert_close(emb[0, 2:4], p.context[0])
    torch.testing.assert_close(emb[1, 2:4], p.context[1])
    torch.testing.assert_close(emb[0, 0], tiny_clip.embed_tokens(torch.tensor([[tiny_clip.sot_id]]))[0, 0])
    # the features are the text tower's, read at the EOT position
    torch.testing.assert_close(p(), tiny_clip.encode_embeddings(emb, eot))
    torch.testing.assert_close(p(torch.tensor([1])), p()[1:])


def test_shared_context_and_gradients_reach_only_the_context(tiny_clip):
    shared = CoOpPrompts(tiny_clip, ["cat", "dog", "boat"], context_length=4, shared=True)
    per_class = CoOpPrompts(tiny_clip, ["cat", "dog", "boat"], context_length=4, shared=False)
    assert shared.context.shape == (1, 4, tiny_clip.token_width) and shared.shared
    assert per_class.context.shape == (3, 4, tiny_clip.token_width) and not per_class.shared
    before = {k: v.clone() for k, v in tiny_clip.state_dict().items()}
    per_class()[1].sum().backward()
    g = per_class.context.grad
    assert g[1].abs().sum() > 0 and g[0].abs().sum() == 0 and g[2].abs().sum() == 0
    assert [n for n, _ in per_class.named_parameters()] == ["context"]
    assert all(p.grad is None for p in tiny_clip.parameters())
    assert all(torch.equal(v, tiny_clip.state_dict()[k]) for k, v in before.items())


def test_init_text_sets_the_first_context_vectors(tiny_clip):
    p = CoOpPrompts(tiny_clip, ["cat"], context_length=6, init_text="a photo of a")
    words = tiny_clip.embed_tokens(torch.tensor([tiny_clip.token_ids("a photo of a")]))[0]
    torch.testing.assert_close(p.context[0, :4], words.float())


def test_too_long_prompts_are_refused(tiny_clip):
    with pytest.raises(ValueError, match="positions"):
        CoOpPrompts(tiny_clip, ["cat"], context_length=80)


def test_handcrafted_prompts_average_normalised_template_features(tiny_clip):
    templates = ("a photo of a {}.", "a clean origami {}.")
    p = HandcraftedPrompts(tiny_clip, ["cat", "dog"], templates)
    with torch.no_grad():
        want = sum(F.normalize(tiny_clip.encode_text([t.format(n) for n in ("cat", "dog")]), dim=-1)
                   for t in templates) / 2
    torch.testing.assert_close(p(), want)
    assert list(p.parameters()) == [] and p.state_dict() == {}


def test_background_names_per_dataset():
    tiny = load_config("tiny")
    assert background_names_for(tiny.data) == ("water", "the sky", "grass", "railway tracks", "sand", "snow",
                                               "a brick wall", "tiles")
    voc = load_config("voc_semples")
    assert background_names_for(voc.data) == VOC_BACKGROUND_NAMES and len(VOC_BACKGROUND_NAMES) == 25
    assert background_names_for(load_config("coco_semples").data) == coco_background_names()
    assert "keyboard" not in coco_background_names()
    assert background_names_for(voc.data, ["ground", "sky"]) == ("ground", "sky")
