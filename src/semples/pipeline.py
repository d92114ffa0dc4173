"""`semples run`: the whole chain from one config, its steps looped over a method.

    train -> cams -> eval-seeds -> pseudo-masks -> eval-masks -> train-seg -> eval -> report

The method (``pipeline.method``, ``semples run --method``; `semples.methods.METHODS`) makes the method-specific
steps (train, cams, pseudo-masks); the shared evaluation steps, the final model and the report are the same for
every method and read the folders the method wrote (`semples.runs.RunLayout`). Every step is the library function
of its verb (`semples.steps`), so it writes the same folders, skips work that is already done, refuses folders
made from other inputs or settings, and an error reaches the user with its own type and message. The chain records
what each step ran (the equivalent `semples` command lines), where it wrote and its headline numbers in
``<output_dir>/<experiment>/run.json``; ``--from STEP`` starts later (earlier steps' outputs are taken from that
manifest), ``--until STEP`` stops early, re-running is idempotent.

Splits: S is trained on ``data.train_split``; pseudo masks are made for ``pipeline.pseudo_split`` (default: the
training split, which the final model learns from); seeds and pseudo masks are scored on
``pipeline.seed_split`` (default ``data.eval_split``: VOC's 1,464-image train split, as in the paper) — CAMs of
the pseudo split are reused when the seed split is a subset of it; the final model is scored on
``segment.eval.split``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from semples import steps
from semples.config import Config, dump_config
from semples.errors import RunError, UsageError
from semples.methods import method as method_named
from semples.runs import RunLayout, final_generator_folder
from semples.utils.checkpoint_io import atomic_write_json, atomic_write_text, read_json
from semples.utils.locks import FolderLock, launched_rank

log = logging.getLogger(__name__)

STEPS = ("train", "cams", "eval-seeds", "pseudo-masks", "eval-masks", "train-seg", "eval", "report")

__all__ = ["STEPS", "Pipeline", "final_generator_folder", "run_pipeline"]


@dataclass
class Pipeline:
    """Runs the steps of `STEPS` for one config; `root` is <output_dir>/<experiment>, `out` the method's folder."""

    cfg: Config
    force: bool = False

    def __post_init__(self) -> None:
        self.method = method_named(self.cfg.pipeline.method)
        # the methods of one experiment share its training runs (root); everything after training goes to the
        # method's folder (out), so they never mix their seeds
        self.layout = RunLayout(self.cfg, self.method.folder, overrides=False)
        self.root, self.out = self.layout.root, self.layout.out
        self.manifest_path = self.layout.run_manifest
        self.config_path = self.layout.run_config
        self.manifest = self._read_manifest()

    def _read_manifest(self) -> dict:
        """run.json as recorded ({} when there is none); `RunError` naming it when it cannot be used."""
        if not self.manifest_path.exists():
            return {"steps": {}}
        manifest = read_json(self.manifest_path, "run manifest", RunError)
        if not isinstance(manifest, dict) or not isinstance(manifest.setdefault("steps", {}), dict):
            raise RunError(f"{self.manifest_path}: not a semples run manifest (expected an object with 'steps'); "
                           "move it away to start the run's record afresh")
        return manifest

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

    # --------------------------------------------------------------------------------------- for the methods
    def record(self, step: str, argv: list[str]) -> None:
        """Records the `semples` command line equivalent to what `step` ran (run.json, ``steps.<step>.commands``)."""
        full = ["semples", argv[0], "--config", str(self.config_path), *argv[1:]]
        log.info("run %s: %s", step, " ".join(full))
        self.manifest["steps"].setdefault(step, {}).setdefault("commands", []).append(full)

    def output(self, step: str, key: str) -> str:
        """An earlier step's recorded output; `RunError` when the run manifest has none."""
        try:
            return self.manifest["steps"][step]["outputs"][key]
        except KeyError:
            raise RunError(f"step {step} has no recorded output '{key}' in {self.manifest_path}; run it first "
                           f"(drop --from)") from None

    def _save(self) -> None:
        atomic_write_json(self.manifest_path, self.manifest)

    # ----------------------------------------------------------------------------------------------- running
    def run(self, start: str | None = None, until: str | None = None) -> dict:
        """Runs the steps from `start` to `until` (inclusive); returns the run manifest."""
        for name, value in (("--from", start), ("--until", until)):
            if value is not None and value not in STEPS:
                raise UsageError(f"{name} {value!r} is not a step; steps: {', '.join(STEPS)}")
        first = STEPS.index(start) if start else 0
        last = STEPS.index(until) if until else len(STEPS) - 1
        # one `semples run` per experiment folder at a time: a second one would interleave its records with this
        # one's in run.json (the steps lock their own folders as well)
        with FolderLock(self.out, "experiment folder", enabled=launched_rank() == 0):
            return self._run_steps(first, last)

    def _run_steps(self, first: int, last: int) -> dict:
        self.manifest = self._read_manifest()  # as the last run left it, now that no other run can change it
        atomic_write_text(self.config_path, dump_config(self.cfg))
        self.manifest.update(config=str(self.config_path), method=self.method.name,
                             splits={"train": self.cfg.data.train_split, "pseudo": self.pseudo_split,
                                     "seeds": self.seed_split, "segment_eval": self.cfg.segment.eval.split
                                     or self.cfg.data.eval_split})
        for step in STEPS[first:last + 1]:
            t0 = time.perf_counter()
            record = self.manifest["steps"].setdefault(step, {})
            record.pop("commands", None)
            record.update(status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
            self._save()
            try:
                outputs = getattr(self, "_step_" + step.replace("-", "_"))()
            except BaseException as e:
                record.update(status=f"failed: {type(e).__name__}: {e}"[:500])
                self._save()
                raise
            record.update(status="done", outputs=outputs, seconds=round(time.perf_counter() - t0, 1),
                          finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
            self._save()
        return self.manifest

    # ------------------------------------------------------------------------------------------------- steps
    def _force(self) -> list[str]:
        return ["--force"] if self.force else []

    def _step_train(self) -> dict:
        return self.method.train(self)

    def _step_cams(self) -> dict:
        out = {"pseudo": str(self.layout.cams(self.pseudo_split))}
        self.method.cams(self, self.pseudo_split, Path(out["pseudo"]))
        if self._seed_split_within_pseudo():
            out["seeds"] = out["pseudo"]
        else:
            out["seeds"] = str(self.layout.cams(self.seed_split))
            self.method.cams(self, self.seed_split, Path(out["seeds"]))
        return out

    def _step_eval_seeds(self) -> dict:
        out = self.layout.eval_seeds(self.seed_split)
        cams = self.output("cams", "seeds")
        self.record("eval-seeds", ["eval-seeds", "--cams", cams, "--split", self.seed_split, "--out", str(out)])
        result = steps.seeds.run(self.cfg, cams, split=self.seed_split, out=out)
        return {"dir": str(out), "metrics": str(out / "metrics.json"), "miou": result.metrics.get("miou"),
                "threshold": result.metrics.get("threshold")}

    def _pseudo_dir(self, split: str) -> Path:
        return self.layout.pseudo_masks(self.method.pseudo_kind(self.cfg), split)

    def _step_pseudo_masks(self) -> dict:
        out = {"pseudo": str(self._pseudo_dir(self.pseudo_split))}
        self.method.pseudo_masks(self, self.pseudo_split, self.output("cams", "pseudo"), out["pseudo"])
        if self._seed_split_within_pseudo():
            out["seeds"] = out["pseudo"]
        else:
            out["seeds"] = str(self._pseudo_dir(self.seed_split))
            self.method.pseudo_masks(self, self.seed_split, self.output("cams", "seeds"), out["seeds"])
        return out

    def _step_eval_masks(self) -> dict:
        out = self.layout.eval_masks(self.seed_split)
        masks = self.output("pseudo-masks", "seeds")
        self.record("eval-masks", ["eval-masks", "--masks", masks, "--split", self.seed_split, "--out", str(out)])
        result = steps.masks.run(self.cfg, masks, split=self.seed_split, out=out)
        return {"dir": str(out), "metrics": str(out / "metrics.json"), "miou": result.metrics.get("miou")}

    def _step_train_seg(self) -> dict:
        run_dir = self.layout.segment()
        pseudo = self.output("pseudo-masks", "pseudo")
        self.record("train-seg", ["train-seg", "--pseudo-masks", pseudo, "--run-dir", str(run_dir), "--no-eval",
                                  "--resume", *self._force()])
        steps.segment.train(self.cfg, pseudo, run_dir=run_dir, resume=True, force=self.force)
        return {"run_dir": str(run_dir)}

    def _step_eval(self) -> dict:
        split = self.cfg.segment.eval.split or self.cfg.data.eval_split
        run_dir = self.output("train-seg", "run_dir")
        out = self.layout.segment_eval(run_dir, split)
        self.record("eval", ["eval-seg", "--checkpoint", run_dir, "--split", split, "--out", str(out),
                             "--save-predictions", *self._force()])
        report = steps.segment.evaluate(self.cfg, run_dir, split=split, out=out, save_predictions=True,
                                        force=self.force)
        results = report.get("results", {})
        return {"dir": str(out), "metrics": str(out / "metrics.json"),
                "miou": {name: r.get("miou") for name, r in results.items()}}

    def _step_report(self) -> dict:
        out = self.layout.report()
        out.mkdir(parents=True, exist_ok=True)
        # predictions of the final model on the seed split, so one figure row shows every step on one image
        run_dir = self.output("train-seg", "run_dir")
        seed_eval = self.layout.segment_eval(run_dir, self.seed_split)
        self.record("report", ["eval-seg", "--checkpoint", run_dir, "--split", self.seed_split, "--out",
                               str(seed_eval), "--save-predictions"])
        steps.segment.evaluate(self.cfg, run_dir, split=self.seed_split, out=seed_eval, save_predictions=True)
        atomic_write_text(out / "summary.md", run_summary(self.cfg.experiment, self.manifest))
        figure = out / "figures.png"
        cams, eval_dir = self.output("cams", "seeds"), self.output("eval-seeds", "dir")
        masks, predictions = self.output("pseudo-masks", "seeds"), seed_eval / "predictions" / "multi_scale"
        self.record("report", ["figures", "--cams", cams, "--split", self.seed_split, "--eval", eval_dir,
                               "--pseudo-masks", masks, "--predictions", str(predictions),
                               "--num", str(self.cfg.pipeline.figures), "--out", str(figure)])
        steps.figures.run(self.cfg, split=self.seed_split, cams=cams, eval_dir=eval_dir, pseudo_masks=masks,
                          predictions=predictions, num=self.cfg.pipeline.figures, out=figure)
        return {"summary": str(out / "summary.md"), "figures": str(figure)}


def run_summary(experiment: str, manifest: dict) -> str:
    """summary.md of a run: the headline mIoU of each evaluation step and where it is."""
    lines = [f"# {experiment}: run summary", "", "| step | output | mIoU |", "|---|---|---:|"]
    for step in ("eval-seeds", "eval-masks", "eval"):
        rec = manifest["steps"].get(step, {}).get("outputs", {})
        miou = rec.get("miou")
        if isinstance(miou, dict):
            miou = ", ".join(f"{k} {100 * v:.1f}" for k, v in miou.items() if v is not None)
        elif miou is not None:
            miou = f"{100 * miou:.1f}"
        lines.append(f"| {step} | {rec.get('dir', '—')} | {miou or '—'} |")
    from semples.metrics import MEAN_CONVENTION

    lines += ["", f"{MEAN_CONVENTION[0].upper()}{MEAN_CONVENTION[1:]}."]
    return "\n".join(lines) + "\n"


def run_pipeline(cfg: Config, *, start: str | None = None, until: str | None = None, force: bool = False) -> dict:
    """Runs the chain for `cfg` (see module docstring); returns the run manifest."""
    return Pipeline(cfg, force=force).run(start=start, until=until)
