"""The sampler every split is served through: each example exactly once per epoch over W ranks (no padding
repeats), the same global batches as one process, seeded by (seed, epoch), and resumable part-way through an epoch."""

from __future__ import annotations

import itertools

import pytest
import torch

from hgrn.data.mqar import MQARDataModule
from hgrn.data.sampler import ResumableDataLoader, ShardSampler, global_batch_sizes, sharded_loader

SIZES = [1, 2, 3, 7, 64, 97, 100]  # 97: prime, uneven for every world size and batch size here


def rank_batches(n: int, batch_size: int, world_size: int, **kwargs) -> list[list[list[int]]]:
    return [
        ShardSampler(n, batch_size, rank=rank, world_size=world_size, **kwargs).batches() for rank in range(world_size)
    ]


@pytest.mark.parametrize("shuffle", [True, False], ids=["train", "val/test"])
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 4, 5])
@pytest.mark.parametrize("n", SIZES)
def test_every_example_once_per_epoch_over_the_ranks(n, batch_size, world_size, shuffle):
    for epoch in range(2):
        shards = []
        for rank in range(world_size):
            sampler = ShardSampler(n, batch_size, shuffle=shuffle, seed=7, rank=rank, world_size=world_size)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
            assert len(sampler) == len(shards[-1])
            assert all(0 < len(batch) <= batch_size for batch in sampler.batches())
        served = sorted(itertools.chain.from_iterable(shards))
        assert served == list(range(n))  # none twice, none left out


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("n", [64, 97, 100, 101])
def test_ranks_step_together_where_the_split_allows(n, world_size):
    counts = {len(batches) for batches in rank_batches(n, 4, world_size, shuffle=True, equal_steps=True)}
    assert counts == {-(-n // (4 * world_size))}


def test_a_split_that_cannot_give_every_rank_a_batch_per_step_is_refused_for_training():
    with pytest.raises(ValueError, match="same number of steps"):
        ShardSampler(7, 1, shuffle=True, rank=0, world_size=2, equal_steps=True)
    assert [len(b) for b in rank_batches(7, 1, 2, shuffle=False)] == [4, 3]  # evaluation: uneven, still exact


def test_ranks_serve_the_global_batches_of_one_process():
    """W ranks of batch B: their batches of a step make up the batch of one process of batch B x W."""
    single = ShardSampler(96, 12, shuffle=True, seed=3).batches()
    for world_size in (2, 3):
        steps = zip(*rank_batches(96, 12 // world_size, world_size, shuffle=True, seed=3), strict=True)
        assert [sorted(itertools.chain(*step)) for step in steps] == [sorted(b) for b in single]


def test_the_order_comes_from_seed_and_epoch():
    def order(seed, epoch):
        sampler = ShardSampler(50, 8, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1) and order(1, 0) != order(2, 0)
    assert order(0, 1) != order(1, 0)  # (seed, epoch) streams, not seed + epoch
    assert list(ShardSampler(50, 8, shuffle=False)) == list(range(50))  # val/test keep the split's order


def test_global_batches_are_full_and_the_shortfall_comes_from_the_end():
    assert global_batch_sizes(64, 8, 2) == [16] * 4
    assert global_batch_sizes(70, 8, 2) == [16] * 4 + [6]
    assert global_batch_sizes(65, 8, 3) == [24, 24, 17]
    assert global_batch_sizes(49, 8, 3) == [24, 22, 3]  # a remainder of 1 < 3 ranks borrows from the batch before
    assert global_batch_sizes(0, 8, 2) == []


def loader(n: int, world_size: int = 1, rank: int = 0, batch_size: int = 4) -> ResumableDataLoader:
    data = [{"inputs": torch.tensor([i])} for i in range(n)]
    return sharded_loader(data, batch_size, shuffle=True, seed=5, rank=rank, world_size=world_size)


def ids(batches) -> list[list[int]]:
    return [batch["inputs"].flatten().tolist() for batch in batches]


@pytest.mark.parametrize("world_size", [1, 2])
def test_a_loader_resumed_mid_epoch_continues_at_the_next_batch(world_size):
    for rank in range(world_size):
        whole = loader(42, world_size, rank)
        whole.batch_sampler.sampler.set_epoch(3)
        expected = ids(whole)

        interrupted = loader(42, world_size, rank)
        interrupted.batch_sampler.sampler.set_epoch(3)
        served = ids(itertools.islice(iter(interrupted), 2))
        state = interrupted.state_dict()
        assert state == {"epoch": 3, "examples": 8 * world_size}  # over all ranks

        resumed = loader(42, world_size, rank)  # a new process: epoch 0 until the state says otherwise
        resumed.load_state_dict(state)
        assert resumed.state_dict() == state
        assert served + ids(resumed) == expected
        assert resumed.state_dict() == {"epoch": 3, "examples": 42}
        resumed.batch_sampler.sampler.set_epoch(4)
        assert len(ids(resumed)) == len(expected)  # the next epoch is whole again


def test_a_state_from_another_epoch_does_not_skip():
    resumed = loader(20)
    resumed.load_state_dict({"epoch": 1, "examples": 8})
    resumed.batch_sampler.sampler.set_epoch(2)  # the saved epoch had ended; Lightning moved on
    assert len(ids(resumed)) == 5


def test_the_mqar_loaders_shuffle_training_and_keep_evaluation_in_order():
    data = MQARDataModule(vocab_size=64, seq_len=32, num_kv_pairs=4, train_examples=40, test_examples=20, batch_size=8)
    data.setup()
    train, val = data.train_dataloader(), data.val_dataloader()
    assert isinstance(train, ResumableDataLoader) and isinstance(val, ResumableDataLoader)
    assert train.batch_sampler.sampler.shuffle and not val.batch_sampler.sampler.shuffle
    assert len(train) == 5 and [len(b) for b in val.batch_sampler] == [8, 8, 4]
    assert torch.equal(torch.cat([b["inputs"] for b in val]), data.datasets["test"].columns["inputs"])
