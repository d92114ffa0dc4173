"""Opt-in ``torch.compile`` of the frozen CLIP's towers (``clip.compile``; off by default).

The CLIP passes are most of every SemPLeS step (image tower forward + backward-to-input in match / refine, text
tower forward + backward in prompt: benchmarks/step_throughput.py), so they are what is compiled. Compilation is
in place (`nn.Module.compile`): module names, state_dict keys and checkpoints stay as they are, and parameters
are untouched. The first call of each input shape pays the compilation (tens of seconds on CPU); measured gains
are in benchmarks/RESULTS.md ("torch.compile"). Numerics may differ from eager mode in the last bits (fused
kernels sum in another order).
"""

from __future__ import annotations

import torch.nn as nn

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def compile_in_place(module: nn.Module, mode: str = "default") -> nn.Module:
    """Compiles `module`'s forward in place with inductor (dynamic shapes after the first recompilation).

    Raises:
        ValueError: `mode` is not one of `COMPILE_MODES`.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    module.compile(mode=mode)
    return module


def compile_clip(model: nn.Module, mode: str = "default") -> list[str]:
    """Compiles an open_clip model's image tower and text transformer in place; returns what was compiled."""
    done = []
    if getattr(model, "visual", None) is not None:
        compile_in_place(model.visual, mode)
        done.append("visual")
    text = model.text if hasattr(model, "text") else model
    if getattr(text, "transformer", None) is not None:
        compile_in_place(text.transformer, mode)
        done.append("text.transformer" if text is not model else "transformer")
    return done


__all__ = ["COMPILE_MODES", "compile_clip", "compile_in_place"]
