"""Region sources: the Regions container, superpixels, and the SAM adapter (tiny and real architectures)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from semples.errors import WeightsError
from semples.models.regions import (
    SAM_BUILDERS,
    Regions,
    RegionSource,
    SamConfig,
    SamRegions,
    SuperpixelConfig,
    SuperpixelRegions,
    UnionRegions,
    build_region_source,
    build_sam,
    sam_model_type,
)


def two_tone(h: int = 48, w: int = 64) -> np.ndarray:
    """Left half dark red, right half light blue, a little noise."""
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.float64)
    img[:, : w // 2] = (150, 30, 30)
    img[:, w // 2:] = (60, 140, 230)
    return (img + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8)


def test_regions_container():
    part = np.array([[0, 0, 1], [2, 2, -1]])
    r = Regions.from_partition(part)
    assert r.is_partition and r.num_regions == 3 and r.shape == (2, 3)
    assert list(r.areas()) == [2, 1, 2]
    masks = r.to_masks()
    assert masks.shape == (3, 2, 3) and masks.dtype == bool and masks.sum() == 5
    assert r.coverage() == pytest.approx(5 / 6)
    m = Regions.from_masks([masks[0], masks[0] | masks[1]], scores=[0.5, 0.9])
    assert not m.is_partition and list(m.areas()) == [2, 3]
    both = Regions.concat([r, m])
    assert both.num_regions == 5
    np.testing.assert_allclose(both.scores, [1, 1, 1, 0.5, 0.9])
    empty = Regions.from_masks([], shape=(4, 5))
    assert empty.num_regions == 0 and empty.shape == (4, 5) and empty.coverage() == 0.0
    with pytest.raises(ValueError, match="scores"):
        Regions.from_masks([masks[0]], scores=[0.1, 0.2])
    with pytest.raises(ValueError, match="exactly one"):
        Regions()


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
def test_superpixels_partition_the_image_along_colour_edges(method):
    pytest.importorskip("skimage")
    img = two_tone()
    source = SuperpixelRegions(SuperpixelConfig(method=method, n_segments=20, scale=50, min_size=20))
    assert isinstance(source, RegionSource) and source.name == method
    r = source(img)
    assert r.is_partition and r.shape == img.shape[:2] and r.coverage() == 1.0
    assert 2 <= r.num_regions <= 200
    left = np.zeros(img.shape[:2], bool)
    left[:, : img.shape[1] // 2] = True
    masks = [m for m in r.to_masks() if m.any()]
    purity = np.array([max(left[m].mean(), 1 - left[m].mean()) for m in masks])
    sizes = np.array([m.sum() for m in masks])
    # superpixels follow the colour edge (smoothing may let a few boundary pixels cross it)
    assert purity.min() > 0.85 and (purity * sizes).sum() / sizes.sum() > 0.98, purity


def test_build_region_source_by_name():
    assert build_region_source("slic").name == "slic"
    assert build_region_source("felzenszwalb", SuperpixelConfig(method="slic")).name == "felzenszwalb"
    assert build_region_source("superpixels", SuperpixelConfig(method="felzenszwalb")).name == "felzenszwalb"
    with pytest.raises(ValueError, match="valid: sam, superpixels"):
        build_region_source("quickshift")
    with pytest.raises(WeightsError, match="--sam-checkpoint"):
        build_region_source("sam", sam=SamConfig())


def test_union_of_sources():
    pytest.importorskip("skimage")
    img = two_tone()
    a = SuperpixelRegions(SuperpixelConfig(method="slic", n_segments=8))
    b = SuperpixelRegions(SuperpixelConfig(method="felzenszwalb", scale=50))
    ra, rb = a(img), b(img)
    u = UnionRegions([a, b])
    assert u.name == "slic+felzenszwalb"
    assert u(img).num_regions == ra.num_regions + rb.num_regions


def test_sam_variant_and_checkpoint_errors(tmp_path):
    assert set(SAM_BUILDERS) == {"vit_b", "vit_l", "vit_h"}
    assert sam_model_type("/w/sam_vit_h_4b8939.pth") == "vit_h"
    assert sam_model_type("sam_vit_b_01ec64.pth") == "vit_b"
    assert sam_model_type("anything.pth", "vit_l") == "vit_l"
    with pytest.raises(ValueError, match="cannot tell"):
        sam_model_type("weights.pth")
    with pytest.raises(ValueError, match="unknown SAM model type"):
        sam_model_type(None, "vit_x")
    with pytest.raises(WeightsError, match="needs a checkpoint"):
        build_sam("vit_b", None)
    with pytest.raises(WeightsError, match="not found"):
        build_sam("vit_b", tmp_path / "sam_vit_b.pth")


def tiny_sam(img_size: int = 64, dim: int = 32):
    """A SAM of the package's classes at toy size (the real ViT-B is in the slow test below)."""
    torch = pytest.importorskip("torch")
    modeling = pytest.importorskip("segment_anything.modeling")
    torch.manual_seed(0)
    encoder = modeling.ImageEncoderViT(
        depth=1, embed_dim=dim, img_size=img_size, mlp_ratio=2, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=[0], window_size=4,
        out_chans=dim)
    grid = img_size // 16
    prompt = modeling.PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid),
                                    input_image_size=(img_size, img_size), mask_in_chans=4)
    decoder = modeling.MaskDecoder(
        num_multimask_outputs=3, transformer=modeling.TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64,
                                                                        num_heads=2),
        transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=16)
    return modeling.Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder)


