"""Methods of `semples run`: how each one trains its mask generator, makes its seeds and its pseudo masks.

`METHODS` is a plain dict (name -> `Method`); its keys are the valid values of ``pipeline.method`` and
``semples run --method``. The pipeline (`semples.pipeline`) loops its steps over a method: the method-specific
steps (train, cams, pseudo-masks) call the method, the shared ones (eval-seeds, eval-masks, train-seg, eval,
report) are the pipeline's, so every method writes the folders the shared evaluation reads.

    semples      train = classify/match/prompt/refine; cams = `semples cams`; pseudo masks = `semples pseudo-masks`
    fma          train = fma-classify -> coarse CLIP CAMs (CAA) -> coarse SAMS seeds -> fma-segment;
                 cams = fine CLIP Grad-CAM + CAA; pseudo masks = fine SAMS region voting
    semples+fma  train and `semples cams` as semples, then CAA of those CAMs with the CLIP's attention; pseudo
                 masks = fine SAMS region voting (the pipeline path, not the paper's 0.85/0.15 output ensemble)

A new method is one module with a `Method` subclass and one entry here (docs/architecture.md).
"""

from __future__ import annotations

from semples.errors import ConfigError
from semples.methods.base import Method, RunContext
from semples.methods.fma import FmaMethod
from semples.methods.semples import SemplesMethod
from semples.methods.semples_fma import SemplesFmaMethod

METHODS: dict[str, Method] = {
    "semples": SemplesMethod(),
    "fma": FmaMethod(),
    "semples+fma": SemplesFmaMethod(),
}


def method(name: str) -> Method:
    """The `Method` named `name`; the error lists the valid names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown pipeline.method {name!r}; valid: {', '.join(METHODS)}") from None


__all__ = ["METHODS", "FmaMethod", "Method", "RunContext", "SemplesFmaMethod", "SemplesMethod", "method"]
