"""Batching of variable-length token sequences into the dict batches every task consumes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def pad_sequences(sequences: Sequence[Tensor], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Right-pad 1-D (or [T, C]) sequences to the longest; returns (padded [B, T, ...], mask [B, T])."""
    lengths = torch.tensor([len(s) for s in sequences])
    padded = torch.nn.utils.rnn.pad_sequence(list(sequences), batch_first=True, padding_value=pad_id)
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return padded, mask


def classification_collate(examples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """examples: dicts with 'inputs' (and optionally 'inputs2') sequences and a scalar 'labels'."""
    batch: dict[str, Tensor] = {}
    batch["inputs"], batch["mask"] = pad_sequences([e["inputs"] for e in examples])
    if "inputs2" in examples[0]:
        batch["inputs2"], batch["mask2"] = pad_sequences([e["inputs2"] for e in examples])
    batch["labels"] = torch.stack([torch.as_tensor(e["labels"]) for e in examples])
    return batch
