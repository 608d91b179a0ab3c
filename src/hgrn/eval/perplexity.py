"""Perplexity of a causal LM over a whole token stream, in the two protocols LM papers report.

Both score every token of the stream except the first (nothing predicts it) exactly once; they differ in the context
a token gets. The model reads windows of at most `block_size` tokens, as in training, and a window's logits at
position j predict its token j + 1 (fairseq's convention: B inputs predict B targets, so a target sees up to B tokens
of context; Hugging Face's stride recipe counts the target inside its B and scores B - 1 per window).

- blocks: consecutive, non-overlapping windows; a target sees the tokens of its block before it (1 to B of them).
  What the training loss measures, and the cheapest.
- sliding (stride S, 1 <= S <= B): windows start every S tokens; each scores only the targets the previous window
  did not reach (the first scores all B), so every target after the first window sees at least B - S + 1 tokens of
  context. The standard "stride" evaluation; stride = B is exactly the blocks protocol.

Layout: `tokens` is one 1-D sequence of ids [N] (an np.memmap of the token cache, a numpy array, a CPU tensor); only
the windows of one batch are read from it at a time, so a memmap is never loaded whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hgrn.eval.checkpoint import at_least_float32, inference_precision


@dataclass(frozen=True)
class Perplexity:
    """The summed NLL (natural log) of the scored tokens of a stream, and how they were scored."""

    protocol: str  # "blocks" | "sliding"
    block_size: int
    stride: int
    nll_sum: float
    tokens: int  # tokens scored: the stream's length - 1

    @property
    def ppl(self) -> float:
        return math.exp(self.nll_sum / self.tokens)

    @property
    def name(self) -> str:
        """blocks_<block_size> or sliding_<stride>, as metric keys name it (ppl/test/sliding_256)."""
        return f"blocks_{self.block_size}" if self.protocol == "blocks" else f"sliding_{self.stride}"


@dataclass(frozen=True)
class Window:
    """The model reads tokens[input_start : target_end - 1] and is scored on tokens[target_start : target_end]."""

    input_start: int
    target_start: int
    target_end: int


def windows(n_tokens: int, block_size: int, stride: int) -> list[Window]:
    """Windows of at most block_size inputs starting every `stride` tokens, each scoring the targets not yet
    scored, until the stream's last token is."""
    result, start, scored_until = [], 0, 1
    while scored_until < n_tokens:
        end = min(start + block_size, n_tokens - 1)  # inputs tokens[start:end] predict tokens[start + 1 : end + 1]
        result.append(Window(start, scored_until, end + 1))
        scored_until, start = end + 1, start + stride
    return result


@torch.inference_mode()
def perplexity(
    model: nn.Module, tokens: Any, block_size: int, stride: int | None = None, batch_size: int = 8
) -> Perplexity:
    """Perplexity of `model` (ids [B, T] -> logits [B, T, V], in eval mode) over the stream `tokens` [N]:
    the blocks protocol, or the sliding one when `stride` is given."""
    n_tokens = len(tokens)
    stride = block_size if stride is None else stride
    if n_tokens < 2:
        raise ValueError(f"the token stream has {n_tokens} tokens; perplexity needs at least 2")
    if block_size < 1 or not 1 <= stride <= block_size or batch_size < 1:
        raise ValueError(
            f"block_size={block_size}, stride={stride}, batch_size={batch_size}: need 1 <= stride <= block_size "
            f"and batch_size >= 1"
        )
    if model.training:
        raise ValueError("the model is in training mode (dropout on); call model.eval() first")
    device = next(model.parameters()).device
    plan = windows(n_tokens, block_size, stride)
    nll_sum, scored = 0.0, 0
    for i in range(0, len(plan), batch_size):
        batch_nll, batch_tokens = _score(model, tokens, plan[i : i + batch_size], device)
        nll_sum, scored = nll_sum + batch_nll, scored + batch_tokens
    protocol = "blocks" if stride == block_size else "sliding"
    return Perplexity(protocol, block_size, stride, nll_sum, scored)


def _score(model: nn.Module, tokens: Any, batch: list[Window], device: torch.device) -> tuple[float, int]:
    """Summed NLL and count of the scored targets of a batch of windows, right-padded to the longest (padding
    comes after every scored position, so a causal model never sees it)."""
    length = max(w.target_end - w.input_start for w in batch)  # inputs and targets: one longer than the input
    ids = torch.zeros(len(batch), length, dtype=torch.long)
    scored = torch.zeros(len(batch), length - 1, dtype=torch.bool)  # over target positions = input positions
    for row, w in enumerate(batch):
        ids[row, : w.target_end - w.input_start] = _read(tokens, w.input_start, w.target_end)
        scored[row, w.target_start - 1 - w.input_start : w.target_end - 1 - w.input_start] = True
    ids, scored = ids.to(device), scored.to(device)
    with inference_precision(device):
        logits = model(ids[:, :-1])
    nll = F.cross_entropy(at_least_float32(logits[scored]), ids[:, 1:][scored], reduction="none")
    return float(nll.double().sum()), int(scored.sum())


def _read(tokens: Any, start: int, end: int) -> Tensor:
    return torch.from_numpy(np.asarray(tokens[start:end]).astype(np.int64))
