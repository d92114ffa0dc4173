"""The synthetic co-occurrence world: determinism, exact masks and labels, co-occurrence rate, dataset contract."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from semples.data import DataConfig, DataError, TrainTransformConfig, TransformedDataset, build_dataset, collate
from semples.data.synthetic import (
    BACKGROUND_WORDS,
    MASK_FILL_RGB,
    SyntheticConfig,
    SyntheticDataset,
    SyntheticWorld,
    preview_grid,
)
from semples.data.transforms import TrainTransform
from semples.utils.dataclass_config import ConfigError


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(SyntheticConfig())


@pytest.fixture(scope="module")
def items(world):
    return [world.generate("train", i) for i in range(300)]


def _same(a, b) -> bool:
    return (np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
            and np.array_equal(a.background_map, b.background_map) and np.array_equal(a.labels, b.labels)
            and a.objects == b.objects and a.backgrounds == b.backgrounds)


def test_item_is_a_pure_function_of_seed_split_and_index(world, items):
    fresh = SyntheticWorld(SyntheticConfig())
    # another world object, reverse order, after generating unrelated items of other splits
    fresh.generate("val", 3)
    fresh.render_background("sky", 1)
    for i in (7, 2, 0):
        assert _same(fresh.generate("train", i), items[i])
    assert _same(world.generate("train", 2), world.generate("train", 2))


def test_seeds_and_splits_give_different_items(items):
    other_seed = SyntheticWorld(SyntheticConfig(seed=1))
    a, b = items[0], other_seed.generate("train", 0)
    assert a.image.shape != b.image.shape or not np.array_equal(a.image, b.image)
    val = SyntheticWorld(SyntheticConfig()).generate("val", 0)
    assert val.image.shape != a.image.shape or not np.array_equal(val.image, a.image)
    assert len({it.image.tobytes() for it in items[:50]}) == 50


def test_layout_only_generation_matches_the_rendered_item(world, items):
    for i in (0, 1, 5, 11):
        layout = world.generate("train", i, render=False)
        assert layout.image is None
        assert np.array_equal(layout.mask, items[i].mask)
        assert np.array_equal(layout.background_map, items[i].background_map)
        assert np.array_equal(layout.labels, items[i].labels)
        assert layout.objects == items[i].objects


def test_masks_labels_and_background_maps_are_consistent(world, items):
    k = world.num_classes
    for it in items:
        h, w = it.mask.shape
        assert it.image.shape == (h, w, 3) and it.image.dtype == np.uint8
        assert it.mask.dtype == np.uint8 and it.background_map.shape == (h, w)
        values = set(np.unique(it.mask).tolist())
        assert values <= set(range(k + 1))
        assert set(np.nonzero(it.labels)[0] + 1) == values - {0}  # labelled iff visible
        assert it.labels.dtype == np.float32 and it.labels.shape == (k,)
        assert set(np.unique(it.background_map).tolist()) == set(it.backgrounds)
        assert 1 <= len(it.objects) <= 3
        # visible pixel counts per object account for every foreground pixel; fully hidden objects are unlabelled
        assert sum(o.visible for o in it.objects) == int((it.mask > 0).sum())
        for c in range(k):
            assert bool(it.labels[c]) == any(o.visible > 0 for o in it.objects if o.class_index == c)


def test_fully_occluded_class_is_not_labelled():
    crowded = SyntheticWorld(SyntheticConfig(objects_per_image=(3, 3), max_box_overlap=1.0, object_size=(0.2, 0.7)))
    for i in range(600):
        it = crowded.generate("train", i, render=False)
        hidden = [c for c in {o.class_index for o in it.objects}
                  if all(o.visible == 0 for o in it.objects if o.class_index == c)]
        if hidden:
            break
    else:
        pytest.fail("expected a fully occluded class in 600 crowded images")
    c = hidden[0]
    assert it.labels[c] == 0 and not (it.mask == c + 1).any()
    assert np.array_equal(crowded.generate("train", i).labels, it.labels)


@pytest.mark.parametrize("p_cooc", [0.8, 0.3])
def test_cooccurrence_rate_is_close_to_p_cooc(p_cooc):
    world = SyntheticWorld(SyntheticConfig(p_cooc=p_cooc))
    hits = total = 0
    for i in range(400):
        it = world.generate("train", i, render=False)
        for c in {o.class_index for o in it.objects}:
            total += 1
            hits += world.class_background[c] in it.backgrounds
    assert total > 400
    assert abs(hits / total - p_cooc) < 0.05


@pytest.mark.parametrize("p_cooc", [0.0, 1.0])
def test_cooccurrence_extremes(p_cooc):
    world = SyntheticWorld(SyntheticConfig(p_cooc=p_cooc))
    for i in range(60):
        it = world.generate("train", i, render=False)
        for c in {o.class_index for o in it.objects}:
            assert (world.class_background[c] in it.backgrounds) == (p_cooc == 1.0)


def test_the_cooccurrence_knob_moves_the_measured_bias():
    """p_cooc is the world's co-occurrence strength: raising it raises every measured association (tiny worlds)."""
    weak = SyntheticWorld(SyntheticConfig(p_cooc=0.3)).cooccurrence("train", 150)
    strong = SyntheticWorld(SyntheticConfig(p_cooc=0.9)).cooccurrence("train", 150)
    for name in weak:
        assert strong[name]["p_bg_given_class"] > weak[name]["p_bg_given_class"] + 0.3
        assert strong[name]["bg_pixel_share"] > weak[name]["bg_pixel_share"]
        assert strong[name]["lift"] > weak[name]["lift"] > 1.0  # a background mostly comes with its class


