"""An infinite, seeded, resumable order over a map-style dataset, sharded across processes.

Epoch `e` uses the permutation `randperm(len(dataset))` drawn from a generator seeded by (seed, e). Its first
`world_size * (len // world_size)` entries are dealt round-robin to the ranks, so each rank gets a disjoint slice of
the same size; each rank cuts its slice into full batches (a last partial batch is dropped). The order therefore
depends only on (seed, epoch, position in the epoch): a run resumed from a checkpoint that saved (epoch, position)
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


def epoch_permutation(dataset_len: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled indices of `epoch`, the same on every process. Returns (dataset_len,) int64."""
    # SeedSequence mixes (seed, epoch) into well-separated streams (seed 0 epoch 1 vs seed 1 epoch 0, ...).
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
    gen = torch.Generator().manual_seed(mixed)
    return torch.randperm(dataset_len, generator=gen)


@dataclass
class DataPosition:
    """Where the data order stands: the next batch is number `position` of epoch `epoch` (both 0-based)."""

    epoch: int = 0
    position: int = 0

    def advance(self, batches_per_epoch: int) -> None:
        """Move past one consumed batch."""
        self.position += 1
        if self.position >= batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0


class ShardedBatchSampler:
    """Yields lists of dataset indices (this rank's batches) forever, starting at `start`.

    Use as `DataLoader(dataset, batch_sampler=ShardedBatchSampler(...))`. The sampler holds no state that changes
    while iterating (a DataLoader with workers reads ahead of what the trainer consumed); the trainer keeps its own
    `DataPosition` and advances it once per consumed batch.
    """

    def __init__(
        self,
        dataset_len: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start: DataPosition | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.per_rank = dataset_len // world_size
        if self.per_rank < batch_size:
            raise ValueError(
                f"the dataset has {dataset_len} items: too few for batch_size={batch_size} on each of "
                f"{world_size} process(es); lower train.batch_size or use a larger dataset"
            )
        self.dataset_len, self.batch_size, self.seed = dataset_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start = DataPosition() if start is None else DataPosition(start.epoch, start.position)
        if not 0 <= self.start.position < self.batches_per_epoch:
            raise ValueError(f"start.position must be in [0, {self.batches_per_epoch}), got {self.start.position}")

    @property
    def batches_per_epoch(self) -> int:
        return self.per_rank // self.batch_size

    def rank_indices(self, epoch: int) -> torch.Tensor:
        """This rank's share of epoch `epoch`'s permutation. Returns (per_rank,) int64."""
        perm = epoch_permutation(self.dataset_len, self.seed, epoch)
        return perm[: self.per_rank * self.world_size][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        epoch, position = self.start.epoch, self.start.position
        while True:
            idx = self.rank_indices(epoch)
            for b in range(position, self.batches_per_epoch):
                yield idx[b * self.batch_size : (b + 1) * self.batch_size].tolist()
            epoch, position = epoch + 1, 0
