"""`semples run`: the whole chain from one config, one step after another, each step a `semples <verb>`.

    train -> cams -> eval-seeds -> pseudo-masks -> eval-masks -> train-seg -> eval -> report

Methods (``pipeline.method``, ``semples run --method``), each writing the same folders so the shared evaluation
steps read them alike:

    semples      train = classify/match/prompt/refine; cams = `semples cams`; pseudo masks = `semples pseudo-masks`
    fma          train = fma-classify -> coarse CLIP CAMs (CAA) -> coarse SAMS seeds -> fma-segment;
                 cams = fine CLIP Grad-CAM + CAA; pseudo masks = fine SAMS region voting
    semples+fma  train and `semples cams` as semples, then CAA of those CAMs with the CLIP's attention; pseudo
                 masks = fine SAMS region voting (the pipeline path, not the paper's 0.85/0.15 output ensemble)

Every step is the same code as its verb (called through `semples.cli.main`), so it writes the same folders, skips
work that is already done and refuses folders made with other settings. The chain records what each step ran,
where it wrote and its headline numbers in ``<output_dir>/<experiment>/run.json``; ``--from STEP`` starts later
(earlier steps' outputs are taken from that manifest), ``--until STEP`` stops early, re-running is idempotent.

Splits: S is trained on ``data.train_split``; pseudo masks are made for ``pipeline.pseudo_split`` (default: the
training split, which the final model learns from); seeds and pseudo masks are scored on
``pipeline.seed_split`` (default ``data.eval_split``: VOC's 1,464-image train split, as in the paper) — CAMs of
the pseudo split are reused when the seed split is a subset of it; the final model is scored on
``segment.eval.split``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from semples.config import Config, dump_config
from semples.errors import PipelineError
from semples.utils.checkpoint_io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

STEPS = ("train", "cams", "eval-seeds", "pseudo-masks", "eval-masks", "train-seg", "eval", "report")




def final_generator_folder(cfg: Config) -> str:
    """Run folder name of the mask generator a scheme ends with."""
    if cfg.scheme.scheme == "joint":
        return "joint"
    if cfg.scheme.scheme == "alternating" and cfg.scheme.rounds > 1:
        return f"refine_r{cfg.scheme.rounds}"
    return "refine"


@dataclass
class Pipeline:
    """Runs the steps of `STEPS` for one config; `root` is <output_dir>/<experiment>."""

    cfg: Config
    force: bool = False

    def __post_init__(self) -> None:
        self.root = Path(self.cfg.output_dir) / self.cfg.experiment  # training run folders live here
        # everything after training: the experiment folder for SemPLeS, a sub-folder per other method, so the
        # methods of one experiment share its training runs and never mix their seeds
        method = self.cfg.pipeline.method
        self.out = self.root if method == "semples" else self.root / method.replace("+", "_")
        self.manifest_path = self.out / "run.json"
        self.config_path = self.out / "run_config.yaml"
        self.manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.is_file() else {}
        self.manifest.setdefault("steps", {})

    # ------------------------------------------------------------------------------------------------ splits
    @property
    def pseudo_split(self) -> str:
        return self.cfg.pipeline.pseudo_split or self.cfg.data.train_split

    @property
    def seed_split(self) -> str:
        return self.cfg.pipeline.seed_split or self.cfg.data.eval_split

    def _seed_split_within_pseudo(self) -> bool:
        if self.seed_split == self.pseudo_split:
            return True
        from semples.data import build_dataset

        pseudo_ids = set(build_dataset(self.cfg.data, self.pseudo_split).ids)
        return set(build_dataset(self.cfg.data, self.seed_split).ids) <= pseudo_ids

    # ----------------------------------------------------------------------------------------------- running
    def _cli(self, step: str, argv: list[str]) -> None:
        from semples.cli import main

        full = [argv[0], "--config", str(self.config_path), *argv[1:]]
        log.info("run %s: semples %s", step, " ".join(full))
        status = main(full)
        if status != 0:
            raise PipelineError(f"step {step} failed (exit {status}): semples {' '.join(full)}")
        self.manifest["steps"].setdefault(step, {}).setdefault("commands", []).append(["semples", *full])

    def _output(self, step: str, key: str) -> str:
        try:
            return self.manifest["steps"][step]["outputs"][key]
        except KeyError:
            raise PipelineError(f"step {step} has no recorded output '{key}' in {self.manifest_path}; run it first "
                                f"(drop --from)") from None

    def _save(self) -> None:
        atomic_write_json(self.manifest_path, self.manifest)

    def run(self, start: str | None = None, until: str | None = None) -> dict:
        """Runs the steps from `start` to `until` (inclusive); returns the run manifest."""
        for name, value in (("--from", start), ("--until", until)):
            if value is not None and value not in STEPS:
                raise PipelineError(f"{name} {value!r} is not a step; steps: {', '.join(STEPS)}")
        first = STEPS.index(start) if start else 0
        last = STEPS.index(until) if until else len(STEPS) - 1
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, dump_config(self.cfg))
        self.manifest.update(config=str(self.config_path), method=self.cfg.pipeline.method,
                             splits={"train": self.cfg.data.train_split, "pseudo": self.pseudo_split,
                                     "seeds": self.seed_split, "segment_eval": self.cfg.segment.eval.split
                                     or self.cfg.data.eval_split})
        for step in STEPS[first:last + 1]:
            t0 = time.perf_counter()
            record = self.manifest["steps"].setdefault(step, {})
            record.pop("commands", None)
            record.update(status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
            self._save()
            outputs = getattr(self, "_step_" + step.replace("-", "_"))()
            record.update(status="done", outputs=outputs, seconds=round(time.perf_counter() - t0, 1),
                          finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
            self._save()
        return self.manifest

    # ------------------------------------------------------------------------------------------------- steps
    def _force(self) -> list[str]:
        return ["--force"] if self.force else []

    @property
    def method(self) -> str:
        return self.cfg.pipeline.method

    def _step_train(self) -> dict:
        if self.method != "fma":
            self._cli("train", ["train", "--scheme", self.cfg.scheme.scheme, "--resume", *self._force()])
            return {"generator": str(self.root / final_generator_folder(self.cfg))}
        # FMA-WSSS: classification prompts -> coarse seeds (CAA 0.4, SAMS 0.6) -> segmentation prompts
        from semples.infer.fma import fma_cams, fma_seeds

        self._cli("train", ["train", "--stage", "fma-classify", "--resume", *self._force()])
        coarse_cams = self.out / "cams_coarse" / self.pseudo_split
        coarse_seeds = self.out / "seeds_coarse" / self.pseudo_split
        fma_cams(self.cfg, self.root / "fma-classify", coarse_cams, phase="coarse", split=self.pseudo_split,
                 force=self.force)
        fma_seeds(self.cfg, coarse_cams, coarse_seeds, phase="coarse", split=self.pseudo_split, force=self.force)
        self._cli("train", ["train", "--stage", "fma-segment", "--seeds", str(coarse_seeds), "--resume",
                            *self._force()])
        return {"generator": str(self.root / "fma-segment"), "coarse_cams": str(coarse_cams),
                "coarse_seeds": str(coarse_seeds)}

    def _cams_dir(self, split: str) -> Path:
        return self.out / "cams" / split

    def _cams_for(self, split: str, out: Path) -> None:
        """Seeds of `split` into `out`, as the method makes them."""
        generator = self._output("train", "generator")
        if self.method == "fma":  # CLIP Grad-CAM of the segmentation prompts, CAA with the fine box threshold
            from semples.infer.fma import fma_cams

            fma_cams(self.cfg, generator, out, phase="fine", split=split, force=self.force)
            return
        target = out if self.method == "semples" else self.out / "cams_semples" / split
        self._cli("cams", ["cams", "--generator", generator, "--split", split, "--out", str(target), *self._force()])
        if self.method == "semples+fma":  # SemPLeS seeds refined by CLIP attention affinity (CAA)
            from semples.infer.fma import semples_fma_cams

            semples_fma_cams(self.cfg, target, out, phase="fine", split=split, force=self.force)

    def _step_cams(self) -> dict:
        out = {"pseudo": str(self._cams_dir(self.pseudo_split))}
        self._cams_for(self.pseudo_split, Path(out["pseudo"]))
        if self._seed_split_within_pseudo():
            out["seeds"] = out["pseudo"]
        else:
            out["seeds"] = str(self._cams_dir(self.seed_split))
            self._cams_for(self.seed_split, Path(out["seeds"]))
        return out

    def _step_eval_seeds(self) -> dict:
        out = self.out / "eval_seeds" / self.seed_split
        self._cli("eval-seeds", ["eval-seeds", "--cams", self._output("cams", "seeds"), "--split", self.seed_split,
                                 "--out", str(out)])
        metrics = json.loads((out / "metrics.json").read_text())
        return {"dir": str(out), "metrics": str(out / "metrics.json"), "miou": metrics.get("miou"),
                "threshold": metrics.get("threshold")}

    def _pseudo_dir(self, split: str) -> Path:
        kind = self.cfg.pseudo.method if self.method == "semples" else "sams_fine"
        return self.out / "pseudo_masks" / kind / split

    def _pseudo_for(self, split: str, cams: str, out: str) -> None:
        if self.method != "semples":  # FMA-WSSS pseudo masks: SAMS region voting with the fine background power
            from semples.infer.fma import fma_seeds

            fma_seeds(self.cfg, cams, out, phase="fine", split=split, force=self.force)
            return
        thresholds = ["--threshold-from", self._output("eval-seeds", "metrics")] \
            if self.cfg.pseudo.threshold is None else []
        self._cli("pseudo-masks", ["pseudo-masks", "--cams", cams, "--split", split, "--out", out, *thresholds,
                                   *self._force()])

    def _step_pseudo_masks(self) -> dict:
        out = {"pseudo": str(self._pseudo_dir(self.pseudo_split))}
        self._pseudo_for(self.pseudo_split, self._output("cams", "pseudo"), out["pseudo"])
        if self._seed_split_within_pseudo():
            out["seeds"] = out["pseudo"]
        else:
            out["seeds"] = str(self._pseudo_dir(self.seed_split))
            self._pseudo_for(self.seed_split, self._output("cams", "seeds"), out["seeds"])
        return out

    def _step_eval_masks(self) -> dict:
        out = self.out / "eval_masks" / self.seed_split
        self._cli("eval-masks", ["eval-masks", "--masks", self._output("pseudo-masks", "seeds"), "--split",
                                 self.seed_split, "--out", str(out)])
        metrics = json.loads((out / "metrics.json").read_text())
        return {"dir": str(out), "metrics": str(out / "metrics.json"), "miou": metrics.get("miou")}

    def _step_train_seg(self) -> dict:
        run_dir = self.out / "segment"
        self._cli("train-seg", ["train-seg", "--pseudo-masks", self._output("pseudo-masks", "pseudo"),
                                "--run-dir", str(run_dir), "--no-eval", "--resume", *self._force()])
        return {"run_dir": str(run_dir)}

    def _step_eval(self) -> dict:
        split = self.cfg.segment.eval.split or self.cfg.data.eval_split
        out = self.out / "segment" / "eval" / split
        self._cli("eval", ["eval-seg", "--checkpoint", self._output("train-seg", "run_dir"), "--split", split,
                           "--out", str(out), "--save-predictions", *self._force()])
        metrics = json.loads((out / "metrics.json").read_text())
        results = metrics.get("results", {})
        return {"dir": str(out), "metrics": str(out / "metrics.json"),
                "miou": {name: r.get("miou") for name, r in results.items()}}

    def _step_report(self) -> dict:
        out = self.out / "report"
        out.mkdir(parents=True, exist_ok=True)
        # predictions of the final model on the seed split, so one figure row shows every step on one image
        seed_eval = self.out / "segment" / "eval" / self.seed_split
        self._cli("report", ["eval-seg", "--checkpoint", self._output("train-seg", "run_dir"), "--split",
                             self.seed_split, "--out", str(seed_eval), "--save-predictions"])
        lines = [f"# {self.cfg.experiment}: run summary", "", "| step | output | mIoU |", "|---|---|---:|"]
        for step in ("eval-seeds", "eval-masks", "eval"):
            rec = self.manifest["steps"].get(step, {}).get("outputs", {})
            miou = rec.get("miou")
            if isinstance(miou, dict):
                miou = ", ".join(f"{k} {100 * v:.1f}" for k, v in miou.items() if v is not None)
            elif miou is not None:
                miou = f"{100 * miou:.1f}"
            lines.append(f"| {step} | {rec.get('dir', '—')} | {miou or '—'} |")
        atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
        figure = out / "figures.png"
        argv = ["figures", "--cams", self._output("cams", "seeds"), "--split", self.seed_split,
                "--eval", self._output("eval-seeds", "dir"), "--pseudo-masks", self._output("pseudo-masks", "seeds"),
                "--predictions", str(seed_eval / "predictions" / "multi_scale"),
                "--num", str(self.cfg.pipeline.figures), "--out", str(figure)]
        self._cli("report", argv)
        return {"summary": str(out / "summary.md"), "figures": str(figure)}


def run_pipeline(cfg: Config, *, start: str | None = None, until: str | None = None, force: bool = False) -> dict:
    """Runs the chain for `cfg` (see module docstring); returns the run manifest."""
    return Pipeline(cfg, force=force).run(start=start, until=until)
