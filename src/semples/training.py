"""Runs training stages and learning schemes from a config: the layer between the CLI and stages + engine.

Run folders: ``<output_dir>/<experiment>/<stage>/`` (alternating scheme: ``prompt_r2``, ``refine_r2``, ...).
Each stage is handed the previous stage's run folder explicitly; nothing is found by searching folders.

Schemes (paper Table 6):
    sequential   classify -> match -> prompt -> refine                       (default; 1 round)
    alternating  classify -> match -> (prompt -> refine) × rounds            (round r's prompt sees round r-1's S)
    joint        classify -> joint                                            (S and prompts together)
"""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from semples.config import Config, config_to_dict, dump_config, stage_section
from semples.data import TransformedDataset, bad_items_report, build_dataset
from semples.data.base import item_seed
from semples.data.transforms import TrainTransform
from semples.engine import StageResult, make_accelerator, train_stage
from semples.stages import build_stage
from semples.utils.checkpoint_io import atomic_write_json

log = logging.getLogger(__name__)


# What a stage's result depends on, besides its own section: stored in its checkpoint and compared when the run
# folder is reused, so changing settings a stage never reads (another stage's, inference, evaluation) keeps it.
TRAINING_KEYS = ("seed", "deterministic", "data")
_SIM = ("loss.sim_min", "loss.sim_max")
STAGE_DEPENDS: dict[str, tuple[str, ...]] = {
    "classify": ("clip", "generator", "loss.classify_token", "loss.classify_coarse", "loss.classify_fine"),
    "match": ("clip", "masking", "generator", "loss.lambda_bg", *_SIM),
    "prompt": ("clip", "masking", "generator", "prompts", "loss.lambda_text", "loss.use_prompt_image",
               "loss.use_prompt_text", *_SIM),
    "refine": ("clip", "masking", "generator", "prompts", "loss.lambda_bg", "loss.lambda_refine", *_SIM),
    "joint": ("clip", "masking", "generator", "prompts", "loss"),
    "fma-classify": ("clip", "generator", "fma"),
    "fma-segment": ("clip", "generator", "fma"),
}


def select_keys(data: dict, dotted: tuple[str, ...]) -> dict:
    """The parts of a nested dict named by dotted keys ("loss" = the whole section, "loss.lambda_bg" = one value)."""
    out: dict = {}
    for key in dotted:
        head, _, rest = key.partition(".")
        if head not in data:
            continue
        if not rest:
            out[head] = data[head]
        elif isinstance(data[head], dict):
            sub = select_keys(data[head], (rest,))
            if sub:
                out.setdefault(head, {}).update(sub)
    return out


def stage_run_dir(cfg: Config, folder: str) -> Path:
    """<output_dir>/<experiment>/<folder>."""
    return Path(cfg.output_dir) / cfg.experiment / folder


