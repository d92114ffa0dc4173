"""Step train: one training stage, or all stages of a learning scheme, from a config (`semples train`).

Run folders: ``<output_dir>/<experiment>/<stage>/`` (alternating scheme: ``prompt_r2``, ``refine_r2``, ...;
`semples.runs`). Each stage is handed the previous stage's run folder explicitly; nothing is found by searching
folders. A finished stage folder is reused only when its recorded config keys (`Stage.config_keys`) and the sha256
of every input checkpoint match (`semples.engine.train_stage`).

Schemes (paper Table 6):
    sequential   classify -> match -> prompt -> refine                       (default; 1 round)
    alternating  classify -> match -> (prompt -> refine) × rounds            (round r's prompt sees round r-1's S)
    joint        classify -> joint                                            (S and prompts together)
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from semples.config import Config, dump_config
from semples.data import TransformedDataset, bad_items_report, build_dataset
from semples.data.base import item_seed
from semples.data.transforms import TrainTransform
from semples.engine import StageResult, make_accelerator, train_stage
from semples.errors import ConfigError, RunError
from semples.runs import RunLayout, scheme_folders
from semples.stage_table import SCHEMES
from semples.stages import build_stage, needs_clip, stage_class
from semples.utils.checkpoint_io import atomic_write_json, read_json

log = logging.getLogger(__name__)

@dataclass
class TrainingSession:
    """Things shared by the stages of one process: the accelerator, the dataset, the frozen CLIP."""

    cfg: Config
    accelerator: object = None
    clip: object = None
    _dataset: object = None
    results: dict[str, StageResult] = field(default_factory=dict)
    allow_unfinished: bool = False  # accept --generator / --prompts checkpoints of unfinished runs

    def __post_init__(self) -> None:
        if self.accelerator is None:
            self.accelerator = make_accelerator(self.cfg.device, self.cfg.mixed_precision, self.cfg.deterministic)

    @property
    def dataset(self):
        if self._dataset is None:
            # with data.skip_bad, unreadable items are substituted and listed in <experiment>/bad_items.txt
            self._dataset = build_dataset(self.cfg.data, self.cfg.data.train_split,
                                          bad_items_dir=RunLayout(self.cfg).root)
        return self._dataset

    def train(self, stage_name: str, *, folder: str | None = None, run_dir: str | Path | None = None,
              generator: str | Path | None = None, prompts: str | Path | None = None, seeds: str | Path | None = None,
              resume: bool = False, force: bool = False) -> StageResult:
        """Trains one stage into its run folder (skipped when that folder holds a finished run of the same inputs).

        `seeds`: stage fma-segment's coarse seeds (label PNGs or a CAM folder of the training split).
        """
        cfg = self.cfg
        cls = stage_class(stage_name)
        run_dir = Path(run_dir) if run_dir is not None else RunLayout(cfg).stage(folder or stage_name)
        if self.clip is None and needs_clip(stage_name, cfg):
            from semples.models.clip import load_clip

            self.clip = load_clip(cfg.clip, self.accelerator.device)
        # fresh parameters (random heads, prompt vectors) are a function of (seed, stage): every process and
        # every re-run builds the same initial stage
        torch.manual_seed(item_seed(cfg.seed, zlib.crc32(stage_name.encode()), 0))
        built = build_stage(stage_name, cfg, self.dataset.classes,
                            generator=str(generator) if generator is not None else None,
                            prompts=str(prompts) if prompts is not None else None, clip=self.clip,
                            device=str(self.accelerator.device), seeds=str(seeds) if seeds is not None else None,
                            dataset=self.dataset, allow_unfinished=self.allow_unfinished)
        cfg = built.config or cfg  # a stage may fix parts of the config (the FMA stages: the generator they train)
        stage_cfg = cfg.stage(stage_name)
        data = TransformedDataset(built.dataset if built.dataset is not None else self.dataset,
                                  TrainTransform(stage_cfg.transform), seed=cfg.seed, with_mask=built.with_mask)
        # the checkpoint keeps what training this stage depends on — the shared training sections and the
        # stage's own section and keys — so changing another stage, inference or evaluation settings never
        # invalidates a finished run (the full config is in config.yaml)
        result = train_stage(
            built.stage, data, stage_cfg, run_dir=run_dir, accelerator=self.accelerator, seed=cfg.seed,
            num_workers=cfg.data.num_workers, log_every=cfg.log_every, config_dict=cls.recorded_config(cfg),
            config_yaml=dump_config(cfg), inputs=built.inputs, resume=resume, force=force,
            classes=list(self.dataset.classes.names), tensorboard=cfg.log.tensorboard,
            sample_images=cfg.log.sample_images)
        self.results[folder or stage_name] = result
        bad = bad_items_report(self.dataset)
        if bad and self.accelerator.is_main_process:
            log.warning("%s: %d unreadable item(s) were skipped (data.skip_bad); see %s", stage_name, len(bad),
                        RunLayout(cfg).root / "bad_items.txt")
            manifest_path = result.run_dir / "manifest.json"
            if manifest_path.exists():
                manifest = read_json(manifest_path, "run manifest", RunError)
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
        session: a `TrainingSession` to share (default: a new one).

    Returns:
        folder name -> StageResult, in the order run.
    """
    scheme = scheme or cfg.scheme.scheme
    rounds = rounds or cfg.scheme.rounds
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown scheme {scheme!r}; valid: {', '.join(SCHEMES)}")
    if scheme == "sequential" and rounds != 1:
        log.info("scheme sequential runs 1 round (use --scheme alternating for %d)", rounds)
        rounds = 1
    session = session or TrainingSession(cfg)
    kw = dict(resume=resume, force=force)
    if generator is None and cfg.scheme.run_classify:
        initial = session.train("classify", **kw).run_dir
    else:
        initial = Path(generator) if generator is not None else None
    folders = scheme_folders(scheme, rounds)
    if scheme == "joint":
        session.train("joint", folder=folders[0][1], generator=initial, **kw)
        return session.results
    match_dir = session.train("match", folder=folders[0][1], generator=initial, **kw).run_dir
    current = match_dir
    refine_start = initial if cfg.scheme.refine_init == "initial" else match_dir
    first_refine = True
    prompt_dir = None
    controls = cfg.prompts.refine_with != "learned"  # an ablation control stands in for the learned prompts
    for stage, folder in folders[1:]:
        if stage == "prompt":
            if not controls:
                prompt_dir = session.train("prompt", folder=folder, generator=current, **kw).run_dir
            continue
        start = refine_start if first_refine else current  # later rounds continue the previous refinement
        first_refine = False
        current = session.train("refine", folder=folder, generator=start, prompts=prompt_dir, **kw).run_dir
    return session.results


