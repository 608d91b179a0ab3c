"""The naive backend of hgrn.ops: step-by-step loops over time, the recurrences exactly as written (slow); the tests'
ground truth. `with hgrn.ops.use_backend("naive"):` runs the ops here. The decoding steps are the reference's."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hgrn.ops.checks import accumulation_dtype
from hgrn.ops.directions import hgrn2_by_directions
from hgrn.ops.reference import Result, gla_step, hgrn1_step, hgrn2_on, hgrn2_step, run_sequences


def gla_recurrence(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, scale: float, **sequences: Any) -> Result:
    def scan(q, k, v, log_f, h0):
        B, T, H, K = q.shape
        state = q.new_zeros(B, H, K, v.shape[-1], dtype=accumulation_dtype(q.dtype)) if h0 is None else h0
        outs = []
        for t in range(T):
            o, state = gla_step(q[:, t], k[:, t], v[:, t], log_f[:, t], state, scale)
            outs.append(o)
        return (torch.stack(outs, 1) if outs else v.new_zeros(B, 0, H, v.shape[-1])), state

    return run_sequences(scan, (q, k, v, log_f), **sequences)


hgrn2_recurrence = hgrn2_on(gla_recurrence)
hgrn2_directions = hgrn2_by_directions(hgrn2_recurrence)


def hgrn1_recurrence(x: Tensor, log_f: Tensor, theta: Tensor | None, **sequences: Any) -> Result:
    def scan(x, log_f, h0):
        state = x.new_zeros(x.shape[0], *x.shape[2:], dtype=accumulation_dtype(x.dtype)) if h0 is None else h0
        outs = []
        for t in range(x.shape[1]):
            h, state = hgrn1_step(x[:, t], log_f[:, t], state, theta)
            outs.append(h)
        return (torch.stack(outs, 1) if outs else x.new_zeros(x.shape)), state

    return run_sequences(scan, (x, log_f), **sequences)


__all__ = [
    "gla_recurrence",
    "gla_step",
    "hgrn1_recurrence",
    "hgrn1_step",
    "hgrn2_directions",
    "hgrn2_recurrence",
    "hgrn2_step",
]