def check_sam_regions(regions: Regions, shape: tuple[int, int]) -> None:
    assert not regions.is_partition
    assert regions.masks.dtype == bool and regions.masks.shape == (regions.num_regions, *shape)
    assert regions.scores is not None and regions.scores.shape == (regions.num_regions,)
    assert regions.meta["stability_score"].shape == (regions.num_regions,)
    assert regions.num_regions >= 1  # thresholds at 0: random weights still give masks


def test_sam_adapter_returns_masks_even_under_bf16_autocast():
    torch = pytest.importorskip("torch")
    source = SamRegions(tiny_sam(), points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert isinstance(source, RegionSource)
    img = two_tone(40, 56)
    # the generator crashes under bf16 (amg.to_numpy); the adapter runs it in fp32 whatever the caller does
    with torch.autocast("cpu", dtype=torch.bfloat16):
        regions = source(img)
    check_sam_regions(regions, img.shape[:2])
    assert next(source.model.parameters()).dtype == torch.float32


@pytest.mark.slow
def test_sam_vit_b_random_weights_real_architecture(tmp_path):
    """The real ViT-B architecture with random weights (1024-px image encoder: ~20-60 s on a 2-core CPU)."""
    torch = pytest.importorskip("torch")
    model = build_sam("vit_b", None, random_init=True)
    assert sum(p.numel() for p in model.parameters()) > 90_000_000
    assert model.image_encoder.img_size == 1024
    source = SamRegions(model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    img = two_tone(48, 64)
    check_sam_regions(source(img), img.shape[:2])
    # an explicit checkpoint file is loaded (weights_only) and its variant read from the file name
    path = tmp_path / "sam_vit_b_test.pth"
    torch.save({k: v.clone() for k, v in list(model.state_dict().items())}, path)
    loaded = build_sam("auto", path)
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key])
    with pytest.raises(WeightsError, match="does not fit SAM vit_l"):
        build_sam("vit_l", path)


def test_sam_variant_auto_reads_the_weights_when_the_file_name_does_not_say(tmp_path):
    """Issue 12: `auto` with a file name like weights.pth was a traceback; the width of the image encoder tells."""
    import torch

    for width, variant in ((768, "vit_b"), (1024, "vit_l"), (1280, "vit_h")):
        state = {"image_encoder.patch_embed.proj.weight": torch.zeros(width, 3, 16, 16)}
        assert sam_model_type("weights.pth", "auto", state) == variant
    path = tmp_path / "weights.pth"
    torch.save(tiny_sam().state_dict(), path)  # a SAM of no official width
    with pytest.raises(WeightsError) as info:
        build_sam("auto", path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{path}: not a SAM checkpoint of a known variant (an image encoder "
                                              "32 wide")
    torch.save({"model": 1}, path)
    with pytest.raises(WeightsError, match="no SAM image encoder"):
        build_sam("auto", path)
