"""Epoch-seeded, sharded sampling whose order depends only on (seed, epoch): resumable and worker-independent."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class EpochShardSampler(torch.utils.data.Sampler):
    """Yields ``(index, epoch)`` keys for one process.

    Each epoch draws a permutation from (seed, epoch) and cuts it into `steps` global batches of
    `global_batch` items (the remainder is dropped). Process `rank` of `world` takes its contiguous share of each
    global batch, so the union over processes of a step's items is that step's global batch.

    Args:
        size: number of items in the dataset.
        global_batch: items per optimiser step over all processes (and accumulation micro-batches).
        seed: base seed.
        rank, world: this process and the number of processes.
        shuffle: permute (training) or keep order.
    """

    def __init__(self, size: int, global_batch: int, seed: int = 0, rank: int = 0, world: int = 1,
                 shuffle: bool = True) -> None:
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by {world} processes")
        self.size = size
        self.global_batch = global_batch
        self.seed = seed
        self.rank = rank
        self.world = world
        self.shuffle = shuffle
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Selects the epoch to iterate, skipping its first `start_step` optimiser steps (resume)."""
        self.epoch = epoch
        self.start_step = start_step

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + epoch) % (2**63))
        return torch.randperm(self.size, generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.order(self.epoch)
        share = self.global_batch // self.world
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.global_batch + self.rank * share
            for i in order[base: base + share].tolist():
                yield i, self.epoch

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * (self.global_batch // self.world)