@dataclass
class TrainResult:
    """What `run` trained: folder name -> `StageResult` (in order), and whether this is the main process."""

    results: dict[str, StageResult]
    is_main_process: bool = True


def run(cfg: Config, *, stage: str | None = None, scheme: str | None = None, rounds: int | None = None,
        generator: str | Path | None = None, prompts: str | Path | None = None, seeds: str | Path | None = None,
        run_dir: str | Path | None = None, resume: bool = False, force: bool = False,
        allow_unfinished: bool = False) -> TrainResult:
    """Trains one stage (`stage`) or a whole learning scheme (`scheme`, the default: ``scheme.scheme``).

    Args:
        cfg: the experiment config.
        stage: a stage of `semples.stages.STAGES` trained by ``semples train`` (classify, match, ...).
        scheme: sequential | alternating | joint (when `stage` is None).
        rounds: (prompt -> refine) rounds of the alternating scheme.
        generator: run folder or checkpoint of S to start from (with a scheme: replaces stage classify).
        prompts: run folder of stage prompt (stage refine).
        seeds: coarse seeds (stage fma-segment).
        run_dir: the stage's run folder (default ``<output_dir>/<experiment>/<stage>``; stage only).
        resume: continue an interrupted stage from its last checkpoint.
        force: retrain even if the run folder holds a finished run.
        allow_unfinished: accept `generator` / `prompts` checkpoints of unfinished runs (refused otherwise).

    Returns:
        A `TrainResult`.

    Raises:
        ReuseError: a finished (or interrupted) run folder was made from other inputs or settings.
        ConfigError: an unknown stage or scheme, or an input the stage needs is missing.
        CheckpointError: an input checkpoint is of an unfinished run or of other classes.
        RunLockError: another process is training into the stage's run folder.
    """
    if stage is not None:
        session = TrainingSession(cfg, allow_unfinished=allow_unfinished)
        session.train(stage, run_dir=run_dir, generator=generator, prompts=prompts, seeds=seeds, resume=resume,
                      force=force)
        return TrainResult(session.results, session.accelerator.is_main_process)
    session = TrainingSession(cfg, allow_unfinished=allow_unfinished)
    train_scheme(cfg, scheme=scheme, rounds=rounds, generator=generator, resume=resume, force=force, session=session)
    return TrainResult(session.results, session.accelerator.is_main_process)


__all__ = ["SCHEMES", "TrainResult", "TrainingSession", "run", "train_scheme"]
