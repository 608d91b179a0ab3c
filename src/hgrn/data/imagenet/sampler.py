"""DeiT's training order on the project's rank-aware sampler: repeated augmentation under DDP, and full batches only.

DeiT trains with timm's RepeatAugSampler (`RASampler`) when distributed: each epoch draws a permutation, repeats every
index `repeats` times in a row ([a, a, a, b, b, b, ...]), gives position j of that stream to rank j % world_size (so
the copies of an image go to different GPUs, each augmented on its own), and keeps about len(dataset) indices in all,
so an epoch shows each rank a third of the images three times over. Its loader drops the last incomplete batch
(Mixup's batch mode needs an even batch). On one process DeiT samples plainly.

timm's class does not fit the project's loaders as it is: it seeds by the epoch alone (every seed trains in the same
order), and Lightning's ResumableDataLoader counts served batches through a ShardSampler (hgrn.data.sampler) to resume
mid-epoch (`use_distributed_sampler: false`, so Lightning wraps nothing). RepeatedAugmentationSampler is therefore a
ShardSampler whose epoch order is timm's stream from the (seed, epoch) permutation, laid out so that each rank's
contiguous part of a global batch is exactly what RepeatAugSampler would give that rank: rank r's indices over an
epoch are stream[r::world_size]. With repeats=1 it is a shuffled ShardSampler that drops the last partial batch.
"""

from __future__ import annotations

import numpy as np

from hgrn.data.sampler import ShardSampler, epoch_order


class RepeatedAugmentationSampler(ShardSampler):
    """Training order of `num_examples` images: the (seed, epoch) permutation with each index repeated `repeats`
    times, cut to whole global batches of batch_size x world_size (the last incomplete one dropped). An epoch serves
    floor(num_examples / (batch_size x world_size)) steps whatever `repeats` is, as timm's sampler keeps the epoch
    length; with repeats r it covers about 1/r of the images."""

    def __init__(
        self, num_examples: int, batch_size: int, *, repeats: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if repeats < 1:
            raise ValueError(f"repeats={repeats} must be >= 1 (1: no repeated augmentation)")
        per_step = batch_size * world_size
        served = num_examples // per_step * per_step
        if served == 0:
            raise ValueError(
                f"{num_examples} training images do not fill one batch of {batch_size} x {world_size} processes; "
                "lower data.batch_size"
            )
        self.source_examples, self.repeats = num_examples, repeats
        super().__init__(served, batch_size, shuffle=True, seed=seed, rank=rank, world_size=world_size)

    def stream(self) -> np.ndarray:
        """timm's global stream for this epoch: the permutation, each index `repeats` times in a row, cut."""
        order = epoch_order(self.source_examples, True, self.seed, self.epoch)
        return np.repeat(order, self.repeats)[: self.num_examples]

    def batches(self) -> list[list[int]]:
        """This rank's batches: global batch g holds stream positions [g B W, (g + 1) B W), and its rank-r slice
        (positions r B .. r B + B - 1) is stream[(g B + i) W + r] for i < B, RepeatAugSampler's j % W assignment."""
        steps, world = len(self.sizes), self.world_size
        laid_out = self.stream().reshape(steps, self.batch_size, world).transpose(0, 2, 1)  # [step, rank, i]
        return laid_out[:, self.rank].tolist()
