"""Opt-in torch.compile of the frozen CLIP (clip.compile): in place, names and weights untouched."""

from __future__ import annotations

import pytest
import torch

from semples.config import ClipConfig
from semples.models.clip import load_clip
from semples.models.compile import compile_in_place


def test_compile_flag_compiles_both_towers_in_place():
    torch.manual_seed(0)
    eager = load_clip(ClipConfig(arch="tiny-clip", pretrained="none"))
    torch.manual_seed(0)
    compiled = load_clip(ClipConfig(arch="tiny-clip", pretrained="none", compile="default"))
    assert getattr(eager.model.visual, "_compiled_call_impl", None) is None
    assert compiled.model.visual._compiled_call_impl is not None
    assert compiled.model.transformer._compiled_call_impl is not None
    a, b = eager.state_dict(), compiled.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="compile mode"):
        compile_in_place(torch.nn.Linear(2, 2), "fastest")


@pytest.mark.slow
def test_compiled_clip_computes_the_same_features():
    """Inductor compilation of the tiny CLIP (tens of seconds on a 2-core CPU)."""
    torch.manual_seed(0)
    eager = load_clip(ClipConfig(arch="tiny-clip", pretrained="none"))
    torch.manual_seed(0)
    compiled = load_clip(ClipConfig(arch="tiny-clip", pretrained="none", compile="default"))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(compiled.encode_image(x), eager.encode_image(x), rtol=1e-4, atol=1e-5)
