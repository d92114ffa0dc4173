"""Stages fma-classify / fma-segment: only the prompt contexts receive gradients and change; CLIP never does;
the seeds reach the stage aligned with the crop, from label PNGs or CAM files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semples.data.io import write_mask_png
from semples.infer.cam_io import save_cam
from semples.stages import STAGES, build_stage
from semples.stages.fma_classify import FmaClassifyStage
from semples.stages.fma_segment import FmaSegmentStage, SeedMaskDataset, cams_to_seed_labels
from tests.conftest import ToyDataset, toy_batch
from tests.fma_helpers import make_clip_generator


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def seed_batch(seed: int = 0) -> dict:
    batch = toy_batch(seed=seed)
    g = torch.Generator().manual_seed(seed)
    batch["mask"] = torch.randint(0, 4, (4, 64, 64), generator=g)
    batch["mask"][:, :4] = 255
    return batch


def build(name: str, clip):
    if name == "fma-classify":
        gen = make_clip_generator(clip, "classification")
        return FmaClassifyStage(gen), gen, toy_batch()
    gen = make_clip_generator(clip, "segmentation")
    return FmaSegmentStage(gen), gen, seed_batch()


def test_registered():
    assert {"fma-classify", "fma-segment"} <= set(STAGES)


@pytest.mark.parametrize("name", ["fma-classify", "fma-segment"])
def test_only_the_prompt_context_gets_gradients_and_changes(name, tiny_clip):
    stage, gen, batch = build(name, tiny_clip)
    clip_before, gen_before = snapshot(tiny_clip), snapshot(gen)
    stage.train()
    assert not tiny_clip.training
    opt = torch.optim.AdamW([p for p in stage.parameters() if p.requires_grad], lr=1e-2)
    out = stage(batch)
    assert set(stage.loss_names) <= set(out) and all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    with_grad = {n for n, p in stage.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == {"mask_generator.prompts.context"}
    assert all(p.grad is None for p in tiny_clip.parameters())
    opt.step()
    assert not changed(clip_before, tiny_clip), "CLIP must never change"
    assert changed(gen_before, gen) == {"prompts.context"}  # token ids, slots, EOT positions stay
    heads = {k.split(".")[0] for k in stage.state_dict()}
    assert heads == set(stage.trains) == {"mask_generator"} and set(stage.frozen_modules()) == {"clip"}
    info = stage.describe()
    assert info["prompts"]["kind"] == STAGES[name].prompt_set and info["frozen"]["clip"]["arch"] == "tiny-clip"


def test_classification_negatives_include_background_classes_by_default(tiny_clip):
    gen = make_clip_generator(tiny_clip, "classification")
    batch = toy_batch()
    with_bg = FmaClassifyStage(gen)(batch)["loss"]
    without_bg = FmaClassifyStage(gen, background_negatives=False)(batch)["loss"]
    assert with_bg > without_bg  # more negatives in each denominator


def test_segment_stage_needs_seeds_and_handles_batches_without_pairs(tiny_clip):
    stage, _, batch = build("fma-segment", tiny_clip)
    with pytest.raises(KeyError, match="seeds"):
        stage({"image": batch["image"], "labels": batch["labels"]})
    batch["labels"].zero_()
    out = stage(batch)
    assert out["loss"].item() == 0.0 and out["loss"].requires_grad


def test_fma_stages_refuse_other_generators_and_fixed_prompts(tiny_clip):
    from tests.conftest import make_generator

    with pytest.raises(TypeError):
        FmaClassifyStage(make_generator(3))
    with pytest.raises(ValueError, match="learnable"):
        FmaSegmentStage(make_clip_generator(tiny_clip, "handcrafted"))


@pytest.mark.parametrize("fmt", ["png", "cams"])
def test_seed_dataset_reads_pngs_and_cam_files(fmt, tmp_path):
    base = ToyDataset(n=3)
    for i, image_id in enumerate(base.ids):
        mask = base.load_mask(i)
        if fmt == "png":
            write_mask_png(tmp_path / f"{image_id}.png", mask)
        else:  # one exact map per labelled class: thresholding at 0.5 gives the mask back
            classes = np.flatnonzero(base.labels(i))
            save_cam(tmp_path / f"{image_id}.npz", np.stack([(mask == k + 1) for k in classes]).astype(np.float32),
                     classes)
    ds = SeedMaskDataset(base, tmp_path, threshold=0.5 if fmt == "cams" else None)
    for i in range(3):
        np.testing.assert_array_equal(ds.load_mask(i), base.load_mask(i))
        np.testing.assert_array_equal(ds.labels(i), base.labels(i))
    if fmt == "cams":
        from semples.utils.dataclass_config import ConfigError

        with pytest.raises(ConfigError, match="seeds_threshold"):
            SeedMaskDataset(base, tmp_path)


def test_seed_dataset_names_the_missing_file(tmp_path):
    from semples.data.base import DataError

    base = ToyDataset(n=2)
    write_mask_png(tmp_path / f"{base.ids[0]}.png", base.load_mask(0))
    with pytest.raises(DataError, match=base.ids[1]):
        SeedMaskDataset(base, tmp_path)


def test_cams_to_seed_labels():
    cams = np.array([[[0.9, 0.2], [0.4, 0.0]], [[0.1, 0.7], [0.45, 0.0]]], np.float32)
    labels = cams_to_seed_labels(cams, np.array([4, 1]), threshold=0.3)
    np.testing.assert_array_equal(labels, [[5, 2], [2, 0]])  # label = class + 1; 0 where t = 0.3 wins


def test_build_stage_fixes_the_generator_and_wraps_the_dataset(tiny_clip, tmp_path, tiny_cfg):
    base = ToyDataset(n=2)
    for i, image_id in enumerate(base.ids):
        write_mask_png(tmp_path / f"{image_id}.png", base.load_mask(i))
    built = build_stage("fma-segment", tiny_cfg, base.classes, clip=tiny_clip, seeds=str(tmp_path), dataset=base)
    assert built.config.generator.name == "clip_gradcam" and built.config.generator.clip_cam.prompts == "segmentation"
    assert built.with_mask and isinstance(built.dataset, SeedMaskDataset)
    assert built.inputs["seeds"]["dir"] == str(tmp_path)
    assert built.stage.mask_generator.prompt_record()["background_names"][0] == "water"  # the synthetic world's
    from semples.errors import ConfigError

    with pytest.raises(ConfigError, match="--seeds"):
        build_stage("fma-segment", tiny_cfg, base.classes, clip=tiny_clip)
    built = build_stage("fma-classify", tiny_cfg, base.classes, clip=tiny_clip)
    assert built.config.generator.clip_cam.prompts == "classification" and built.stage.mask_generator.prompts.shared
