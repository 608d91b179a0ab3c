"""MQAR: Zoology's layout (disjoint key/value ranges, one labelled query per pair, next-token labels), the power-law
query placement, argument checks, determinism and the datamodule's batches."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hgrn.data.mqar import IGNORE_INDEX, MQARDataModule, multiquery_ar, pair_lookup_accuracy

VOCAB, SEQ_LEN, KV = 8192, 64, 4


def check_example(inputs: torch.Tensor, labels: torch.Tensor, num_kv_pairs: int, num_passes: int = 1) -> None:
    """Every property of one example, recomputed from its context: the answer to each query is its context value."""
    context = 2 * num_kv_pairs * num_passes
    keys, values = inputs[0 : 2 * num_kv_pairs : 2], inputs[1 : 2 * num_kv_pairs : 2]
    assert torch.all((keys >= 1) & (keys < VOCAB // 2)) and torch.all((values >= VOCAB // 2) & (values < VOCAB))
    assert len(set(keys.tolist())) == len(set(values.tolist())) == num_kv_pairs
    assert torch.equal(inputs[:context], inputs[: 2 * num_kv_pairs].repeat(num_passes))
    answer = dict(zip(keys.tolist(), values.tolist(), strict=True))

    positions = torch.nonzero(labels != IGNORE_INDEX).flatten()
    assert len(positions) == num_kv_pairs
    assert torch.all(positions >= context) and torch.all((positions - context) % 2 == 0)
    queried = inputs[positions].tolist()
    assert sorted(queried) == sorted(answer)  # each key is asked exactly once
    assert labels[positions].tolist() == [answer[key] for key in queried]


def test_layout_and_labels() -> None:
    inputs, labels = multiquery_ar(300, vocab_size=VOCAB, seq_len=SEQ_LEN, num_kv_pairs=KV, random_non_queries=False)
    assert inputs.shape == labels.shape == (300, SEQ_LEN) and inputs.dtype == labels.dtype == torch.long
    for x, y in zip(inputs, labels, strict=True):
        check_example(x, y, KV)
    query_region = inputs[:, 2 * KV :]
    assert torch.all((query_region == 0) == (labels[:, 2 * KV :] == IGNORE_INDEX))  # only queries, else filler 0


def test_random_non_queries_only_replace_filler() -> None:
    plain, plain_labels = multiquery_ar(200, random_non_queries=False, seed=5)
    noisy, noisy_labels = multiquery_ar(200, random_non_queries=True, seed=5)
    assert torch.equal(plain_labels, noisy_labels)
    kept = plain != 0
    assert torch.equal(noisy[kept], plain[kept])
    filler = noisy[~kept]
    assert torch.all((filler >= 0) & (filler < VOCAB)) and filler.unique().numel() > 1000
    for x, y in zip(noisy, noisy_labels, strict=True):
        check_example(x, y, KV)


def test_passes_repeat_the_context() -> None:
    inputs, labels = multiquery_ar(100, seq_len=128, num_kv_pairs=8, num_passes=3)
    for x, y in zip(inputs, labels, strict=True):
        check_example(x, y, 8, num_passes=3)


def test_largest_valid_setting_fills_every_slot() -> None:
    inputs, labels = multiquery_ar(50, seq_len=SEQ_LEN, num_kv_pairs=16)  # 2*16 + 2*16 == 64
    assert torch.all(labels[:, 32::2] != IGNORE_INDEX)
    for x, y in zip(inputs, labels, strict=True):
        check_example(x, y, 16)


@pytest.mark.parametrize("power_a", [0.01, 1.0])
def test_query_slots_follow_the_power_law(power_a: float) -> None:
    n, space = 20_000, (SEQ_LEN - 2) // 2
    _, labels = multiquery_ar(n, seq_len=SEQ_LEN, num_kv_pairs=1, power_a=power_a, seed=1)
    slots = (torch.nonzero(labels != IGNORE_INDEX)[:, 1] - 2) // 2
    observed = np.bincount(slots.numpy(), minlength=space) / n
    i = np.arange(1, space + 1)
    expected = power_a * i ** (power_a - 1)
    expected /= expected.sum()
    tolerance = 5 * np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(observed - expected) < tolerance)


def test_several_queries_match_zoologys_sequential_draws() -> None:
    """k slots per example: the inclusion frequency of every slot agrees with np.random.choice(replace=False, p=p)
    row by row, the draw Zoology makes."""
    n, k, seq_len = 4_000, 16, 256
    space = (seq_len - 2 * k) // 2
    _, labels = multiquery_ar(n, seq_len=seq_len, num_kv_pairs=k, seed=2)
    ours = np.bincount(((torch.nonzero(labels != IGNORE_INDEX)[:, 1] - 2 * k) // 2).numpy(), minlength=space) / n
    i = np.arange(1, space + 1)
    p = 0.01 * i ** (0.01 - 1)
    p /= p.sum()
    rng = np.random.RandomState(0)
    zoology = np.bincount(np.concatenate([rng.choice(space, k, replace=False, p=p) for _ in range(n)]), minlength=space)
    zoology = zoology / n
    tolerance = 5 * np.sqrt(2 * zoology * (1 - zoology) / n) + 2 / n
    assert np.all(np.abs(ours - zoology) < tolerance)
    assert ours[0] > 0.9 and ours[:10].sum() > 3 * ours[-10:].sum()  # queries cluster near the context


INVALID = [
    ({"seq_len": 63}, "seq_len"),
    ({"vocab_size": 64}, "vocab_size"),
    ({"num_kv_pairs": 17}, "num_kv_pairs"),
    ({"num_kv_pairs": 0}, "num_kv_pairs"),
    ({"num_kv_pairs": 4, "num_passes": 8}, "num_kv_pairs"),
    ({"num_passes": 0}, "num_passes"),
    ({"power_a": 0.0}, "power_a"),
    ({"num_examples": -1}, "num_examples"),
]


@pytest.mark.parametrize(("overrides", "argument"), INVALID)
def test_invalid_arguments_name_the_argument(overrides: dict, argument: str) -> None:
    kwargs = {"num_examples": 4, "vocab_size": VOCAB, "seq_len": SEQ_LEN, "num_kv_pairs": KV} | overrides
    with pytest.raises(ValueError, match=argument):
        multiquery_ar(**kwargs)


def test_deterministic_per_seed() -> None:
    first = multiquery_ar(64, seed=3)
    second = multiquery_ar(64, seed=3)
    other = multiquery_ar(64, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], other[0])


def test_datamodule_batches() -> None:
    dm = MQARDataModule(train_examples=96, test_examples=40, batch_size=32, seq_len=128, num_kv_pairs=8, seed=1)
    assert dm.vocab_size == VOCAB
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"inputs", "labels", "label_positions"}
    labelled = (batch["labels"] != IGNORE_INDEX).nonzero()[:, 1].view(32, 8)
    assert torch.equal(batch["label_positions"], labelled)  # each row's labelled positions, in order
    assert batch["inputs"].shape == batch["labels"].shape == (32, 128)
    assert batch["inputs"].dtype == batch["labels"].dtype == torch.long
    assert torch.all((batch["labels"] != IGNORE_INDEX).sum(1) == 8)
    for x, y in zip(batch["inputs"], batch["labels"], strict=True):
        check_example(x, y, 8)

    train, test = dm.datasets["train"], dm.datasets["test"]
    assert (len(train), len(test)) == (96, 40)
    assert dm.val_dataloader().dataset is dm.test_dataloader().dataset is test
    assert not torch.equal(train.columns["inputs"][:40], test.columns["inputs"])  # held out: a different seed stream

    again = MQARDataModule(train_examples=96, test_examples=40, seq_len=128, num_kv_pairs=8, seed=1)
    again.setup()
    assert torch.equal(again.datasets["test"].columns["inputs"], test.columns["inputs"])


def test_datamodule_rejects_invalid_settings() -> None:
    with pytest.raises(ValueError, match="num_kv_pairs"):
        MQARDataModule(seq_len=64, num_kv_pairs=32)


def test_pair_lookup_accuracy_by_hand() -> None:
    # Two pairs per example, vocabulary 8 (keys 1-3, values 4-7). Training pairs: (1,4) (2,5) (1,5) (3,6).
    train = torch.tensor([[1, 4, 2, 5], [1, 5, 3, 6]])
    examples = torch.tensor([[1, 4, 2, 5], [3, 7, 2, 4]])
    # example 0: key 1 remembers values 4 and 5 -> 1/2; key 2 remembers 5 only -> 1.
    # example 1: key 3 remembers neither 7 nor 4 -> 1/2 (chance); key 2 remembers neither -> 1/2.
    assert pair_lookup_accuracy(train, examples, num_kv_pairs=2) == pytest.approx((0.5 + 1 + 0.5 + 0.5) / 4)


def test_pair_lookup_scores_the_training_set_only() -> None:
    """The shortcut a fixed training set offers: remembered pairs answer training queries, not held-out ones."""
    train, _ = multiquery_ar(4000, vocab_size=512, seq_len=64, num_kv_pairs=8, random_non_queries=False, seed=(0, 0))
    test, _ = multiquery_ar(500, vocab_size=512, seq_len=64, num_kv_pairs=8, random_non_queries=False, seed=(0, 1))
    assert pair_lookup_accuracy(train, train[:500], 8) > 0.2
    assert pair_lookup_accuracy(train, test, 8) == pytest.approx(1 / 8, abs=0.02)


def test_fresh_train_data_draws_a_new_training_set_each_epoch_that_lightning_asks_for() -> None:
    """With fresh_train_data the loader Lightning builds each epoch serves that epoch's own set (the same one again
    on resume), and the test set stays, also from a trainer built to load its data once (the datamodule asks for
    a reload every epoch)."""
    import lightning as L
    from torch import nn

    class FirstBatches(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(()))
            self.seen: list[tuple[int, torch.Tensor]] = []

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            if batch_idx == 0:
                self.seen.append((self.current_epoch, batch["inputs"].clone()))
            return self.weight * batch["inputs"].float().mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    def data() -> MQARDataModule:
        return MQARDataModule(
            seq_len=SEQ_LEN,
            num_kv_pairs=KV,
            train_examples=32,
            test_examples=8,
            batch_size=8,
            random_non_queries=False,
            shuffle=False,
            fresh_train_data=True,
        )

    def fit(datamodule: MQARDataModule) -> FirstBatches:
        module = FirstBatches()
        trainer = L.Trainer(
            max_epochs=3,
            limit_val_batches=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
        )
        trainer.fit(module, datamodule=datamodule)
        return module

    datamodule = data()
    seen = fit(datamodule).seen
    assert [epoch for epoch, _ in seen] == [0, 1, 2]
    firsts = [inputs for _, inputs in seen]
    assert not torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[1], firsts[2])
    again = data()
    again.setup()
    assert torch.equal(again.datasets["test"].columns["inputs"], datamodule.datasets["test"].columns["inputs"])
    again.trainer = SimpleNamespace(current_epoch=1)
    assert torch.equal(next(iter(again.train_dataloader()))["inputs"], firsts[1])  # resumed epoch 1: its own set
