"""Fixed-length blocks over a split's continuous token stream, as fairseq's `--sample-break-mode none` cuts it.

Block i of length L reads inputs = stream[i*L : (i+1)*L] and labels = stream[i*L+1 : (i+1)*L+1], so consecutive
blocks share no prediction and leave none out: every token after the first is a label exactly once. Blocks cross
line and document boundaries (the EOT between them is an ordinary token). The last block is usually partial: it is
kept for evaluation, padded with EOT inputs and -100 labels (ignored by the loss), and may be dropped for training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from hgrn.data.lm.encode import TOKEN_DTYPE

IGNORE_INDEX = -100


class TokenBlocks(Dataset):
    """Block i as {"inputs": int64 [L], "labels": int64 [L]} from the first `num_tokens` tokens of a token file.

    The file is memory-mapped on first use in each process (a worker maps its own; a pickled dataset carries the
    path, not the tokens).
    """

    def __init__(self, path: Path, num_tokens: int, block_size: int, *, keep_partial: bool, pad_id: int) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.path, self.num_tokens, self.block_size, self.pad_id = path, num_tokens, block_size, pad_id
        targets = max(num_tokens - 1, 0)
        self.num_blocks = -(-targets // block_size) if keep_partial else targets // block_size
        self._tokens: np.ndarray | None = None

    @property
    def tokens(self) -> np.ndarray:
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=TOKEN_DTYPE, mode="r", shape=(self.num_tokens,))
        return self._tokens

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < self.num_blocks:
            raise IndexError(f"block {index} of {self.num_blocks}")
        start = index * self.block_size
        chunk = torch.from_numpy(self.tokens[start : start + self.block_size + 1].astype(np.int64))
        inputs = torch.full((self.block_size,), self.pad_id, dtype=torch.int64)
        labels = torch.full((self.block_size,), IGNORE_INDEX, dtype=torch.int64)
        inputs[: len(chunk) - 1] = chunk[:-1]
        labels[: len(chunk) - 1] = chunk[1:]
        return {"inputs": inputs, "labels": labels}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokens": None}
