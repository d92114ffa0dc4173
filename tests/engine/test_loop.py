"""The training loop: resume equivalence, skipping finished runs, schedules, metrics, atomic checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch

from semples.config import LossConfig, MaskingConfig, StageConfig, TrainTransformConfig
from semples.data.base import TransformedDataset
from semples.data.transforms import TrainTransform
from semples.engine import lr_at, make_accelerator, train_stage
from semples.errors import CheckpointError, ConfigError, ReuseError
from semples.stages import ClassifyStage, MatchStage
from semples.utils.checkpoint_io import read_checkpoint
from tests.conftest import ToyDataset, make_generator

TRANSFORM = TrainTransformConfig(crop_size=32, randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.25)


@pytest.fixture(scope="module")
def accelerator():
    return make_accelerator("cpu", "no")


def stage_cfg(**kw) -> StageConfig:
    base = dict(epochs=2, batch_size=4, lr=1e-2, scale_lr=False, transform=TRANSFORM)
    base.update(kw)
    return StageConfig(**base)


class Crash(RuntimeError):
    pass


class CrashingStage(ClassifyStage):
    """Raises after `crash_after` forward calls: a crash in the middle of an epoch."""

    def __init__(self, generator, crash_after: int) -> None:
        super().__init__(generator)
        self.calls = 0
        self.crash_after = crash_after

    def forward(self, batch):
        if self.calls == self.crash_after:
            raise Crash("simulated interruption")
        self.calls += 1
        return super().forward(batch)


def data(n=12):
    return TransformedDataset(ToyDataset(n), TrainTransform(TRANSFORM), seed=0)


def final_weights(run_dir) -> dict:
    return read_checkpoint(run_dir)["modules"]["mask_generator"]


def test_resume_after_crash_equals_uninterrupted_run(tmp_path, accelerator):
    # drop-path on so model-side randomness matters too
    cfg = stage_cfg(epochs=3)
    torch.manual_seed(0)
    gen = make_generator(3)
    for blk in gen.blocks:
        blk.drop_path1.drop_prob = blk.drop_path2.drop_prob = 0.1 if hasattr(blk.drop_path1, "drop_prob") else 0
    reference = ClassifyStage(gen)
    a = train_stage(reference, data(), cfg, run_dir=tmp_path / "a", accelerator=accelerator, seed=5)
    assert a.status == "finished" and a.global_step == 9

    torch.manual_seed(0)
    gen_b = make_generator(3)
    for blk in gen_b.blocks:
        blk.drop_path1.drop_prob = blk.drop_path2.drop_prob = 0.1 if hasattr(blk.drop_path1, "drop_prob") else 0
    crashing = CrashingStage(gen_b, crash_after=5)  # in epoch 2 (3 steps per epoch)
    with pytest.raises(Crash):
        train_stage(crashing, data(), cfg, run_dir=tmp_path / "b", accelerator=accelerator, seed=5, log_every=1)
    ckpt = read_checkpoint(tmp_path / "b")
    assert not ckpt["finished"] and ckpt["progress"]["epoch"] == 1
    # unfinished run: refusing to overwrite silently
    with pytest.raises(CheckpointError, match="--resume"):
        train_stage(ClassifyStage(make_generator(3)), data(), cfg, run_dir=tmp_path / "b", accelerator=accelerator,
                    seed=5)
    resumed = train_stage(ClassifyStage(make_generator(3, seed=99)), data(), cfg, run_dir=tmp_path / "b",
                          accelerator=accelerator, seed=5, resume=True, log_every=1)
    assert resumed.status == "finished" and resumed.global_step == 9
    wa, wb = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    # metrics of the interrupted part are replaced, not duplicated
    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
             if "type" not in json.loads(x)]
    assert steps == list(range(1, 10))


def test_resume_from_mid_epoch_checkpoint(tmp_path, accelerator):
    cfg = stage_cfg(epochs=1, checkpoint_every_steps=1)
    a = train_stage(ClassifyStage(make_generator(3)), data(), cfg, run_dir=tmp_path / "a", accelerator=accelerator)
    with pytest.raises(Crash):
        train_stage(CrashingStage(make_generator(3), crash_after=2), data(), cfg, run_dir=tmp_path / "b",
                    accelerator=accelerator)
    assert read_checkpoint(tmp_path / "b")["progress"]["step_in_epoch"] == 2
    train_stage(ClassifyStage(make_generator(3, seed=7)), data(), cfg, run_dir=tmp_path / "b",
                accelerator=accelerator, resume=True)
    wa, wb = final_weights(a.run_dir), final_weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_finished_run_is_skipped_and_config_change_detected(tmp_path, accelerator):
    cfg = stage_cfg(epochs=1)
    run = tmp_path / "run"
    first = train_stage(ClassifyStage(make_generator(3)), data(), cfg, run_dir=run, accelerator=accelerator,
                        config_dict={"x": 1})
    mtime = (run / "checkpoint.pt").stat().st_mtime_ns
    again = train_stage(ClassifyStage(make_generator(3)), data(), cfg, run_dir=run, accelerator=accelerator,
                        config_dict={"x": 1})
    assert first.status == "finished" and again.status == "skipped"
    assert (run / "checkpoint.pt").stat().st_mtime_ns == mtime
    with pytest.raises(ReuseError, match=r"made from other inputs or settings \(x: 1 -> 2\); pass --force"):
        train_stage(ClassifyStage(make_generator(3)), data(), cfg, run_dir=run, accelerator=accelerator,
                    config_dict={"x": 2})
    forced = train_stage(ClassifyStage(make_generator(3)), data(), cfg, run_dir=run, accelerator=accelerator,
                         config_dict={"x": 2}, force=True)
    assert forced.status == "finished"
    assert not list(run.glob(".*.tmp")), "no temp files left behind"


def test_run_folder_contents_and_manifest(tmp_path, accelerator, tiny_clip):
    stage = MatchStage(make_generator(3), tiny_clip, ["cat", "dog", "boat"], loss=LossConfig(),
                       masking=MaskingConfig())
    cfg = stage_cfg(epochs=1, batch_size=4, lr=4e-3, scale_lr=True, lr_base_batch=8)
    train_stage(stage, data(8), cfg, run_dir=tmp_path, accelerator=accelerator, config_yaml="a: 1\n", log_every=1,
                inputs={"generator": {"path": "x"}})
    assert (tmp_path / "config.yaml").read_text() == "a: 1\n"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["stage"] == "match"
    assert math.isclose(manifest["effective_lr"], 4e-3 * 4 / 8)  # linear scaling by the global batch
    assert set(manifest["trainable_parameters"]) == {"mask_generator"}
    assert manifest["frozen"]["clip"]["arch"] == "tiny-clip"
    assert manifest["inputs"] == {"generator": {"path": "x"}}
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "type" not in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert {"loss", "match_loss", "match_fg_loss", "match_bg_loss", "lr", "images_per_s"} <= set(steps[0])
    ckpt = read_checkpoint(tmp_path)
    assert set(ckpt["modules"]) == {"mask_generator"} and ckpt["finished"]


def test_grad_accumulation_runs_the_same_number_of_optimizer_steps(tmp_path, accelerator):
    res = train_stage(ClassifyStage(make_generator(3)), data(8), stage_cfg(epochs=1, grad_accum=2),
                      run_dir=tmp_path, accelerator=accelerator)
    assert res.global_step == 2
    with pytest.raises(Exception, match="divisible"):
        stage_cfg(batch_size=4, grad_accum=3)


def test_max_steps_stops_and_counts_as_done(tmp_path, accelerator):
    res = train_stage(ClassifyStage(make_generator(3)), data(12), stage_cfg(epochs=5, max_steps=4),
                      run_dir=tmp_path, accelerator=accelerator)
    assert res.global_step == 4 and res.status == "stopped"
    assert read_checkpoint(tmp_path)["finished"]


def test_too_small_dataset_is_a_clear_error(tmp_path, accelerator):
    with pytest.raises(ConfigError, match="fewer than one batch"):
        train_stage(ClassifyStage(make_generator(3)), data(3), stage_cfg(), run_dir=tmp_path,
                    accelerator=accelerator)


def test_cosine_schedule():
    assert lr_at(0, 100, 1.0) == 1.0
    assert math.isclose(lr_at(50, 100, 1.0), 0.5)
    assert math.isclose(lr_at(100, 100, 1.0, min_lr=0.1), 0.1)
    assert math.isclose(lr_at(0, 100, 1.0, warmup_steps=10), 0.1)
    assert math.isclose(lr_at(10, 110, 1.0, warmup_steps=10), 1.0)
    assert math.isclose(lr_at(50, 100, 1.0, schedule="poly", power=1.0), 0.5)
    assert math.isclose(lr_at(75, 100, 2.0, schedule="poly", power=2.0), 2.0 * 0.25**2)


def test_sampler_shards_are_disjoint_and_cover_each_global_batch():
    from semples.engine.sampler import EpochShardSampler

    shards = [EpochShardSampler(23, 8, seed=1, rank=r, world=2) for r in range(2)]
    for s in shards:
        s.set_epoch(3)
    items = [list(s) for s in shards]
    assert len(items[0]) == len(items[1]) == 8  # 2 steps × 4 per rank
    ids0, ids1 = {i for i, _ in items[0]}, {i for i, _ in items[1]}
    assert not ids0 & ids1
    single = EpochShardSampler(23, 8, seed=1)
    single.set_epoch(3)
    assert [i for i, _ in single] == [i for i, _ in items[0][:4] + items[1][:4] + items[0][4:] + items[1][4:]]
    single.set_epoch(3, start_step=1)
    assert len(list(single)) == 8 and len(single) == 8


def test_max_steps_zero_checkpoints_the_initial_parameters(tmp_path, accelerator):
    stage = ClassifyStage(make_generator(3))
    initial = {k: v.clone() for k, v in stage.mask_generator.state_dict().items()}
    res = train_stage(stage, data(12), stage_cfg(max_steps=0), run_dir=tmp_path, accelerator=accelerator)
    ckpt = read_checkpoint(tmp_path)
    assert res.global_step == 0 and ckpt["finished"]
    assert all(torch.equal(initial[k], v) for k, v in ckpt["modules"]["mask_generator"].items())


def test_checkpoints_of_an_older_record_are_checked_on_what_they_recorded(tmp_path, accelerator):
    from semples.utils.checkpoint_io import atomic_torch_save

    cfg = stage_cfg(epochs=1)
    run = tmp_path / "run"
    train_stage(ClassifyStage(make_generator(3)), data(), cfg, run_dir=run, accelerator=accelerator,
                config_dict={"x": 1}, inputs={"generator": {"path": "g", "sha256": "a"}})
    # what a checkpoint written before input-checked reuse looks like: no reuse_version, fewer keys
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    del state["reuse_version"]
    atomic_torch_save(state, run / "checkpoint.pt")
    newer = {"x": 1, "mixed_precision": "no"}  # a key the old record does not have: not a difference
    again = train_stage(ClassifyStage(make_generator(3)), data(), cfg, run_dir=run, accelerator=accelerator,
                        config_dict=newer, inputs={"generator": {"path": "g2", "sha256": "a"},
                                                   "seeds": {"path": "s", "settings_sha256": "new"}})
    assert again.status == "skipped"
    with pytest.raises(ReuseError, match="input generator: g \\(sha256 a\\) -> g \\(sha256 b\\)"):
        train_stage(ClassifyStage(make_generator(3)), data(), cfg, run_dir=run, accelerator=accelerator,
                    config_dict=newer, inputs={"generator": {"path": "g", "sha256": "b"}})


def test_rng_state_round_trips():
    from semples.engine.loop import rng_state, set_rng_state

    state = rng_state()
    a = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), a)
    assert set(state) <= {"torch", "cuda"}


def test_order_seed_changes_the_data_order_alone(tmp_path, accelerator):
    """The noise-floor knob: another order_seed reorders the batches; the same order_seed repeats the run."""
    from semples.engine.sampler import EpochShardSampler

    assert StageConfig().order_seed is None  # default: the experiment's seed orders the data
    seen: dict[str, list] = {}

    class Recording(ClassifyStage):
        def __init__(self, generator, key):
            super().__init__(generator)
            self.key = key

        def forward(self, batch):
            seen.setdefault(self.key, []).append(batch["image"].sum().item())
            return super().forward(batch)

    for key, order in (("default", None), ("same", 5), ("other", 1000)):
        torch.manual_seed(0)
        train_stage(Recording(make_generator(3), key), data(), stage_cfg(epochs=1, order_seed=order),
                    run_dir=tmp_path / key, accelerator=accelerator, seed=5)
    assert seen["default"] == seen["same"]  # order_seed = seed is the default order
    assert seen["other"] != seen["default"]  # other batches
    order_a = EpochShardSampler(12, 4, seed=5).order(0)
    order_b = EpochShardSampler(12, 4, seed=1000).order(0)
    assert not torch.equal(order_a, order_b)
