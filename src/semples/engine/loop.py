"""THE training loop. It runs any `Stage` (a module whose forward returns {"loss": ..., named parts}) and knows
nothing of SemPLeS.

AdamW (or SGD with momentum) + per-step cosine or poly schedule (optional linear warm-up, linear lr scaling by
the global batch, and per-part lr multipliers a stage names, e.g. a backbone at 0.1×),
gradient accumulation, mixed precision and DDP through accelerate, a checkpoint at the end of every epoch
(optionally every N steps too), written atomically, and resume: the data order comes from (seed, epoch), each
item's augmentation from (seed, epoch, index), model-side randomness is reseeded from (seed, epoch, rank) at
each epoch start (and restored from the checkpoint mid-epoch: the CPU and every CUDA device's RNG state) — so an
interrupted and resumed run ends with the same weights as an uninterrupted one. The last checkpoint is the result
(no ground-truth model selection).

Reuse is input-checked: a checkpoint records the config keys the stage depends on and its inputs (the sha256 of
every checkpoint it was built from, the fingerprint of every input folder); a finished run is reused — and an
unfinished one resumed — only when both match (`semples.runs.describe_config_differences`, `input_differences`);
otherwise one `ReuseError` names every difference.

Losses are summed on the device between log records (one device sync per record, not per step).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from semples import __version__
from semples.data.base import collate, item_seed
from semples.engine.metrics import MetricsLog, TensorBoardLog
from semples.engine.sampler import EpochShardSampler
from semples.errors import CheckpointError, ConfigError
from semples.runs import describe_config_differences, flatten, input_differences, reuse_error
from semples.utils.checkpoint_io import (
    CHECKPOINT_NAME,
    FORMAT,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    read_checkpoint,
)

log = logging.getLogger(__name__)

# config keys that may change between an interrupted run and its resumption
RESUME_TOLERANT_KEYS = ("log_every", "device", "output_dir", "data.num_workers", "data.root", "data.eval_split")
# 2: the checkpoint's config and inputs are complete records (checked in full on reuse). Checkpoints written before
# (no "reuse_version") are checked on the keys and input hashes they recorded, so older finished runs stay usable.
REUSE_VERSION = 2


@dataclass
class StageResult:
    """What `train_stage` did: where, how far, and with which final averaged losses."""

    run_dir: Path
    status: str  # "finished" | "skipped" (already finished) | "stopped" (max_steps)
    global_step: int
    epochs_done: int
    last_losses: dict


def lr_at(step: int, total_steps: int, base_lr: float, min_lr: float = 0.0, warmup_steps: int = 0,
          schedule: str = "cosine", power: float = 0.9) -> float:
    """Learning rate after `step` optimiser steps: linear warm-up, then cosine or poly decay to min_lr."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / span, 1.0)
    if schedule == "poly":
        return min_lr + (base_lr - min_lr) * (1.0 - t) ** power
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule {schedule!r}; valid: cosine, poly")
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def param_groups(module: torch.nn.Module, weight_decay: float,
                 lr_multipliers: dict[str, float] | None = None) -> list[dict]:
    """Optimiser groups: no weight decay on biases and norm weights (1-D parameters); parameters whose name starts
    with a prefix of `lr_multipliers` get that multiple of the lr (``lr_mult``; the first matching prefix)."""
    lr_multipliers = lr_multipliers or {}
    groups: dict[tuple[float, bool], list] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        mult = next((m for prefix, m in lr_multipliers.items() if name.startswith(prefix)), 1.0)
        groups.setdefault((float(mult), p.ndim <= 1 or name.endswith(".bias")), []).append(p)
    out = []
    for mult in dict.fromkeys([1.0, *(float(m) for m in lr_multipliers.values())]):
        for no_decay in (False, True):
            params = groups.get((mult, no_decay))
            if params or (mult == 1.0 and not no_decay):  # (the first group always exists, as before)
                out.append({"params": params or [], "weight_decay": 0.0 if no_decay else weight_decay,
                            "lr_mult": mult})
    return out