def test_partial_captions_name_a_subset_and_leave_old_captions_alone(world):
    partial = SyntheticWorld(SyntheticConfig(caption_partial_prob=1.0))
    multi = [i for i in range(200) if world.generate("train", i, render=False).labels.sum() > 1][:40]
    shorter = 0
    for i in multi:
        full, part = world.caption("train", i), partial.caption("train", i)
        named = [c for c in world.class_names if re.search(rf"\b{c}s?\b", part)]
        assert 1 <= len(named) < world.generate("train", i, render=False).labels.sum() + 1
        shorter += len(part) < len(full)
    assert shorter > len(multi) // 2
    assert SyntheticWorld(SyntheticConfig(caption_partial_prob=0.0)).caption("train", 3) == world.caption("train", 3)


def test_associated_background_surrounds_its_object(items, world):
    # where the association fired, the object sits in its background's band: that background is in its box
    for it in items[:100]:
        for o in it.objects:
            if o.on_associated:
                x0, y0, x1, y1 = (int(round(v)) for v in o.box)
                assert (it.background_map[y0:y1, x0:x1] == world.class_background[o.class_index]).any()


def test_image_sizes_in_range(items):
    sizes = {it.mask.shape for it in items}
    assert all(96 <= s <= 128 for hw in sizes for s in hw)
    assert len(sizes) > 10
    fixed = SyntheticWorld(SyntheticConfig(image_size=(112, 112))).generate("test", 4)
    assert fixed.image.shape == (112, 112, 3)


def test_backgrounds_stay_far_from_the_masked_pixel_grey(world):
    fill = np.asarray(MASK_FILL_RGB, dtype=np.float32)
    for name in world.background_names:
        imgs = np.stack([world.render_background(name, s, size=(112, 112)) for s in range(8)]).astype(np.float32)
        dist = np.linalg.norm(imgs - fill, axis=-1)
        assert np.linalg.norm(imgs.reshape(-1, 3).mean(0) - fill) > 50, name
        assert (dist < 30).mean() < 0.02, name


def test_object_probe_mask_matches_its_pixels():
    world = SyntheticWorld(SyntheticConfig(pixel_noise=0.0))
    for name in world.class_names:
        image, mask = world.render_object(name, seed=3, size=(112, 112))
        assert image.shape == (112, 112, 3) and mask.shape == (112, 112)
        assert set(np.unique(mask).tolist()) == {0, world.class_names.index(name) + 1}
        outside = image[mask == 0]
        assert (outside == np.asarray(MASK_FILL_RGB, dtype=np.uint8)).all()  # the fill is untouched off the mask
        assert (np.abs(image[mask > 0].astype(int) - MASK_FILL_RGB).sum(-1) > 0).mean() > 0.95


def test_captions_name_visible_objects_and_mostly_omit_backgrounds(world, items):
    class_words = {w for c in world.class_names for w in (c, c + "s")}
    bg_words = {w for b in world.background_names for w in BACKGROUND_WORDS[b][0].split()} - {"a", "the"}
    vocab = set(world.vocabulary())
    with_bg = 0
    for i, it in enumerate(items[:200]):
        caption = world.caption("train", i)
        assert caption == world.caption("train", i, item=it)  # deterministic, with or without the item
        words = set(re.findall(r"[a-z]+", caption))
        assert words <= vocab
        named = {c for c in world.class_names if c in words or c + "s" in words}
        assert named == {world.class_names[k] for k in np.nonzero(it.labels)[0]}
        assert words & class_words
        with_bg += bool(words & bg_words)
    assert 0.1 < with_bg / 200 < 0.32  # caption_background_prob = 0.2
    assert any(world.caption("train", i, variant=v) != world.caption("train", i) for i in range(10) for v in (1, 2))
    for b in world.background_names:
        for caption in world.background_captions(b):
            assert BACKGROUND_WORDS[b][0] in caption and not (set(re.findall(r"[a-z]+", caption)) & class_words)
        assert world.background_caption(b, 5) in world.background_captions(b)


