"""Absolute position information added to the embedded inputs [B, T, d] of a sequence classifier.

LRA's `position` encoder (the s4 codebase the official HGRN runs train in) is fixed, not learned: the sinusoidal
table of "Attention Is All You Need", pe[t, 2i] = sin(t w_i) and pe[t, 2i + 1] = cos(t w_i) with
w_i = 10000^(-2i / d), added to the inputs and followed by Dropout(0.1), which therefore drops inputs even in a model
run with dropout 0. A learned table (no dropout) is the alternative most LRA baselines use.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

POSITION_ENCODINGS = ("sinusoidal", "learned")


def sinusoidal_table(length: int, dim: int) -> Tensor:
    """pe [length, dim] float32: sin in the even channels, cos in the odd ones, frequencies falling along the width."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : dim // 2]
    return table


class SinusoidalPositions(nn.Module):
    """x [B, T, d] -> Dropout(x + pe[:T]). The table is a function of (max_length, d), so it is not saved."""

    def __init__(self, d_model: int, max_length: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_length, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        check_length(x.shape[1], len(self.table))
        return self.dropout(x + self.table[: x.shape[1]].to(x.dtype))


class LearnedPositions(nn.Embedding):
    """x [B, T, d] -> x + E[:T] with a learned table E = weight [max_length, d], initialised as an embedding."""

    def __init__(self, d_model: int, max_length: int) -> None:
        super().__init__(max_length, d_model)

    def forward(self, x: Tensor) -> Tensor:
        check_length(x.shape[1], self.num_embeddings)
        return x + self.weight[: x.shape[1]]


def check_length(length: int, max_length: int) -> None:
    if length > max_length:
        raise ValueError(f"sequence length {length} exceeds max_length={max_length} of the position table")


def build_positions(kind: str, d_model: int, max_length: int, dropout: float) -> nn.Module:
    """'sinusoidal' (fixed, then Dropout(dropout)) or 'learned' (dropout unused)."""
    if kind == "sinusoidal":
        return SinusoidalPositions(d_model, max_length, dropout)
    if kind == "learned":
        return LearnedPositions(d_model, max_length)
    raise ValueError(f"position_encoding={kind!r} is not known; choose one of {POSITION_ENCODINGS}")