def make_optimizer(groups: list[dict], stage_cfg, lr: float) -> torch.optim.Optimizer:
    """AdamW, or SGD when the stage config says so (``optimizer``, ``momentum``: `SegmentStageConfig`)."""
    kind = getattr(stage_cfg, "optimizer", "adamw")
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=getattr(stage_cfg, "momentum", 0.9))
    raise ConfigError(f"unknown optimizer {kind!r}; valid: adamw, sgd")


def split_state(module: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """state_dict grouped by top-level submodule: {"mask_generator": {...}, "prompts": {...}}."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in module.state_dict().items():
        head, _, rest = key.partition(".")
        out.setdefault(head, {})[rest] = value.detach().cpu()
    return out


def join_state(modules: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{head}.{rest}": v for head, sd in modules.items() for rest, v in sd.items()}


def reuse_differences(state: dict, config_dict: dict, inputs: dict | None, frozen: dict | None = None) -> list[str]:
    """What differs between a checkpoint and the run asked for now: "key: old -> new" for config keys (those in
    `RESUME_TOLERANT_KEYS` left out) and "input NAME: old (sha256 …) -> new (sha256 …)" for inputs — the frozen
    parts included (``frozen``: the stage's `describe()["frozen"]`), so a CLIP whose weights file changed under the
    same name is another input."""
    old_config = state.get("config", {})
    old_inputs = {**state.get("inputs", {}), "frozen": state.get("frozen", {})}
    new_inputs = {**(inputs or {}), "frozen": frozen or {}}
    ignore = RESUME_TOLERANT_KEYS
    if state.get("reuse_version", 1) < REUSE_VERSION:  # older record: only what it recorded
        recorded = set(flatten(old_config))
        ignore = (*ignore, *(k for k in flatten(config_dict) if k not in recorded))
        return (describe_config_differences(old_config, config_dict, ignore)
                + input_differences(old_inputs, new_inputs, only_recorded=True))
    return describe_config_differences(old_config, config_dict, ignore) + input_differences(old_inputs, new_inputs)


def _git_commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except Exception:
        return None


def train_stage(stage: torch.nn.Module, dataset: torch.utils.data.Dataset, stage_cfg, *, run_dir: str | Path,
                accelerator, seed: int = 0, num_workers: int = 0, log_every: int = 10,
                config_dict: dict | None = None, config_yaml: str | None = None, inputs: dict | None = None,
                resume: bool = False, force: bool = False, tensorboard: bool = False,
                sample_images: int = 4) -> StageResult:
    """Trains `stage` on `dataset` and writes `run_dir/{config.yaml, manifest.json, metrics.jsonl, checkpoint.pt}`.

    Args:
        stage: a `semples.stages.Stage` (any nn.Module whose forward(batch) returns a dict with "loss").
        dataset: yields dicts for keys ``(index, epoch)`` (a `TransformedDataset`).
        stage_cfg: a `StageConfig` (epochs, batch size, lr, ...).
        run_dir: this stage's run folder.
        accelerator: from `make_accelerator` (one per process, shared by the stages of a scheme run).
        seed: base seed of data order, augmentation and model randomness.
        num_workers: DataLoader workers per process.
        log_every: optimiser steps between metrics.jsonl records.
        config_dict / config_yaml: the resolved config (stored in the checkpoint / the run folder).
        inputs: what the stage was built from (checkpoint paths and hashes), for the manifest.
        resume: continue an unfinished checkpoint in `run_dir`.
        force: start over even if `run_dir` holds a checkpoint.
        tensorboard: also write TensorBoard events to `run_dir/tensorboard` (every metrics.jsonl scalar, and once
            per epoch `sample_images` pictures from the stage's `sample_images`, if it has one).

    Returns:
        A `StageResult`. A finished run folder is skipped (status "skipped") unless `force`.

    Raises:
        CheckpointError: `run_dir` holds an unfinished checkpoint and neither `resume` nor `force` is set, or the
            config changed since the checkpoint was written.
    """
    run_dir = Path(run_dir)
    ckpt_path = run_dir / CHECKPOINT_NAME
    acc = accelerator
    main = acc.is_main_process
    config_dict = config_dict or {}
    name = getattr(stage, "name", type(stage).__name__)

    state = None
    if ckpt_path.exists() and not force:
        state = read_checkpoint(ckpt_path)
        frozen_now = stage.describe().get("frozen", {}) if hasattr(stage, "describe") else {}
        diff = reuse_differences(state, config_dict, inputs, frozen_now)
        if state.get("finished"):
            if diff:
                raise reuse_error(f"{ckpt_path} (finished)", diff, "choose another --run-dir (or experiment)")
            log.info("%s: already finished in %s (--force retrains)", name, run_dir)
            return StageResult(run_dir, "skipped", state["progress"]["global_step"], state["progress"]["epoch"],
                               state.get("last_losses", {}))
        if not resume:
            raise CheckpointError(f"{ckpt_path}: an unfinished run is there; pass --resume to continue it or "
                                  "--force to start over")
        if diff:
            raise reuse_error(f"{ckpt_path} (unfinished)", diff, "resume with the same config and inputs")

    world, rank = acc.num_processes, acc.process_index
    global_batch = stage_cfg.batch_size
    if global_batch % (world * stage_cfg.grad_accum):
        raise ConfigError(f"batch_size {global_batch} must be divisible by processes ({world}) × grad_accum "
                              f"({stage_cfg.grad_accum})")
    micro = global_batch // (world * stage_cfg.grad_accum)
    order_seed = seed if getattr(stage_cfg, "order_seed", None) is None else stage_cfg.order_seed
    sampler = EpochShardSampler(len(dataset), global_batch, seed=order_seed, rank=rank, world=world)
    steps_per_epoch = sampler.steps_per_epoch
    if steps_per_epoch == 0:
        raise ConfigError(f"stage {name}: the dataset has {len(dataset)} items, fewer than one batch of "
                              f"{global_batch}; lower {name}.batch_size")
    total_steps = steps_per_epoch * stage_cfg.epochs
    base_lr = stage_cfg.lr * (global_batch / stage_cfg.lr_base_batch if stage_cfg.scale_lr else 1.0)
    warmup_steps = int(round(stage_cfg.warmup_epochs * steps_per_epoch))

    stage.to(acc.device)
    lr_multipliers = stage.lr_multipliers() if hasattr(stage, "lr_multipliers") else {}
    optimizer = make_optimizer(param_groups(stage, stage_cfg.weight_decay, lr_multipliers), stage_cfg, base_lr)
    progress = {"epoch": 0, "step_in_epoch": 0, "global_step": 0}
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=main)
    if state is not None:
        stage.load_state_dict(join_state(state["modules"]), strict=True)
        optimizer.load_state_dict(state["optimizer"])
        progress = dict(state["progress"])
        metrics.truncate_after(progress["global_step"])
        log.info("%s: resuming from epoch %d step %d (%s)", name, progress["epoch"], progress["global_step"],
                 ckpt_path)
    else:
        metrics.reset()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if config_yaml is not None:
            atomic_write_text(run_dir / "config.yaml", config_yaml)
    board = TensorBoardLog(run_dir / "tensorboard", enabled=main and tensorboard,
                           purge_step=progress["global_step"] if state is not None else None)
    model, optimizer = acc.prepare(stage, optimizer)
    raw = acc.unwrap_model(model)
    is_cuda = acc.device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=micro, sampler=sampler, num_workers=num_workers, collate_fn=collate,
        pin_memory=is_cuda, persistent_workers=num_workers > 0, drop_last=False)

    describe = raw.describe() if hasattr(raw, "describe") else {}
    manifest = {
        "stage": name, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "inputs": inputs or {}, **describe, "processes": world, "device": str(acc.device),
        "mixed_precision": acc.mixed_precision, "seed": seed, "epochs": stage_cfg.epochs,
        "steps_per_epoch": steps_per_epoch, "global_batch": global_batch, "micro_batch": micro,
        "grad_accum": stage_cfg.grad_accum, "effective_lr": base_lr, "dataset_size": len(dataset),
        "semples_version": __version__, "torch_version": torch.__version__, "git_commit": _git_commit(),
        "model_selection": "last checkpoint (no ground truth used)",
    }

    def write_manifest(status: str) -> None:
        if main:
            manifest.update(status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S"), progress=dict(progress))
            atomic_write_json(run_dir / "manifest.json", manifest)

    saved = False

    def save(finished: bool, last_losses: dict) -> None:
        nonlocal saved
        saved = True
        acc.wait_for_everyone()
        if main:
            atomic_torch_save({
                "format": FORMAT, "version": 1, "stage": name, "config": config_dict,
                "modules": split_state(raw), "optimizer": optimizer.state_dict(), "progress": dict(progress),
                "finished": finished, "rng": rng_state(), "last_losses": last_losses,
                "inputs": inputs or {}, "frozen": describe.get("frozen", {}), "processes": world,
                "reuse_version": REUSE_VERSION,
            }, ckpt_path)
        acc.wait_for_everyone()

    write_manifest("running")
    stop = bool(stage_cfg.max_steps is not None and progress["global_step"] >= stage_cfg.max_steps)
    bar = tqdm(total=total_steps, initial=progress["global_step"], desc=name, disable=not main, dynamic_ncols=True,
               unit="step")
    # loss sums stay on the device in float64 (MPS: float32), summed in the order the float path summed them, so
    # the logged means are the same numbers as summing Python floats would give
    sum_dtype = torch.float32 if acc.device.type == "mps" else torch.float64
    window: dict[str, torch.Tensor] = {}
    window_steps = 0
    window_start = time.perf_counter()
    last_losses: dict = {}
    epoch_sums: dict[str, torch.Tensor] = {}
    epoch_steps = 0
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        model.train()
        start_epoch = progress["epoch"]
        for epoch in range(start_epoch, stage_cfg.epochs):
            if stop:
                break
            start_step = progress["step_in_epoch"] if epoch == start_epoch else 0
            sampler.set_epoch(epoch, start_step)
            batches = iter(loader)  # before seeding: creating the iterator draws from the global RNG
            if epoch == start_epoch and start_step > 0 and state is not None:
                set_rng_state(state["rng"])
            else:
                torch.manual_seed(item_seed(seed, epoch, 1_000_000 + rank))  # dropout / drop-path of this epoch
            epoch_sums, epoch_steps = {}, 0
            for step_in_epoch in range(start_step, steps_per_epoch):
                lr = lr_at(progress["global_step"], total_steps, base_lr, stage_cfg.min_lr, warmup_steps,
                           stage_cfg.schedule, stage_cfg.poly_power)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_mult", 1.0)
                step_losses: dict[str, torch.Tensor] = {}
                for micro_i in range(stage_cfg.grad_accum):
                    batch = next(batches)
                    batch = {k: (v.to(acc.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                             for k, v in batch.items()}
                    sync = micro_i == stage_cfg.grad_accum - 1
                    with contextlib.nullcontext() if sync or world == 1 else acc.no_sync(model):
                        losses = model(batch)
                        acc.backward(losses["loss"] / stage_cfg.grad_accum)
                    for k, v in losses.items():  # on the device: no sync until the next log record
                        part = v.detach().to(sum_dtype) / stage_cfg.grad_accum
                        step_losses[k] = part if k not in step_losses else step_losses[k] + part
                if stage_cfg.clip_grad_norm:
                    acc.clip_grad_norm_(params, stage_cfg.clip_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                progress["global_step"] += 1
                progress["step_in_epoch"] = step_in_epoch + 1
                for k, v in step_losses.items():
                    window[k] = v if k not in window else window[k] + v
                    epoch_sums[k] = v if k not in epoch_sums else epoch_sums[k] + v
                window_steps += 1
                epoch_steps += 1
                bar.update(1)
                if progress["global_step"] % log_every == 0 or step_in_epoch + 1 == steps_per_epoch:
                    means = _reduce_means(acc, window, window_steps)
                    elapsed = time.perf_counter() - window_start
                    rec = {"step": progress["global_step"], "epoch": epoch, "lr": lr, **means,
                           "images_per_s": window_steps * global_batch / max(elapsed, 1e-9)}
                    metrics.write(rec)
                    board.write(rec)
                    bar.set_postfix(loss=f"{means.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}")
                    last_losses = means
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                if stage_cfg.max_steps is not None and progress["global_step"] >= stage_cfg.max_steps:
                    stop = True
                    break
                if (stage_cfg.checkpoint_every_steps and progress["global_step"] % stage_cfg.checkpoint_every_steps == 0
                        and step_in_epoch + 1 < steps_per_epoch):
                    save(False, last_losses)
            epoch_done = progress["step_in_epoch"] >= steps_per_epoch
            if epoch_done:
                progress["epoch"] = epoch + 1
                progress["step_in_epoch"] = 0
            finished = stop or progress["epoch"] >= stage_cfg.epochs
            if epoch_steps:
                rec = {"step": progress["global_step"], "epoch": epoch, "type": "epoch",
                       **{f"epoch_{k}": v for k, v in _reduce_means(acc, epoch_sums, epoch_steps).items()}}
                metrics.write(rec)
                board.write(rec)
                if board.enabled and sample_images > 0 and hasattr(raw, "sample_images"):
                    _log_samples(raw, batch, board, progress["global_step"], sample_images)
            save(finished, last_losses)
            write_manifest("finished" if finished else "running")
    except BaseException as e:
        write_manifest(f"interrupted: {type(e).__name__}: {e}"[:500])
        raise
    finally:
        bar.close()
        board.close()
    if not saved:  # max_steps reached before any step (e.g. 0: a checkpoint of the initial parameters)
        save(True, last_losses)
        write_manifest("finished")
    status = "stopped" if stop and progress["epoch"] < stage_cfg.epochs else "finished"
    if main:
        log.info("%s: %s after %d steps -> %s", name, status, progress["global_step"], ckpt_path)
    return StageResult(run_dir, status, progress["global_step"], progress["epoch"], last_losses)


def _log_samples(stage: torch.nn.Module, batch: dict, board: TensorBoardLog, step: int, count: int) -> None:
    """Sample pictures of the epoch's last micro-batch, in eval mode and without touching any RNG (so a run with
    TensorBoard ends with the same weights as one without)."""
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    was_training = stage.training
    stage.eval()
    try:
        board.images(stage.sample_images(batch, count), step)
    finally:
        stage.train(was_training)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _reduce_means(acc, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
    """Means over steps and over processes (a collective: every process calls it at the same steps).

    The one device sync of a log record: the sums live on the device until here.
    """
    if not sums:
        return {}
    keys = sorted(sums)
    t = torch.stack([sums[k].to(torch.float64 if acc.device.type != "mps" else torch.float32) for k in keys])
    t = (t / max(count, 1)).to(acc.device)
    if acc.num_processes > 1:
        t = acc.reduce(t, reduction="mean")
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def rng_state() -> dict:
    """The RNG states a mid-epoch resume restores: torch's CPU generator and every CUDA device's."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restores `rng_state` (CUDA states only where the checkpoint has them and the devices exist)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