def test_dataset_contract_and_train_transform():
    cfg = DataConfig(dataset="synthetic", synthetic=SyntheticConfig(splits={"train": 12}))
    ds = build_dataset(cfg, "train")
    assert isinstance(ds, SyntheticDataset) and ds.has_masks and len(ds) == 12
    assert len(build_dataset(cfg, "val")) == 300  # defaults kept for splits not overridden
    assert ds.classes.names == ("boat", "plane", "cow", "train", "bird", "car")
    assert [ds.backgrounds[b] for b in ds.class_background] == ["water", "sky", "grass", "rails", "sand", "snow"]
    raw = ds[3]
    assert isinstance(raw.image, Image.Image) and raw.image.mode == "RGB"
    assert raw.mask.shape == (raw.image.height, raw.image.width)
    assert np.array_equal(raw.labels, ds.labels(3))
    assert ds.background_map(3).shape == raw.mask.shape
    assert isinstance(ds.caption(3), str)

    tds = TransformedDataset(ds, TrainTransform(TrainTransformConfig(crop_size=64)), seed=0, with_mask=True)
    out = tds[(3, 1)]
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.float32
    assert out["mask"].shape == (64, 64) and out["mask"].dtype == torch.int64
    assert int(out["mask"].max()) <= ds.num_classes and int(out["mask"].min()) >= 0
    assert out["labels"].shape == (6,) and out["labels"].dtype == torch.float32
    assert torch.equal(tds[(3, 1)]["image"], out["image"])  # same (seed, epoch, index): same augmentation
    batch = collate([tds[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 64, 64) and batch["mask"].shape == (4, 64, 64)


def test_items_do_not_depend_on_dataloader_workers():
    ds = SyntheticDataset(SyntheticConfig(splits={"val": 6}), "val")
    tds = TransformedDataset(ds, TrainTransform(TrainTransformConfig(crop_size=48, randaugment=None)), with_mask=True)
    loader = torch.utils.data.DataLoader(tds, batch_size=2, num_workers=2, collate_fn=collate, shuffle=False)
    batches = list(loader)
    for key in ("image", "mask"):
        assert torch.equal(torch.cat([b[key] for b in batches]), torch.stack([tds[i][key] for i in range(6)]))


def test_cached_dataset_returns_the_same_items():
    plain = SyntheticDataset(SyntheticConfig(splits={"val": 5}), "val")
    cached = SyntheticDataset(SyntheticConfig(splits={"val": 5}, cache=True), "val")
    for i in (4, 0, 4):
        assert np.array_equal(np.asarray(plain.load_image(i)), np.asarray(cached.load_image(i)))
        assert np.array_equal(plain.load_mask(i), cached.load_mask(i))
        assert np.array_equal(plain.labels(i), cached.labels(i))


def test_bad_splits_and_configs_are_reported():
    with pytest.raises(DataError, match="no split 'dev'"):
        SyntheticDataset(SyntheticConfig(), "dev")
    with pytest.raises(ConfigError, match="classes"):
        SyntheticConfig(classes=("boat", "dog"))
    with pytest.raises(ConfigError, match="p_cooc"):
        SyntheticConfig(p_cooc=1.5)
    with pytest.raises(ConfigError, match="associations"):
        SyntheticConfig(associations={"boat": "water"})
    with pytest.raises(IndexError):
        SyntheticDataset(SyntheticConfig(splits={"val": 5}), "val").labels(5)


def test_yaml_overrides_reach_the_world():
    from semples.config import load_config

    cfg = load_config(None, ["data.synthetic.p_cooc=0.6", "data.synthetic.image_size=[100,100]"])
    assert cfg.data.synthetic.p_cooc == 0.6 and cfg.data.synthetic.image_size == (100, 100)
    with pytest.raises(ConfigError, match="valid keys"):
        load_config(None, ["data.synthetic.pcooc=0.6"])


def test_preview_grid_writes_a_png(tmp_path):
    path = preview_grid(SyntheticConfig(), n=2, path=tmp_path / "grid.png")
    with Image.open(path) as im:
        assert im.size[0] > 3 * 96 and im.size[1] > 2 * 96
