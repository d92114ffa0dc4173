"""SemPLeS' match / prompt / refine train every mask generator through one interface (paper Table 3): WeakTr ViT,
ResNet-50-style CAM network, CLIP Grad-CAM. One optimiser step changes exactly the generator's trainable parts."""

from __future__ import annotations

import pytest
import torch

from semples.config import LossConfig, MaskingConfig
from semples.models.clip import PromptTextEncoder
from semples.stages import ClassifyStage, MatchStage, PromptStage, RefineStage
from tests.conftest import make_generator, toy_batch
from tests.fma_helpers import NAMES, make_clip_generator, make_resnet_generator

# what a SemPLeS stage (trunk frozen, the default) trains in each generator
TRAINED = {
    "weaktr": {"head.weight", "head.bias", "fusion.mlp.0.weight", "fusion.mlp.0.bias", "fusion.mlp.2.weight",
               "fusion.mlp.2.bias"},
    "resnet": {"head.weight"},
    "clip": {"prompts.context"},
}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def generator(kind: str, clip):
    if kind == "weaktr":
        return make_generator(3)
    if kind == "resnet":
        return make_resnet_generator(3)
    return make_clip_generator(clip, "segmentation")


def build(stage: str, gen, clip, prompts):
    common = dict(loss=LossConfig(), masking=MaskingConfig())
    if stage == "match":
        return MatchStage(gen, clip, NAMES, **common)
    if stage == "prompt":
        return PromptStage(gen, prompts, clip, NAMES, **common)
    return RefineStage(gen, prompts, clip, NAMES, **common)


@pytest.mark.parametrize("stage_name", ["match", "prompt", "refine"])
@pytest.mark.parametrize("kind", ["weaktr", "resnet", "clip"])
def test_one_step_changes_exactly_the_trainable_parts(kind, stage_name, tiny_clip):
    gen = generator(kind, tiny_clip)
    torch.manual_seed(1)
    prompts = PromptTextEncoder(tiny_clip, 3, length=4)
    stage = build(stage_name, gen, tiny_clip, prompts)
    clip_before, gen_before, prompts_before = snapshot(tiny_clip), snapshot(gen), snapshot(prompts)
    stage.train()
    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=1e-2)
    out = stage(toy_batch())
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    no_grad = [n for n, p in stage.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not no_grad, no_grad
    opt.step()
    assert not changed(clip_before, tiny_clip), "CLIP must never change"
    want = set() if stage_name == "prompt" else TRAINED[kind]
    assert changed(gen_before, gen) == want
    assert bool(changed(prompts_before, prompts)) == (stage_name == "prompt")


def test_classify_trains_the_whole_resnet_from_its_gap_logits():
    gen = make_resnet_generator(3)
    before = snapshot(gen)
    stage = ClassifyStage(gen)
    stage.train()
    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=1e-2)
    out = stage(toy_batch())
    assert "gap_loss" in out and torch.isfinite(out["loss"])
    out["loss"].backward()
    opt.step()
    assert all(p.requires_grad for p in gen.parameters())  # stage classify trains the whole network
    moved = changed(before, gen)
    assert {"head.weight", "backbone.conv1.weight", "backbone.layer4.0.conv2.weight"} <= moved


def test_train_trunk_trains_the_resnet_backbone(tiny_clip):
    gen = make_resnet_generator(3)
    before = snapshot(gen)
    stage = MatchStage(gen, tiny_clip, NAMES, loss=LossConfig(), masking=MaskingConfig(), train_trunk=True)
    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=1e-2)
    stage.train()
    stage(toy_batch())["loss"].backward()
    opt.step()
    assert any(k.startswith("backbone.") for k in changed(before, gen))


def test_clip_generator_gets_the_labels_in_semples_stages(tiny_clip, monkeypatch):
    gen = make_clip_generator(tiny_clip)
    seen = []
    original = gen.forward
    monkeypatch.setattr(gen, "forward", lambda images, labels=None: seen.append(labels) or original(images, labels))
    stage = MatchStage(gen, tiny_clip, NAMES, loss=LossConfig(), masking=MaskingConfig())
    batch = toy_batch()
    stage(batch)
    assert seen and torch.equal(seen[0], batch["labels"])
