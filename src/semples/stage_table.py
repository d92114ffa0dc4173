"""The one list of training stages (where each stage class lives, which CLI verb trains it) and the learning
schemes that chain them (`semples.steps.train.train_scheme`).

Readable without importing torch (or any stage): `semples train --help` lists its `--stage` and `--scheme`
choices from here and starts in ~0.3 s. `semples.stages.STAGES` maps the same names to the imported classes.

A new stage is one module with a `semples.stages.base.Stage` subclass and one line here.
"""

from __future__ import annotations

import importlib

# name -> (module, class, the verb that trains it: ``semples train --stage NAME`` or ``semples train-seg``)
STAGE_TABLE: dict[str, tuple[str, str, str]] = {
    "classify": ("semples.stages.classify", "ClassifyStage", "train"),
    "match": ("semples.stages.match", "MatchStage", "train"),
    "prompt": ("semples.stages.prompt", "PromptStage", "train"),
    "refine": ("semples.stages.refine", "RefineStage", "train"),
    "joint": ("semples.stages.joint", "JointStage", "train"),
    "fma-classify": ("semples.stages.fma_classify", "FmaClassifyStage", "train"),
    "fma-segment": ("semples.stages.fma_segment", "FmaSegmentStage", "train"),
    "segment": ("semples.stages.train_segmenter", "SegmentStage", "train-seg"),
}

# the learning schemes of ``semples train --scheme`` (their stage order: `semples.steps.train`)
SCHEMES = ("sequential", "alternating", "joint")


def stages_of_verb(verb: str) -> list[str]:
    """Names of the stages a CLI verb trains (``semples train --stage`` choices), in table order."""
    return [name for name, (_, _, v) in STAGE_TABLE.items() if v == verb]


def import_stage(name: str) -> type:
    """The class of stage `name` (imports its module). KeyError for a name not in the table."""
    module, cls, _ = STAGE_TABLE[name]
    return getattr(importlib.import_module(module), cls)
