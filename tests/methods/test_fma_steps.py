"""FMA seeds and pseudo masks land in the folder formats the shared verbs read: CAM folders for eval-seeds /
pseudo-masks, label PNGs for eval-masks / stage fma-segment."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semples.cli import main
from semples.config import load_config
from semples.data import build_dataset
from semples.errors import ReuseError
from semples.infer.caa import caa_refine_full, clip_attention
from semples.infer.cam_io import cam_path, load_cam
from semples.infer.clip_cams import clip_seed_maps
from semples.methods.fma import sams_seeds as fma_seeds
from semples.steps.caa import run as semples_fma_cams
from semples.steps.clip_cams import run as fma_cams


@pytest.fixture
def cfg(tmp_path):
    return load_config("tiny", [f"output_dir={tmp_path}", "cams.scales=[1.0]", "pseudo.workers=0",
                                "pseudo.superpixels.n_segments=16"])


def test_clip_cams_seeds_and_their_evaluation(cfg, tmp_path, tiny_clip, capsys):
    cams_dir, seeds_dir = tmp_path / "cams" / "coarse", tmp_path / "seeds" / "coarse"
    manifest = fma_cams(cfg, None, cams_dir, phase="coarse", prompts="handcrafted", clip=tiny_clip, progress=False)
    dataset = build_dataset(cfg.data, "train")
    assert manifest["complete"] and manifest["data"]["split"] == "train"
    assert manifest["settings"]["box_threshold"] == 0.4 and manifest["settings"]["prompts"]["kind"] == "handcrafted"
    for i in range(len(dataset)):
        cams, classes = load_cam(cam_path(cams_dir, dataset.ids[i]))
        image = dataset.load_image(i)
        np.testing.assert_array_equal(classes, np.flatnonzero(dataset.labels(i)))
        assert cams.shape == (len(classes), image.height, image.width) and cams.min() >= 0 and cams.max() < 1
    # a re-run continues (nothing left to do); other settings never mix into the folder
    again = fma_cams(cfg, None, cams_dir, phase="coarse", prompts="handcrafted", clip=tiny_clip, progress=False)
    assert again["counts"]["written_this_run"] == 0
    with pytest.raises(ReuseError, match="other inputs or settings.*box_threshold: 0.4 -> 0.5"):
        fma_cams(cfg, None, cams_dir, phase="fine", prompts="handcrafted", clip=tiny_clip, progress=False)

    assert main(["eval-seeds", "--config", "tiny", "--set", f"output_dir={tmp_path}", "--cams", str(cams_dir),
                 "--samples", "0", "--no-progress", "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["images"] == len(dataset)

    run = fma_seeds(cfg, cams_dir, seeds_dir, phase="coarse", progress=False)
    assert run.written == len(dataset)
    seeds_manifest = json.loads((seeds_dir / "manifest.json").read_text())
    assert seeds_manifest["method"] == "region-vote" and seeds_manifest["settings"]["region_vote"]["bg_power"] == 0.6
    assert seeds_manifest["phase"] == "coarse" and seeds_manifest["data"]["split"] == "train"
    assert main(["eval-masks", "--config", "tiny", "--set", f"output_dir={tmp_path}", "--masks", str(seeds_dir),
                 "--no-progress"]) == 0
    assert "mIoU" in capsys.readouterr().out

    # SemPLeS + FMA: CAA of any CAM folder with the CLIP's attention
    sf = semples_fma_cams(cfg, cams_dir, tmp_path / "cams" / "semples_fma", clip=tiny_clip, progress=False)
    assert sf["complete"] and sf["settings"]["box_threshold"] == 0.5
    a, _ = load_cam(cam_path(tmp_path / "cams" / "semples_fma", dataset.ids[0]))
    b, _ = load_cam(cam_path(cams_dir, dataset.ids[0]))
    assert a.shape == b.shape


def test_caa_changes_the_seeds_and_can_be_switched_off(cfg, tiny_clip):
    from tests.fma_helpers import make_clip_generator

    gen = make_clip_generator(tiny_clip, "handcrafted").eval()
    dataset = build_dataset(cfg.data, "train")
    image, classes = dataset.load_image(0), np.flatnonzero(dataset.labels(0))
    plain = clip_seed_maps(gen, image, classes, caa=None)
    refined = clip_seed_maps(gen, image, classes, caa=cfg.fma.caa, box_threshold=0.4)
    assert plain.shape == refined.shape == (len(classes), image.height, image.width)
    assert not torch.allclose(plain, refined)


def test_caa_of_full_resolution_cams_keeps_their_size(tiny_clip):
    from PIL import Image

    from semples.config import CaaConfig

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8))
    attn, grid, resized, patch = clip_attention(tiny_clip, image, scale=1.0, layers=8)
    assert grid == (5, 7) and resized == (37, 53) and attn.shape == (36, 36)
    cams = torch.rand(2, 37, 53)
    out = caa_refine_full(cams, attn, grid, resized, patch, CaaConfig(), box_threshold=0.5)
    assert out.shape == (2, 37, 53) and out.min() >= 0 and out.max() < 1
