"""The dataset behind most tasks: examples gathered by index from named columns of equal length.

A column is anything indexable with a length: a tensor whose rows are examples, or a view that decodes a row on read
(e.g. hgrn.data.lra.tokens.PackedSequences), so every task stores its split compactly and serves the dict examples
that hgrn.data.collate batches, without a Dataset class of its own.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch.utils.data import Dataset


class Column(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class ColumnDataset(Dataset):
    """Example i is `{name: column[i]}` over the columns given as keyword arguments (e.g. inputs=..., labels=...)."""

    def __init__(self, **columns: Column) -> None:
        lengths = {name: len(column) for name, column in columns.items()}
        if not lengths or len(set(lengths.values())) != 1:
            raise ValueError(f"columns must be given and of one length, got {lengths}")
        self.columns = columns
        self._length = next(iter(lengths.values()))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {name: column[index] for name, column in self.columns.items()}
