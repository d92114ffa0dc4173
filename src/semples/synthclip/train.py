"""Contrastive training of the toy CLIP on the synthetic world, and its export as an open_clip local-dir folder.

The loop is THE engine's (`semples.engine.train_stage`: AdamW + warm-up/cosine, atomic resumable checkpoints,
metrics.jsonl, progress bar); this module contributes the stage (`ContrastiveStage`), the pair stream and the
export. The exported folder (``open_clip_config.json`` + ``open_clip_model.safetensors`` + ``training.yaml``)
loads through `semples.models.clip.load_clip` with ``clip.arch=local-dir:DIR`` like any real CLIP, and with plain
``open_clip.create_model("local-dir:DIR")``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from semples.data.synthetic import SyntheticWorld
from semples.engine.loop import join_state
from semples.stages.base import Stage
from semples.synthclip.config import SynthClipConfig, dump_synth_clip_config, synth_clip_config_dict
from semples.synthclip.data import PairStream
from semples.utils.checkpoint_io import read_checkpoint

log = logging.getLogger(__name__)

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
TRAINING_NAME = "training.yaml"
PROBE_NAME = "probe.json"
# settings that do not change the weights: a resumed run may differ in them
_RUN_ONLY_KEYS = ("device", "num_workers", "threads", "checkpoint_every", "log_every")


def build_open_clip(cfg: SynthClipConfig, block_type: str | None = "custom") -> nn.Module:
    """A freshly initialised open_clip `CLIP` of the configured architecture (seeded by ``cfg.seed``).

    Args:
        cfg: the toy-CLIP config.
        block_type: open_clip attention block ("custom" = SDPA, same weights as "default").
    """
    import open_clip

    model_cfg = cfg.model.open_clip_cfg()
    if block_type:
        model_cfg["vision_cfg"]["block_type"] = block_type
        model_cfg["text_cfg"]["block_type"] = block_type
    torch.manual_seed(cfg.seed)
    return open_clip.CLIP(**model_cfg)


def make_tokenizer(cfg: SynthClipConfig):
    """open_clip's BPE tokenizer (ships with open_clip, offline) at the text tower's context length."""
    import open_clip

    return open_clip.SimpleTokenizer(context_length=cfg.model.context_length)


class ContrastiveStage(Stage):
    """CLIP's symmetric InfoNCE over the *unique* captions of a batch, and optionally a region term.

    Few distinct captions exist ("a photo of a cow." recurs), so each caption is encoded once and every image
    showing it is a positive: image → text is a cross-entropy over the U unique captions; text → image spreads
    its target uniformly over the images of that caption. Treating repeats as separate texts would make them
    false negatives of each other.

    Region term (``region_weight`` > 0, batches with ``patch_labels``): for every visible object of every image,
    the mean of the projected patch tokens over the object's patches is classified among the K class texts
    (cross-entropy at CLIP's logit scale) and pulled towards its class text (1 − cosine) — a RegionCLIP-style
    objective that makes patch tokens carry their own
    content instead of the whole image's (with the image-level loss alone every patch of the toy CLIP carried the
    global content; see benchmarks/RESULTS.md). Background patches get no region target.

    Args:
        model: the open_clip CLIP being trained (registered as submodule ``clip``).
        tokenizer: open_clip tokenizer matching the text tower.
        class_names: the world's classes (region term).
        region_weight: weight of the region term (0 = off).
        region_template: the class text of the region term, one ``{}``.
    """

    name = "synth_clip"
    trains = ("clip",)
    loss_names = ("image_to_text_loss", "text_to_image_loss", "image_to_text_accuracy", "logit_scale",
                  "region_loss")

    def __init__(self, model: nn.Module, tokenizer, class_names: tuple[str, ...] = (), region_weight: float = 0.0,
                 region_template: str = "a photo of a {}.") -> None:
        super().__init__()
        self.clip = model
        self.tokenizer = tokenizer
        self._tokens: dict[str, torch.Tensor] = {}
        self.region_weight = float(region_weight)
        self.region_texts = [region_template.format(c) for c in class_names]
        if self.region_weight > 0 and not self.region_texts:
            raise ValueError("the region term needs the class names")

    def tokens(self, captions: list[str]) -> torch.Tensor:
        """(N, context_length) token ids, tokenising each distinct caption once per process."""
        missing = [c for c in captions if c not in self._tokens]
        if missing:
            for c, ids in zip(missing, self.tokenizer(missing)):
                self._tokens[c] = ids
        return torch.stack([self._tokens[c] for c in captions])

    def _encode_image(self, images: torch.Tensor, with_tokens: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not with_tokens:
            return self.clip.encode_image(images), None
        visual = self.clip.visual
        visual.output_tokens = True
        try:
            pooled, tokens = visual(images)  # tokens: ln_post'ed patch tokens, before the projection
        finally:
            visual.output_tokens = False
        return pooled, tokens @ visual.proj

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Shape: batch["image"] (B, 3, S, S); batch["caption"] list of B str; optional batch["patch_labels"]
        (B, N) int (0 none, c + 1 class c). Returns named losses."""
        images = batch["image"]
        captions = list(batch["caption"])
        unique = list(dict.fromkeys(captions))
        where = {c: i for i, c in enumerate(unique)}
        target = torch.tensor([where[c] for c in captions], device=images.device)
        regions = self.region_weight > 0 and "patch_labels" in batch
        pooled, patch_tokens = self._encode_image(images, regions)
        img = F.normalize(pooled.float(), dim=-1)
        texts = unique + (self.region_texts if regions else [])
        txt_all = F.normalize(self.clip.encode_text(self.tokens(texts).to(images.device)).float(), dim=-1)
        txt = txt_all[:len(unique)]
        scale = self.clip.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * img @ txt.t()  # (B, U)
        i2t = F.cross_entropy(logits, target)
        positives = F.one_hot(target, len(unique)).t().float()  # (U, B)
        t2i = F.cross_entropy(logits.t(), positives / positives.sum(1, keepdim=True))
        acc = (logits.argmax(1) == target).float().mean()
        loss = 0.5 * (i2t + t2i)
        region = torch.zeros((), device=images.device)
        if regions:
            k = len(self.region_texts)
            onehot = F.one_hot(batch["patch_labels"].to(images.device), k + 1)[..., 1:].float()  # (B, N, K)
            counts = onehot.sum(1)  # (B, K)
            feats = torch.einsum("bnk,bne->bke", onehot, patch_tokens.float()) / counts.clamp(min=1)[..., None]
            valid = counts > 0
            if valid.any():
                r = F.normalize(feats[valid], dim=-1)  # (R, E)
                cls = valid.nonzero()[:, 1]
                class_text = txt_all[len(unique):]
                # which class (cross-entropy among the class texts), and how close (1 − cos to its text)
                region = F.cross_entropy(scale * r @ class_text.t(), cls) \
                    + (1.0 - (r * class_text[cls]).sum(-1)).mean()
                loss = loss + self.region_weight * region
        return {"loss": loss, "image_to_text_loss": i2t.detach(), "text_to_image_loss": t2i.detach(),
                "image_to_text_accuracy": acc, "logit_scale": scale.detach(), "region_loss": region.detach()}


