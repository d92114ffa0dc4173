"""Config: presets, round trip, overrides, unknown keys, types, inheritance."""

from __future__ import annotations

import pytest
import yaml

from semples.config import Config, ConfigError, config_to_dict, dump_config, load_config, preset_names


def test_defaults_are_the_paper_voc_numbers():
    cfg = Config()
    assert (cfg.loss.lambda_bg, cfg.loss.lambda_text, cfg.loss.lambda_refine) == (2.4, 0.02, 0.05)
    assert (cfg.match.lr, cfg.match.batch_size, cfg.match.epochs, cfg.match.weight_decay) == (5e-4, 64, 60, 0.03)
    assert cfg.match.scale_lr and cfg.match.lr_base_batch == 512  # 5e-4 × 64/512 = 6.25e-5 effective
    assert (cfg.prompt.batch_size, cfg.prompt.lr) == (128, 0.025)
    assert cfg.prompt.transform.randaugment is None and cfg.prompt.transform.random_erasing == 0.0
    assert cfg.match.transform.scale == (0.08, 1.0) and cfg.match.transform.random_erasing == 0.25
    assert (cfg.prompts.length, cfg.prompts.template, cfg.prompts.init) == (30, "a photo of {}.", "uniform")
    assert (cfg.masking.space, cfg.masking.eps_match, cfg.masking.eps_prompt) == ("normalized", 0.1, 1e-4)
    assert (cfg.loss.sim_min, cfg.loss.sim_max) == (1e-4, 0.9999)
    assert cfg.scheme.scheme == "sequential" and cfg.scheme.refine_init == "initial"
    assert not cfg.generator.train_trunk and cfg.generator.backbone == "deit_small_patch16_224"
    assert (cfg.clip.arch, cfg.clip.pretrained) == ("ViT-B-32", "openai")


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_round_trips(name, tmp_path):
    cfg = load_config(name)
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_voc_and_coco_presets_carry_the_paper_numbers():
    voc, coco = load_config("voc_semples"), load_config("coco_semples")
    assert voc.data.dataset == "voc" and coco.data.dataset == "coco"
    assert (voc.loss.lambda_bg, voc.loss.lambda_text, voc.loss.lambda_refine) == (2.4, 0.02, 0.05)
    assert (coco.loss.lambda_bg, coco.loss.lambda_text, coco.loss.lambda_refine) == (0.75, 0.01, 0.2)
    assert coco.match.lr == coco.refine.lr == 5e-6 and coco.prompt.lr == 0.0025
    assert voc.match.lr == 5e-4 and voc.prompt.lr == 0.025


def test_overrides_are_typed():
    cfg = load_config(None, ["loss.lambda_bg=1.5", "match.transform.scale=[0.5, 1.0]", "clip.cache_dir=null",
                             "generator.backbone_kwargs={depth: 2}", "match.lr=1e-3", "seed=3"])
    assert cfg.loss.lambda_bg == 1.5 and cfg.match.transform.scale == (0.5, 1.0)
    assert cfg.generator.backbone_kwargs == {"depth": 2} and cfg.match.lr == 1e-3 and cfg.seed == 3


def test_unknown_keys_list_the_valid_names(tmp_path):
    with pytest.raises(ConfigError, match="valid keys are: lambda_bg, lambda_text"):
        load_config(None, ["loss.lamda_bg=1"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"match": {"epoch": 3}}))
    with pytest.raises(ConfigError, match=r"'epoch' in 'match'; valid keys are: epochs, batch_size"):
        load_config(path)
    with pytest.raises(ConfigError, match="valid keys are: experiment, output_dir"):
        load_config(None, ["nonsense=1"])


def test_wrong_types_and_values_are_errors():
    with pytest.raises(ConfigError, match="match.epochs: expected an integer"):
        load_config(None, ["match.epochs=ten"])
    with pytest.raises(ConfigError, match="'sideways'"):
        load_config(None, ["masking.space=sideways"])
    with pytest.raises(ConfigError, match="divisible"):
        load_config(None, ["match.batch_size=10", "match.grad_accum=3"])
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no_such_preset")
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["loss.lambda_bg"])


def test_base_inheritance(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("_base_: tiny\nloss:\n  lambda_refine: 0.1\n")
    cfg = load_config(child)
    tiny = load_config("tiny")
    assert cfg.loss.lambda_refine == 0.1 and cfg.clip == tiny.clip and cfg.match == tiny.match


def test_resolved_config_is_plain_yaml():
    text = dump_config(load_config("tiny"))
    data = yaml.safe_load(text)
    assert data == config_to_dict(load_config("tiny"))
    assert "!!python" not in text


def test_partial_section_keeps_the_sections_own_defaults():
    # stage prompt's defaults differ from StageConfig's: overriding one field must not reset the others
    cfg = load_config(None, ["prompt.epochs=3", "classify.batch_size=32"])
    assert (cfg.prompt.epochs, cfg.prompt.lr, cfg.prompt.batch_size) == (3, 0.025, 128)
    assert cfg.prompt.transform.randaugment is None
    assert (cfg.classify.batch_size, cfg.classify.lr) == (32, 6e-4)
    tiny = load_config("tiny", ["prompt.lr=0.5"])
    assert tiny.prompt.lr == 0.5 and tiny.prompt.batch_size == 4 and tiny.prompt.transform.crop_size == 64


@pytest.mark.parametrize("override,message", [
    ("match.batch_size=0", "match.batch_size must be >= 1, got 0"),
    ("match.batch_size=-4", "match.batch_size must be >= 1, got -4"),
    ("classify.grad_accum=0", "classify.grad_accum must be >= 1, got 0"),
    ("refine.lr=.nan", "refine.lr: expected a finite number, got nan"),
    ("refine.lr=-0.001", "refine.lr must be >= 0, got -0.001"),
    ("match.lr=.inf", "match.lr: expected a finite number, got inf"),
    ("data.num_workers=-1", "data.num_workers must be >= 0"),
    ("cams.num_workers=-2", "cams.num_workers must be >= 0"),
    ("match.transform.scale=[0.5, 2]", "match.transform.scale must satisfy"),
    ("segment.warmup_epochs=-1", "segment.warmup_epochs must be >= 0"),
    ("device=gpu", "device 'gpu' is not one of auto, cpu, cuda, cuda:N, mps"),
])
def test_bad_numbers_are_one_line_naming_the_key(override, message, capsys):
    """Issue 12: bad numbers in a config end in one `semples <verb>: error:` line naming the dotted key."""
    from semples.cli import main

    assert main(["train", "--stage", "classify", "--config", "tiny", "--set", override]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("semples train: error: ") and message in err, err


def test_an_override_of_one_stage_does_not_leak_through_a_yaml_anchor():
    """tiny.yaml shares one mapping between its stage sections (`match: *tiny_stage`)."""
    cfg = load_config("tiny", ["match.epochs=3"])
    assert cfg.match.epochs == 3 and cfg.classify.epochs == 1 and cfg.refine.epochs == 1


def test_non_utf8_and_unreadable_yaml_are_one_line(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("experiment: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte b'\\xe9' at offset 15\)"):
        load_config(bad)
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"dir\.yaml' is neither a file nor a preset"):
        load_config(tmp_path / "dir.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(broken)
    assert "\n" not in str(info.value) and "not valid YAML" in str(info.value)
