"""Each stage trains exactly its own parts: one optimiser step changes them and nothing else."""

from __future__ import annotations

import copy

import pytest
import torch

from semples.config import LossConfig, MaskingConfig
from semples.models.clip import PromptTextEncoder
from semples.stages import ClassifyStage, JointStage, MatchStage, PromptStage, RefineStage
from semples.stages.masking import masked_images, minmax_normalize, positive_pairs
from tests.conftest import make_generator, toy_batch

NAMES = ["cat", "dog", "boat"]


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def build(name: str, clip):
    gen = make_generator(3)
    loss, masking = LossConfig(), MaskingConfig()
    prompts = PromptTextEncoder(clip, 3, length=4)
    if name == "classify":
        return ClassifyStage(gen), gen, prompts
    if name == "match":
        return MatchStage(gen, clip, NAMES, loss=loss, masking=masking), gen, prompts
    if name == "prompt":
        return PromptStage(gen, prompts, clip, NAMES, loss=loss, masking=masking), gen, prompts
    if name == "refine":
        return RefineStage(gen, prompts, clip, NAMES, loss=loss, masking=masking), gen, prompts
    return JointStage(gen, prompts, clip, NAMES, loss=loss, masking=masking), gen, prompts


TRUNK_PREFIXES = ("embed.", "blocks.", "norm.")
HEAD = {"head.weight", "head.bias", "fusion.mlp.0.weight", "fusion.mlp.0.bias", "fusion.mlp.2.weight",
        "fusion.mlp.2.bias"}


@pytest.mark.parametrize("name", ["classify", "match", "prompt", "refine", "joint"])
def test_one_step_changes_exactly_the_trainable_parts(name, tiny_clip):
    stage, gen, prompts = build(name, tiny_clip)
    clip_before, gen_before, prompts_before = snapshot(tiny_clip), snapshot(gen), snapshot(prompts)
    stage.train()
    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=1e-2)
    out = stage(toy_batch())
    assert set(stage.loss_names) <= set(out) and "loss" in out
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    # every trainable parameter receives a gradient
    no_grad = [n for n, p in stage.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not no_grad, no_grad
    opt.step()
    assert not changed(clip_before, tiny_clip), "CLIP must never change"
    gen_changed = changed(gen_before, gen)
    if name == "classify":
        assert gen_changed == set(gen_before), "stage classify trains the whole generator"
    elif name == "prompt":
        assert not gen_changed, "stage prompt must not touch S"
    else:
        assert gen_changed == HEAD, f"trunk frozen by default: {sorted(gen_changed ^ HEAD)}"
    prompts_changed = changed(prompts_before, prompts)
    assert bool(prompts_changed) == (name in ("prompt", "joint"))


@pytest.mark.parametrize("name", ["classify", "match", "prompt", "refine", "joint"])
def test_checkpointed_state_holds_only_trainable_parts(name, tiny_clip):
    stage, _, _ = build(name, tiny_clip)
    heads = {k.split(".")[0] for k in stage.state_dict()}
    assert heads == set(stage.trains)
    assert set(stage.frozen) == set(stage.frozen_modules())
    assert "clip" not in heads and not any("text_features" in k for k in stage.state_dict())


def test_frozen_parts_stay_in_eval_mode(tiny_clip):
    stage, gen, _ = build("prompt", tiny_clip)
    stage.train()
    assert not gen.training and not tiny_clip.training
    stage, gen, _ = build("match", tiny_clip)
    stage.train()
    assert gen.training and gen.head.training and not gen.blocks.training  # trunk frozen -> eval


def test_train_trunk_flag_trains_the_trunk(tiny_clip):
    gen = make_generator(3)
    stage = MatchStage(gen, tiny_clip, NAMES, loss=LossConfig(), masking=MaskingConfig(), train_trunk=True)
    before = snapshot(gen)
    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=1e-2)
    stage.train()
    stage(toy_batch())["loss"].backward()
    opt.step()
    assert any(k.startswith(TRUNK_PREFIXES) for k in changed(before, gen))


def test_refine_encodes_prompts_once_and_text_once(tiny_clip, monkeypatch):
    calls = {"prompts": 0}
    stage, _, prompts = build("refine", tiny_clip)
    original = prompts.forward
    monkeypatch.setattr(prompts, "forward", lambda *a, **k: calls.__setitem__("prompts", calls["prompts"] + 1)
                        or original(*a, **k))
    monkeypatch.setattr(tiny_clip, "encode_text", lambda *a: pytest.fail("text re-encoded during a step"))
    for seed in range(2):
        stage(toy_batch(seed=seed))["loss"].backward()
    assert calls["prompts"] == 0  # u^b was computed when the stage was built


def test_clip_image_tower_runs_once_per_step_on_2p_images(tiny_clip, monkeypatch):
    stage, _, _ = build("refine", tiny_clip)
    seen = []
    original = tiny_clip.encode_image
    monkeypatch.setattr(tiny_clip, "encode_image", lambda x: seen.append(x.shape[0]) or original(x))
    batch = toy_batch()
    stage(batch)
    assert seen == [2 * int(batch["labels"].sum())]


def test_batch_without_positive_pairs_gives_zero_loss_with_graph(tiny_clip):
    stage, _, _ = build("match", tiny_clip)
    batch = toy_batch()
    batch["labels"].zero_()
    out = stage(batch)
    assert out["loss"].item() == 0.0 and out["loss"].requires_grad


def test_minmax_and_masked_image_spaces():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    m = minmax_normalize(maps, eps=0.1)
    torch.testing.assert_close(m, torch.tensor([[[0.0, 1 / 4.1], [2 / 4.1, 4 / 4.1]]]))
    images = torch.randn(1, 3, 2, 2)
    fg, bg = masked_images(images, m, space="normalized")
    torch.testing.assert_close(fg + bg, images)
    torch.testing.assert_close(fg, images * m[:, None])
    from semples.data.transforms import denormalize, normalize

    fg_p, bg_p = masked_images(images, m, space="pixel", data_norm="imagenet")
    pix = denormalize(images, "imagenet")
    torch.testing.assert_close(fg_p, normalize(pix * m[:, None], "clip"))
    torch.testing.assert_close(bg_p, normalize(pix * (1 - m[:, None]), "clip"))
    # masked-out pixels become CLIP's mean colour in pixel space, the data mean in normalised space
    zero = torch.zeros(1, 2, 2)
    fg0, _ = masked_images(images, zero, space="normalized")
    assert fg0.abs().max() == 0


def test_positive_pairs_order():
    n, k = positive_pairs(torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    assert n.tolist() == [0, 0, 1] and k.tolist() == [1, 2, 0]


def test_stage_moves_frozen_parts_with_it(tiny_clip):
    clip = copy.deepcopy(tiny_clip)
    stage = MatchStage(make_generator(3), clip, NAMES, loss=LossConfig(), masking=MaskingConfig())
    stage.to(torch.float64)
    assert next(clip.parameters()).dtype == torch.float64
    assert stage.text_features.dtype == torch.float64
