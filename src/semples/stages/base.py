"""What a training stage is: trainable parts (registered submodules), frozen parts (held aside), named losses.

The one training loop (`semples.engine`) runs any `Stage`: it optimises the parameters that require grad,
checkpoints `state_dict()` (trainable parts only), and calls `forward(batch)`, which returns
``{"loss": total, "<name>_loss": ..., ...}``. Frozen parts — CLIP, and S in stage prompt — are never
submodules: they stay out of optimisers, DDP and checkpoints, follow the stage across devices, and stay in
eval mode whatever `train()` is called with.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Stage(nn.Module):
    """Base class of training stages.

    Class attributes (documentation that tests check):
        name: the stage's name (run folder, CLI).
        trains: names of the submodules that train.
        frozen: names of the frozen parts.
        loss_names: keys of the dict `forward` returns, besides "loss".
    """

    name: str = "stage"
    trains: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()
    loss_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self._frozen: dict[str, nn.Module] = {}

    def hold_frozen(self, name: str, module: nn.Module) -> nn.Module:
        """Keeps `module` as a frozen part: no grad, eval mode, not a submodule (not in state_dict)."""
        module.requires_grad_(False)
        module.eval()
        self._frozen[name] = module
        return module

    def frozen_modules(self) -> dict[str, nn.Module]:
        return dict(self._frozen)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return dict(self.named_children())

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for module in self._frozen.values():
            module._apply(fn)
        return self

    def train(self, mode: bool = True) -> Stage:
        super().train(mode)
        for module in self._frozen.values():
            module.eval()
        return self

    def zero_loss(self) -> torch.Tensor:
        """A zero that is connected to every trainable parameter (for batches without positive pairs)."""
        params = [p for p in self.parameters() if p.requires_grad]
        zero = sum((p.sum() * 0.0 for p in params), torch.zeros(()))
        return zero

    def describe(self) -> dict:
        """What trains, what is frozen, which losses — recorded in each run's manifest."""
        trainable = {n: sum(p.numel() for p in m.parameters() if p.requires_grad)
                     for n, m in self.trainable_modules().items()}
        frozen_info = {}
        for n, m in self._frozen.items():
            frozen_info[n] = getattr(m, "source", None) or type(m).__name__
        return {"stage": self.name, "trainable_parameters": trainable, "frozen": frozen_info,
                "losses": list(self.loss_names)}