def world_token_ids(world: SyntheticWorld, tokenizer, extra_texts: tuple[str, ...] | list[str] = ()) -> set[int]:
    """Every token id a caption or probe prompt of `world` (and `extra_texts`, e.g. the null captions) can
    contain, with SOT, EOT and padding (0)."""
    texts = list(world.vocabulary()) + list(extra_texts)
    for b in world.background_names:
        texts += world.background_captions(b)
    for c in world.class_names:
        texts += world.class_captions(c) + [f"a photo of a {c}.", f"a photo of {c}."]
    ids: set[int] = {0}
    for row in tokenizer(texts):
        ids.update(int(t) for t in row.tolist())
    return ids


def write_file(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` atomically (temp file + rename), readable by all (0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are meant to be shipped and shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def export_local_dir(model: nn.Module, cfg: SynthClipConfig, out: str | Path, produced: dict | None = None) -> Path:
    """Writes `model` as an open_clip local-dir folder: weights, then training.yaml, then open_clip_config.json.

    Each file is written atomically; the config file (what makes the folder loadable) comes last, so a folder
    is either complete or not a CLIP folder at all.

    Args:
        model: a trained open_clip CLIP of ``cfg.model``'s architecture.
        cfg: the config that produced it (stored as training.yaml, with `produced` facts beside it).
        out: the folder.
        produced: how it was made (command, steps, seconds, versions), stored under ``produced:``.

    Returns:
        The folder.
    """
    import safetensors.torch
    import yaml

    out = Path(out)
    dtype = torch.float16 if cfg.export.dtype == "float16" else torch.float32
    state = {k: v.detach().cpu().to(dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    info = {}
    if cfg.export.zero_unused_tokens:
        extra = (*cfg.pairs.null_captions, f"a cow{cfg.pairs.grey_caption_suffix}.")
        keep = sorted(world_token_ids(SyntheticWorld(cfg.world), make_tokenizer(cfg), extra))
        emb = state["token_embedding.weight"]
        zeroed = torch.zeros_like(emb)
        zeroed[keep] = emb[keep]
        state["token_embedding.weight"] = zeroed
        info = {"token_rows_kept": len(keep)}
    write_file(out / WEIGHTS_NAME, safetensors.torch.save(state, metadata={"format": "pt"}))
    text = dump_synth_clip_config(cfg)
    facts = {**(produced or {}), **info, "weights_bytes": (out / WEIGHTS_NAME).stat().st_size}
    text += yaml.safe_dump({"produced": facts}, sort_keys=False)
    write_file(out / TRAINING_NAME, text.encode("utf-8"))
    config = {"model_cfg": cfg.model.open_clip_cfg(),
              "preprocess_cfg": {"mean": list(cfg.export.mean), "std": list(cfg.export.std),
                                 "interpolation": "bilinear", "resize_mode": "squash"}}
    write_file(out / CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode("utf-8"))
    log.info("toy CLIP written to %s (%.2f MB weights)", out, facts["weights_bytes"] / 1e6)
    return out


@dataclass
class TrainClipResult:
    """What `train_synth_clip` did."""

    out: Path
    run_dir: Path
    status: str  # "finished" | "skipped" | "stopped"
    steps: int
    seconds: float  # wall time of this call's training (0 when skipped)


def _engine_stage_config(cfg: SynthClipConfig):
    from semples.config import StageConfig

    t = cfg.train
    return StageConfig(epochs=1, batch_size=t.batch_size, lr=t.lr, scale_lr=False, min_lr=t.min_lr,
                       warmup_epochs=t.warmup_steps / t.steps, weight_decay=t.weight_decay,
                       checkpoint_every_steps=t.checkpoint_every)


def train_synth_clip(cfg: SynthClipConfig, out: str | Path, *, run_dir: str | Path | None = None,
                     resume: bool = False, force: bool = False, command: str | None = None) -> TrainClipResult:
    """Trains the toy CLIP with the engine and exports it to `out` (see `export_local_dir`).

    Args:
        cfg: the toy-CLIP config.
        out: the local-dir folder to write.
        run_dir: the engine's run folder (checkpoint.pt, metrics.jsonl, manifest.json); default ``out/run``.
        resume: continue an interrupted run from its last checkpoint.
        force: retrain although `run_dir` holds a finished run.
        command: the command line, recorded in training.yaml.

    Returns:
        A `TrainClipResult`.
    """
    from semples.engine import make_accelerator

    out = Path(out)
    run_dir = Path(run_dir) if run_dir is not None else out / "run"
    acc = make_accelerator(cfg.train.device, cfg.train.mixed_precision, deterministic=True)
    threads_before = torch.get_num_threads()
    if acc.device.type == "cpu":
        # on few cores, one thread per process beats oversubscribed OpenMP by far (measured: 2 threads beside a
        # busy worker cost 3x the CPU time per step)
        torch.set_num_threads(cfg.train.threads or max(1, (os.cpu_count() or 1) - cfg.train.num_workers))
    try:
        return _train_and_export(cfg, out, run_dir, acc, resume=resume, force=force, command=command)
    finally:
        torch.set_num_threads(threads_before)


def _train_and_export(cfg: SynthClipConfig, out: Path, run_dir: Path, acc, *, resume: bool, force: bool,
                      command: str | None) -> TrainClipResult:
    from semples.engine import train_stage
    from semples.engine.device import resolve_precision

    model = build_open_clip(cfg)
    world = SyntheticWorld(cfg.world)
    stage = ContrastiveStage(model, make_tokenizer(cfg), world.class_names, cfg.train.region_weight,
                             cfg.train.region_template)
    stream = PairStream(world, cfg.pairs, cfg.train.steps * cfg.train.batch_size, cfg.model.image_size, cfg.seed,
                        patch_size=cfg.model.patch_size if cfg.train.region_weight > 0 else None)
    config_dict = synth_clip_config_dict(cfg)
    config_dict["train"] = {k: v for k, v in config_dict["train"].items() if k not in _RUN_ONLY_KEYS}
    start, cpu_start = time.perf_counter(), time.process_time()
    result = train_stage(stage, stream, _engine_stage_config(cfg), run_dir=run_dir, accelerator=acc, seed=cfg.seed,
                         num_workers=cfg.train.num_workers, log_every=cfg.train.log_every, config_dict=config_dict,
                         config_yaml=dump_synth_clip_config(cfg), resume=resume, force=force)
    seconds = time.perf_counter() - start if result.status != "skipped" else 0.0
    if result.status == "skipped" and (out / CONFIG_NAME).is_file():
        log.info("toy CLIP: %s already finished and exported to %s (--force retrains)", run_dir, out)
        return TrainClipResult(out, run_dir, result.status, result.global_step, seconds)
    # the checkpoint is the result (also when this call only found a finished run)
    stage.load_state_dict(join_state(read_checkpoint(run_dir)["modules"]), strict=True)
    if acc.is_main_process:
        produced = {
            "command": command, "steps": result.global_step, "batch_size": cfg.train.batch_size,
            "train_seconds_this_call": round(seconds, 1), "resumed": bool(resume),
            "cpu_seconds_main_process": round(time.process_time() - cpu_start, 1),
            "num_workers": cfg.train.num_workers,
            "precision": resolve_precision(cfg.train.mixed_precision, acc.device.type), "device": str(acc.device),
            "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "torch": str(torch.__version__), "python": sys.version.split()[0],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        try:
            import open_clip

            produced["open_clip"] = str(open_clip.__version__)
        except Exception:  # the version is a nicety
            pass
        export_local_dir(stage.clip, cfg, out, produced)
    return TrainClipResult(out, run_dir, result.status, result.global_step, seconds)
