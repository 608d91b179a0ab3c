"""Multi-query associative recall (MQAR), the synthetic recall task of Zoology (HazyResearch/zoology,
`zoology/data/multiquery_ar.py::multiquery_ar`), restated with a numpy Generator and vectorised sampling.

An example of length seq_len is a context `k1 v1 k2 v2 ...` (repeated num_passes times) followed by a query region of
(seq_len - context) / 2 two-token slots. num_kv_pairs slots, drawn without replacement with probability
p_i ∝ a·i^(a−1) (so queries cluster near the context), each hold one key. Labels are next-token targets: -100
everywhere except at a query key, whose label is that key's value. Zoology builds a seq_len + 1 sequence and takes
inputs = seq[:-1], labels = labels[1:]; writing the two length-seq_len arrays directly gives the same layout. As in
Zoology the token after a query key is filler, not its value, and with random_non_queries every filler (0) becomes
a uniform token from [0, vocab_size).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from hgrn.data.columns import ColumnDataset
from hgrn.data.sampler import sharded_loader

IGNORE_INDEX = -100


def _validate(
    num_examples: int, vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float, num_passes: int
) -> None:
    if num_examples < 0:
        raise ValueError(f"num_examples must be non-negative, got {num_examples}")
    if seq_len <= 0 or seq_len % 2:
        raise ValueError(f"seq_len must be a positive even number, got {seq_len}")
    if vocab_size <= seq_len:
        raise ValueError(f"vocab_size must exceed seq_len={seq_len}, got {vocab_size}")
    if num_passes < 1:
        raise ValueError(f"num_passes must be at least 1, got {num_passes}")
    if num_kv_pairs < 1:
        raise ValueError(f"num_kv_pairs must be at least 1, got {num_kv_pairs}")
    needed = 2 * num_kv_pairs * num_passes + 2 * num_kv_pairs
    if needed > seq_len:
        raise ValueError(
            f"num_kv_pairs={num_kv_pairs} needs 2*num_kv_pairs*num_passes + 2*num_kv_pairs = {needed} tokens, "
            f"more than seq_len={seq_len}"
        )
    if not power_a > 0:
        raise ValueError(f"power_a must be positive, got {power_a}")


def _distinct_uniform(rng: np.random.Generator, low: int, high: int, rows: int, k: int) -> np.ndarray:
    """[rows, k] ordered samples without replacement from [low, high): column j is redrawn where it repeats an
    earlier column, which makes it uniform over the values not yet taken (exact, and O(rows·k²) instead of
    O(rows·(high - low)))."""
    out = np.empty((rows, k), dtype=np.int64)
    for j in range(k):
        column = rng.integers(low, high, size=rows)
        redraw = np.flatnonzero((out[:, :j] == column[:, None]).any(axis=1))
        while redraw.size:
            column[redraw] = rng.integers(low, high, size=redraw.size)
            redraw = redraw[(out[redraw, :j] == column[redraw, None]).any(axis=1)]
        out[:, j] = column
    return out


def _power_law_slots(rng: np.random.Generator, rows: int, space: int, k: int, power_a: float) -> np.ndarray:
    """[rows, k] distinct slot indices in [0, space) drawn without replacement with p_i ∝ a·i^(a−1), i = 1..space.

    Gumbel top-k: the k largest of log p_i + Gumbel noise are distributed as k successive weighted draws without
    replacement, which is what Zoology's np.random.choice(..., replace=False, p=p) does row by row.
    """
    i = np.arange(1, space + 1)
    log_p = np.log(power_a) + (power_a - 1) * np.log(i)
    scores = log_p + rng.gumbel(size=(rows, space))
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def multiquery_ar(
    num_examples: int,
    vocab_size: int = 8192,
    seq_len: int = 64,
    num_kv_pairs: int = 4,
    power_a: float = 0.01,
    num_passes: int = 1,
    random_non_queries: bool = True,
    seed: int | Sequence[int] = 0,
) -> tuple[Tensor, Tensor]:
    """MQAR examples: (inputs LongTensor[N, seq_len], labels LongTensor[N, seq_len] with -100 off the queries).

    Keys come from [1, vocab_size/2) and values from [vocab_size/2, vocab_size), distinct within an example. The
    same arguments and seed give the same tensors.
    """
    _validate(num_examples, vocab_size, seq_len, num_kv_pairs, power_a, num_passes)
    rng = np.random.default_rng(seed)
    context = 2 * num_kv_pairs * num_passes
    half = vocab_size // 2
    keys = _distinct_uniform(rng, 1, half, num_examples, num_kv_pairs)
    values = _distinct_uniform(rng, half, vocab_size, num_examples, num_kv_pairs)

    inputs = np.zeros((num_examples, seq_len), dtype=np.int64)
    pairs = np.stack([keys, values], axis=2).reshape(num_examples, 2 * num_kv_pairs)
    inputs[:, :context] = np.tile(pairs, (1, num_passes))
    slots = _power_law_slots(rng, num_examples, (seq_len - context) // 2, num_kv_pairs, power_a)
    query_positions = context + 2 * slots
    np.put_along_axis(inputs, query_positions, keys, axis=1)
    labels = np.full_like(inputs, IGNORE_INDEX)
    np.put_along_axis(labels, query_positions, values, axis=1)

    if random_non_queries:
        filler = inputs == 0  # keys start at 1 and values at vocab_size/2, so 0 marks exactly the unused slots
        inputs[filler] = rng.integers(0, vocab_size, size=int(filler.sum()))
    return torch.from_numpy(inputs), torch.from_numpy(labels)


def pair_lookup_accuracy(train_inputs: Tensor, inputs: Tensor, num_kv_pairs: int) -> float:
    """The query accuracy of a model that recalls nothing from the context and only remembers which (key, value)
    pairs occurred in the training set: for each key of an example it picks uniformly among the example's values
    that it remembers beside that key (any of its num_kv_pairs values when it remembers none).

    Why: Zoology's training set is a fixed 100k examples, so a model can raise its training accuracy by storing pairs
    instead of learning recall; this is how far that alone goes, on the training set and on held-out examples.
    inputs: LongTensor[N, seq_len] from `multiquery_ar` with num_passes=1 (every key of the context `k1 v1 k2 v2 ...`
    is queried once, so scoring the context's keys scores the queries).
    """
    width = 2 * num_kv_pairs
    vocab = int(max(train_inputs[:, :width].max(), inputs[:, :width].max())) + 1
    known = torch.unique(train_inputs[:, 0:width:2] * vocab + train_inputs[:, 1:width:2])
    keys, values = inputs[:, 0:width:2], inputs[:, 1:width:2]
    remembered = torch.isin(keys[:, :, None] * vocab + values[:, None, :], known)  # [N, key i, value j]
    count = remembered.sum(-1)
    right = remembered.diagonal(dim1=1, dim2=2)
    score = torch.where(count > 0, right / count.clamp(min=1), 1 / num_kv_pairs)
    return score.mean().item()


class MQARDataModule(L.LightningDataModule):
    """Zoology's MQAR setting: a training set and a held-out test set generated in setup() from independent seed
    streams of `seed`. Validation uses the test set, as Zoology does (it early-stops on test accuracy).

    shuffle: a new training order every epoch; Zoology serves its training batches in the same order every epoch
    (shuffle=False).
    fresh_train_data: a new training set every epoch (seed stream (seed, 2, epoch)) instead of Zoology's one fixed
    set, so no (key, value) pair recurs and remembering pairs earns nothing (`pair_lookup_accuracy`). setup() sets
    the trainer's reload_dataloaders_every_n_epochs to 1, so Lightning asks for the training loader at every epoch.
    """

    def __init__(
        self,
        vocab_size: int = 8192,
        seq_len: int = 64,
        num_kv_pairs: int = 4,
        train_examples: int = 100_000,
        test_examples: int = 3_000,
        batch_size: int = 512,
        power_a: float = 0.01,
        random_non_queries: bool = True,
        shuffle: bool = True,
        fresh_train_data: bool = False,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        _validate(max(train_examples, test_examples), vocab_size, seq_len, num_kv_pairs, power_a, 1)
        self.save_hyperparameters(logger=False)
        self.datasets: dict[str, ColumnDataset] = {}

    @property
    def vocab_size(self) -> int:
        return self.hparams.vocab_size

    def _generate(self, num_examples: int, stream: tuple[int, ...]) -> ColumnDataset:
        """Examples `{"inputs": LongTensor[T], "labels": LongTensor[T], "label_positions": LongTensor[num_kv_pairs]}`
        from the given seed stream; label_positions lists where the labels are, in order, so that a batch's scored
        features are read by index (a boolean index would read its count back from the device in every step)."""
        hp = self.hparams
        inputs, labels = multiquery_ar(
            num_examples,
            vocab_size=hp.vocab_size,
            seq_len=hp.seq_len,
            num_kv_pairs=hp.num_kv_pairs,
            power_a=hp.power_a,
            random_non_queries=hp.random_non_queries,
            seed=(hp.seed, *stream),
        )
        positions = (labels != IGNORE_INDEX).nonzero()[:, 1].view(num_examples, hp.num_kv_pairs)
        return ColumnDataset(inputs=inputs, labels=labels, label_positions=positions)

    def setup(self, stage: str | None = None) -> None:
        if self.hparams.fresh_train_data and self.trainer is not None:
            self.trainer.reload_dataloaders_every_n_epochs = 1  # read by the fit loop at every epoch start
        if "test" not in self.datasets:
            if not self.hparams.fresh_train_data:  # else train_dataloader() draws each epoch's set
                self.datasets["train"] = self._generate(self.hparams.train_examples, stream=(0,))
            self.datasets["test"] = self._generate(self.hparams.test_examples, stream=(1,))

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError("MQAR data is generated in setup(): call it before asking for a dataloader")
        return sharded_loader(  # this process's shard; exact over several processes, resumable mid-epoch
            self.datasets[split],
            self.hparams.batch_size,
            shuffle=shuffle,
            equal_steps=split == "train",
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.hparams.fresh_train_data:
            epoch = self.trainer.current_epoch if self.trainer else 0
            self.datasets["train"] = self._generate(self.hparams.train_examples, stream=(2, epoch))
        return self._loader("train", shuffle=self.hparams.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader("test")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
