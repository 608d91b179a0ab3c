"""Loader plumbing shared by the LRA tasks: a task reads its three splits, this class serves them in batches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, random_split

from hgrn.data.collate import classification_collate
from hgrn.data.lra.tokens import BYTE_VOCAB_SIZE
from hgrn.data.sampler import sharded_loader

MAKE_TARGET = "data-lra"
SPLIT_SEED = 42  # s4's seed for the splits LRA leaves to the loader (CIFAR-10 validation, Pathfinder)


def held_out_split(n: int, fractions: Sequence[float], seed: int = SPLIT_SEED) -> list[list[int]]:
    """Index lists [rest, held-out...] with int(f * n) examples per held-out fraction, drawn as s4 draws them
    (torch.utils.data.random_split with a seeded generator), so the same n and seed give the same split."""
    held_out = [int(f * n) for f in fractions]
    lengths = [n - sum(held_out), *held_out]
    parts = random_split(range(n), lengths, generator=torch.Generator().manual_seed(seed))
    return [list(part.indices) for part in parts]


class LRADataModule(L.LightningDataModule):
    """Subclasses implement `read_splits` (train / val / test datasets of dict examples) and `max_length`, and set
    the model-facing class attributes that describe their inputs.

    `prepare_data` reads the splits once on the first process of each node so that decode-once caches are built
    there; the other processes find them in `setup`. Caches live in `cache_dir` (default `<data_dir>/cache`), which
    may point elsewhere when the data directory is read-only.
    """

    num_classes: int
    vocab_size: int | None = None  # token-id inputs [B, T] embed this many ids; None when inputs are values ...
    input_dim: int | None = None  # ... [B, T, input_dim]

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.data_dir / "cache"
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.splits: dict[str, Dataset] = {}

    def read_splits(self) -> dict[str, Dataset]:
        raise NotImplementedError

    @property
    def max_length(self) -> int:
        raise NotImplementedError

    def prepare_data(self) -> None:
        self.read_splits()

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.read_splits()

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.splits:
            raise RuntimeError(f"call setup() before asking {type(self).__name__} for the {split} loader")
        return sharded_loader(  # this process's shard; exact over several processes, resumable mid-epoch
            self.splits[split],
            self.batch_size,
            shuffle=shuffle,
            equal_steps=split == "train",
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=classification_collate,
            persistent_workers=self.num_workers > 0,
        )


class SequenceDataModule(LRADataModule):
    """Token sequences cut to `max_length` (ListOps, Text, Retrieval). A task states its usual length as the class
    attribute `default_max_length`, which `max_length=None` selects, so tasks need no constructor of their own."""

    default_max_length: int

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 32,
        max_length: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, pin_memory, cache_dir)
        self._max_length = self.default_max_length if max_length is None else max_length

    @property
    def max_length(self) -> int:
        """Per sequence (per document for two-document tasks), <eos> included."""
        return self._max_length


class ByteDataModule(SequenceDataModule):
    """Byte-level documents (Text, Retrieval): ids from hgrn.data.lra.tokens."""

    vocab_size = BYTE_VOCAB_SIZE
