"""Step-by-step loops over time: the recurrences exactly as written, the ground truth of the tests (slow)."""

from __future__ import annotations

import torch
from torch import Tensor

from hgrn.ops.checks import accumulation_dtype
from hgrn.ops.gates import hgrn2_gate
from hgrn.ops.reference import (
    check_gla_args,
    check_hgrn1_args,
    check_hgrn2_args,
    gla_step,
    hgrn1_step,
    run_sequences,
)


def naive_gla(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_f: Tensor,
    *,
    scale: float = 1.0,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    check_gla_args(q, k, v, log_f, initial_state, cu_seqlens)

    def scan(q, k, v, log_f, h0):
        B, T, H, K = q.shape
        state = q.new_zeros(B, H, K, v.shape[-1], dtype=accumulation_dtype(q.dtype)) if h0 is None else h0
        outs = []
        for t in range(T):
            o, state = gla_step(q[:, t], k[:, t], v[:, t], log_f[:, t], state, scale=scale)
            outs.append(o)
        return _stack(outs, v, B, H), state

    return run_sequences(scan, (q, k, v, log_f), initial_state, output_final_state, reverse, cu_seqlens)


def naive_hgrn2(
    q: Tensor,
    v: Tensor,
    f_logits: Tensor,
    lower_bound: Tensor | None = None,
    **kwargs,
) -> tuple[Tensor, Tensor | None]:
    check_hgrn2_args(q, v, f_logits, lower_bound, kwargs.get("initial_state"), kwargs.get("cu_seqlens"))
    log_f, k = hgrn2_gate(f_logits, lower_bound)
    return naive_gla(q, k, v, log_f, **kwargs)


def naive_hgrn1(
    x: Tensor,
    log_f: Tensor,
    theta: Tensor | None = None,
    *,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    check_hgrn1_args(x, log_f, theta, initial_state, cu_seqlens)

    def scan(x, log_f, h0):
        state = x.new_zeros(x.shape[0], *x.shape[2:], dtype=accumulation_dtype(x.dtype)) if h0 is None else h0
        outs = []
        for t in range(x.shape[1]):
            h, state = hgrn1_step(x[:, t], log_f[:, t], state, theta)
            outs.append(h)
        return (torch.stack(outs, 1) if outs else x.new_zeros(x.shape)), state

    return run_sequences(scan, (x, log_f), initial_state, output_final_state, reverse, cu_seqlens)


def _stack(outs: list[Tensor], v: Tensor, B: int, H: int) -> Tensor:
    return torch.stack(outs, 1) if outs else v.new_zeros(B, 0, H, v.shape[-1])
