"""Which examples each process serves, in which batches, so that several processes together see every example of a
split exactly once per epoch, and a run resumed from a mid-epoch checkpoint continues at the next batch.

Lightning's default with several processes, DistributedSampler, pads a split to a multiple of the world size by
repeating examples (validation and test metrics then count some twice), and an interrupted epoch restarts at its
first batch. Here instead:

- an epoch's order is a permutation drawn from (seed, epoch) for training, the split's own order otherwise; it does not
  depend on the world size;
- the order is cut into global batches of batch_size x world_size examples, and each global batch into one contiguous
  slice per rank, so W ranks of batch B step through the same global batches as one process of batch B x W;
- a short last global batch is split as evenly as possible, and when it has fewer examples than there are ranks,
  examples move to it from the batches before, so every rank makes the same number of steps (DDP ranks step
  together) with no example repeated or left out;
- ResumableDataLoader counts the batches it has delivered; Lightning keeps its state_dict (epoch, examples served
  over all ranks) in every checkpoint and hands it back on resume.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler


def epoch_order(num_examples: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    """The epoch's order of example indices; (seed, epoch) seeds an independent stream (no seed + epoch collisions)."""
    if not shuffle:
        return np.arange(num_examples)
    return np.random.default_rng((seed, epoch)).permutation(num_examples)


def global_batch_sizes(num_examples: int, batch_size: int, world_size: int) -> list[int]:
    """Examples per global batch (per optimiser step over all ranks): full batches of batch_size x world_size, the
    shortfall taken from the end while every rank keeps one example per step; only a split too small for that (fewer
    examples than ranks, or batch size 1 with a remainder) leaves some ranks out of the last step."""
    per_step = batch_size * world_size
    sizes = [per_step] * -(-num_examples // per_step)
    excess = sum(sizes) - num_examples
    for floor in (world_size, 0):
        for i in reversed(range(len(sizes))):
            cut = min(excess, max(sizes[i] - floor, 0))
            sizes[i] -= cut
            excess -= cut
    return [size for size in sizes if size]


def rank_slice(size: int, rank: int, world_size: int) -> slice:
    """Rank's contiguous part of a global batch of `size` examples; the first size % world_size ranks get one more."""
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class ShardSampler(Sampler[int]):
    """One rank's examples of an epoch, batch by batch (`batches()`), or one after another when iterated.

    equal_steps: refuse a split that would give the ranks different numbers of batches (training, where DDP ranks
    must step together); evaluation allows it, since each rank only runs its own batches.
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        equal_steps: bool = False,
    ) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
        self.num_examples, self.batch_size, self.shuffle, self.seed = num_examples, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.sizes = global_batch_sizes(num_examples, batch_size, world_size)
        if equal_steps and any(size < world_size for size in self.sizes):
            raise ValueError(
                f"{num_examples} examples in batches of {batch_size} cannot give each of {world_size} ranks the same "
                "number of steps without repeating or dropping examples; change the batch size or the device count"
            )
        self._slices = [rank_slice(size, rank, world_size) for size in self.sizes]
        self.num_batches = sum(part.stop > part.start for part in self._slices)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (and by ResumableDataLoader on resume)."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        order = epoch_order(self.num_examples, self.shuffle, self.seed, self.epoch)
        starts = itertools.accumulate(self.sizes, initial=0)
        parts = (order[start:][part] for start, part in zip(starts, self._slices, strict=False))
        return [part.tolist() for part in parts if len(part)]

    def examples_in_steps(self, steps: int) -> int:
        """Examples all ranks together have served after `steps` steps of the epoch."""
        return sum(self.sizes[:steps])

    def steps_in_examples(self, examples: int) -> int:
        """Whole steps that `examples` served examples amount to (the inverse of examples_in_steps)."""
        return sum(1 for total in itertools.accumulate(self.sizes) if total <= examples)

    def __iter__(self) -> Iterator[int]:
        return itertools.chain.from_iterable(self.batches())

    def __len__(self) -> int:
        return sum(part.stop - part.start for part in self._slices)


class ShardBatchSampler(Sampler[list[int]]):
    """The ShardSampler's batches as a DataLoader's batch_sampler (Lightning sets the epoch through `.sampler`);
    the first `skip` batches of the epoch are left out, which is how a resumed epoch starts part-way."""

    def __init__(self, sampler: ShardSampler) -> None:
        self.sampler = sampler
        self.batch_size = sampler.batch_size
        self.drop_last = False
        self.skip = 0

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.sampler.batches()[self.skip :])

    def __len__(self) -> int:
        return self.sampler.num_batches


class ResumableDataLoader(DataLoader):
    """A DataLoader over a ShardBatchSampler that knows how far into the epoch it has served; Lightning saves its
    state_dict in every checkpoint (the loader is `Stateful`) and loads it before the resumed epoch starts.

    Batches are counted as they are handed to the training loop, not as workers prefetch them, so a checkpoint taken
    after a step records exactly the batches trained on.
    """

    def __init__(self, dataset: Dataset, batch_sampler: ShardBatchSampler, **kwargs: Any) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self._served = 0  # batches of the current epoch handed out, those skipped on resume included
        self._resume: dict[str, int] | None = None

    @property
    def shard(self) -> ShardSampler:
        return self.batch_sampler.sampler

    def state_dict(self) -> dict[str, int]:
        if self._resume is not None:  # loaded but not iterated yet: the position is still the loaded one
            return dict(self._resume)
        return {"epoch": self.shard.epoch, "examples": self.shard.examples_in_steps(self._served)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "examples": int(state["examples"])}
        self.shard.set_epoch(self._resume["epoch"])

    def __iter__(self) -> Iterator[Any]:
        return self._serve()

    def _serve(self) -> Iterator[Any]:
        # a generator: nothing runs until the first batch is asked for, after Lightning has set the epoch
        resume, self._resume = self._resume, None
        same_epoch = resume is not None and resume["epoch"] == self.shard.epoch
        self.batch_sampler.skip = self._served = self.shard.steps_in_examples(resume["examples"]) if same_epoch else 0
        for batch in super().__iter__():
            self._served += 1
            yield batch


def distributed_position() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def run_seed() -> int:
    """The run's seed, as lightning.seed_everything (train's cfg.seed) exported it to this and any child process."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def sharded_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    equal_steps: bool = False,
    seed: int | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    **loader_kwargs: Any,
) -> ResumableDataLoader:
    """A ResumableDataLoader for this process's shard of `dataset`: seed, rank and world size default to the run's
    (run_seed, distributed_position). The loader's own generator seeds worker processes, so creating an iterator
    draws nothing from the global torch RNG (a resumed run would otherwise draw differently from an unbroken one)."""
    own_rank, own_world = distributed_position()
    seed = run_seed() if seed is None else seed
    shard = ShardSampler(
        len(dataset),
        batch_size,
        shuffle=shuffle,
        seed=seed,
        rank=own_rank if rank is None else rank,
        world_size=own_world if world_size is None else world_size,
        equal_steps=equal_steps,
    )
    generator = torch.Generator().manual_seed(seed)
    return ResumableDataLoader(dataset, ShardBatchSampler(shard), generator=generator, **loader_kwargs)
