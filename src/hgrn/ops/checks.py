"""Argument checks shared by every implementation of an op: one error message, whichever backend runs."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor


def check_shape(name: str, tensor: Tensor | None, expected: Sequence[int], meaning: str) -> None:
    """Raise ValueError naming `name`, its shape and the expected one, unless the shapes agree."""
    if tensor is not None and tuple(tensor.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected {tuple(expected)} ({meaning})")


def check_rank(name: str, tensor: Tensor, rank: int, layout: str) -> None:
    if tensor.dim() != rank:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected {rank} dimensions {layout}")


def check_cu_seqlens(cu_seqlens: Tensor | None, batch: int, length: int) -> int:
    """Validate packed-sequence offsets (FlashAttention convention) and return the number of sequences."""
    if cu_seqlens is None:
        return batch
    if batch != 1:
        raise ValueError(f"with cu_seqlens the batch size must be 1 (sequences packed along T); got batch={batch}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens must be a 1-D int32/int64 tensor [N+1] of offsets; got {cu_seqlens!r}")
    offsets = cu_seqlens.tolist()
    if offsets[0] != 0 or offsets[-1] != length or any(b < a for a, b in itertools.pairwise(offsets)):
        raise ValueError(f"cu_seqlens={offsets} must start at 0, end at T={length} and never decrease")
    return len(offsets) - 1


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """States and sums are kept in fp32 for half-precision inputs, else in the input precision (fp64 for tests)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