@dataclass
class TrainingSession:
    """Things shared by the stages of one process: the accelerator, the dataset, the frozen CLIP."""

    cfg: Config
    accelerator: object = None
    clip: object = None
    _dataset: object = None
    results: dict[str, StageResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.accelerator is None:
            self.accelerator = make_accelerator(self.cfg.device, self.cfg.mixed_precision, self.cfg.deterministic)

    @property
    def dataset(self):
        if self._dataset is None:
            # with data.skip_bad, unreadable items are substituted and listed in <experiment>/bad_items.txt
            self._dataset = build_dataset(self.cfg.data, self.cfg.data.train_split,
                                          bad_items_dir=Path(self.cfg.output_dir) / self.cfg.experiment)
        return self._dataset

    def train(self, stage_name: str, *, folder: str | None = None, run_dir: str | Path | None = None,
              generator: str | Path | None = None, prompts: str | Path | None = None, seeds: str | Path | None = None,
              resume: bool = False, force: bool = False) -> StageResult:
        """Trains one stage into its run folder (skipped when that folder holds a finished run).

        `seeds`: stage fma-segment's coarse seeds (label PNGs or a CAM folder of the training split).
        """
        cfg = self.cfg
        run_dir = Path(run_dir) if run_dir is not None else stage_run_dir(cfg, folder or stage_name)
        if self.clip is None and (stage_name != "classify" or cfg.generator.name == "clip_gradcam"):
            from semples.models.clip import load_clip

            self.clip = load_clip(cfg.clip, self.accelerator.device)
        # fresh parameters (random heads, prompt vectors) are a function of (seed, stage): every process and
        # every re-run builds the same initial stage
        torch.manual_seed(item_seed(cfg.seed, zlib.crc32(stage_name.encode()), 0))
        built = build_stage(stage_name, cfg, self.dataset.classes,
                            generator=str(generator) if generator is not None else None,
                            prompts=str(prompts) if prompts is not None else None, clip=self.clip,
                            device=str(self.accelerator.device), seeds=str(seeds) if seeds is not None else None,
                            dataset=self.dataset)
        cfg = built.config or cfg  # a stage may fix parts of the config (the FMA stages: the generator they train)
        stage_cfg = cfg.stage(stage_name)
        data = TransformedDataset(built.dataset if built.dataset is not None else self.dataset,
                                  TrainTransform(stage_cfg.transform), seed=cfg.seed, with_mask=built.with_mask)
        # the checkpoint keeps what training this stage depends on — the shared training sections and the
        # stage's own section — so changing another stage, inference or evaluation settings never invalidates
        # a finished run (the full config is in config.yaml)
        keys = (*TRAINING_KEYS, stage_section(stage_name), *STAGE_DEPENDS.get(stage_name, ("clip", "generator")))
        config_dict = select_keys(config_to_dict(cfg), keys)
        config_dict["stage_name"] = stage_name
        result = train_stage(
            built.stage, data, stage_cfg, run_dir=run_dir, accelerator=self.accelerator, seed=cfg.seed,
            num_workers=cfg.data.num_workers, log_every=cfg.log_every, config_dict=config_dict,
            config_yaml=dump_config(cfg), inputs=built.inputs, resume=resume, force=force)
        self.results[folder or stage_name] = result
        bad = bad_items_report(self.dataset)
        if bad and self.accelerator.is_main_process:
            log.warning("%s: %d unreadable item(s) were skipped (data.skip_bad); see %s", stage_name, len(bad),
                        Path(cfg.output_dir) / cfg.experiment / "bad_items.txt")
            manifest_path = result.run_dir / "manifest.json"
            if manifest_path.exists():
                manifest = json.loads(manifest_path.read_text())
                manifest["bad_items"] = bad
                atomic_write_json(manifest_path, manifest)
        return result


def train_scheme(cfg: Config, *, scheme: str | None = None, rounds: int | None = None,
                 generator: str | Path | None = None, resume: bool = False, force: bool = False,
                 session: TrainingSession | None = None) -> dict[str, StageResult]:
    """Runs all stages of a learning scheme in order, each handed its predecessors' run folders.

    Args:
        cfg: the experiment config (`cfg.scheme` gives defaults for `scheme` and `rounds`).
        scheme: sequential | alternating | joint.
        rounds: (prompt -> refine) rounds of the alternating scheme.
        generator: a trained S (run folder/checkpoint) to start from instead of running stage classify.
        resume: continue unfinished stages; finished ones are skipped either way.
        force: retrain every stage from scratch.

    Returns:
        folder name -> StageResult, in the order run.
    """
    scheme = scheme or cfg.scheme.scheme
    rounds = rounds or cfg.scheme.rounds
    if scheme == "sequential" and rounds != 1:
        log.info("scheme sequential runs 1 round (use --scheme alternating for %d)", rounds)
        rounds = 1
    session = session or TrainingSession(cfg)
    kw = dict(resume=resume, force=force)
    if generator is None and cfg.scheme.run_classify:
        initial = session.train("classify", **kw).run_dir
    else:
        initial = Path(generator) if generator is not None else None
    if scheme == "joint":
        session.train("joint", generator=initial, **kw)
        return session.results
    if scheme not in ("sequential", "alternating"):
        raise ValueError(f"unknown scheme {scheme!r}; valid: sequential, alternating, joint")
    match_dir = session.train("match", generator=initial, **kw).run_dir
    current = match_dir
    refine_start = initial if cfg.scheme.refine_init == "initial" else match_dir
    controls = cfg.prompts.refine_with != "learned"  # an ablation control stands in for the learned prompts
    for r in range(1, rounds + 1):
        suffix = "" if rounds == 1 else f"_r{r}"
        prompt_dir = None if controls else \
            session.train("prompt", folder=f"prompt{suffix}", generator=current, **kw).run_dir
        start = refine_start if r == 1 else current  # later rounds continue the previous refinement
        current = session.train("refine", folder=f"refine{suffix}", generator=start, prompts=prompt_dir,
                                **kw).run_dir
    return session.results
