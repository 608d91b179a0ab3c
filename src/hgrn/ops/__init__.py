"""Recurrence operators, each declared once here; hgrn.ops.dispatch checks the arguments and picks the backend.

gla_recurrence(q, k, v, log_f, ...)              GLA:   S_t = diag(f_t) S_{t-1} + k_t^T v_t,  o_t = q_t S_t
hgrn2_recurrence(q, v, f_logits, lower_bound)    HGRN2: the same with f = lb + (1-lb) sigmoid(z), k = 1 - f
hgrn2_directions(q, v, f_logits, lower_bound)    HGRN2 both ways along the sequence or a grid's rows and columns
hgrn1_recurrence(x, log_f, theta=None, ...)      HGRN1: h_t = f_t e^{i theta} h_{t-1} + x_t, element-wise
gla_step / hgrn2_step / hgrn1_step               one decoding step on a carried state

Layouts are time-first: [B, T, H, K] (batch, time, head, channel), never head-first [B, H, T, K]. CUDA tensors in
fp32/fp16/bf16 run the Triton kernels (hgrn.ops.triton); everything else runs the PyTorch reference.
HGRN_OPS=reference in the environment sends everything to the reference (to compare, or to rule the kernels out);
`with use_backend("naive" | "reference" | "triton"):` forces a backend (tests). The Triton decoding steps update the
state in place (and return it); the reference returns a new state, and is also used when a step needs gradients.
"""

from __future__ import annotations

from torch import Tensor

from hgrn.ops import dispatch
from hgrn.ops.checks import (
    check_gla_args,
    check_gla_step_args,
    check_hgrn1_args,
    check_hgrn1_step_args,
    check_hgrn2_args,
    check_hgrn2_directions_args,
    check_hgrn2_step_args,
)
from hgrn.ops.dispatch import USE_KERNELS, load_kernels, start_compile_workers, use_backend
from hgrn.ops.gates import lower_bounded_gate


def gla_recurrence(
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
    """GLA: S_t = diag(exp(log_f_t)) S_{t-1} + k_t^T v_t,  o_t = scale * q_t S_t.

    q, k, log_f: [B, T, H, K] (log_f <= 0: the log forget gate); v: [B, T, H, V].
    initial_state: [N, H, K, V] or None (zeros). N = B, or the number of sequences packed along T when cu_seqlens
    [N + 1] (int offsets, FlashAttention convention) is given; then B = 1.
    reverse: run each sequence from its end to its start (the backward half of a bidirectional scan).
    Returns (o [B, T, H, V] in v's dtype, the final state [N, H, K, V] (fp32 for half inputs) or None).
    """
    arguments = dict(q=q, k=k, v=v, log_f=log_f, scale=scale, initial_state=initial_state,
                     output_final_state=output_final_state, reverse=reverse, cu_seqlens=cu_seqlens)  # fmt: skip
    return dispatch.run(gla_recurrence, arguments, check_gla_args)


def hgrn2_recurrence(
    q: Tensor,
    v: Tensor,
    f_logits: Tensor,
    lower_bound: Tensor | None = None,
    *,
    scale: float = 1.0,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """HGRN2: GLA with f = lb + (1 - lb) sigmoid(f_logits) and the tied key k = 1 - f (`lower_bounded_gate`).

    q, f_logits: [B, T, H, K]; v: [B, T, H, V]; lower_bound: [H, K] (a bound per forget channel) or None (0).
    initial_state, cu_seqlens, reverse and the result as `gla_recurrence`.
    """
    arguments = dict(q=q, v=v, f_logits=f_logits, lower_bound=lower_bound, scale=scale, initial_state=initial_state,
                     output_final_state=output_final_state, reverse=reverse, cu_seqlens=cu_seqlens)  # fmt: skip
    return dispatch.run(hgrn2_recurrence, arguments, check_hgrn2_args)


def hgrn2_directions(
    q: Tensor,
    v: Tensor,
    f_logits: Tensor,
    lower_bound: Tensor | None = None,
    *,
    scale: float = 1.0,
    direction: str = "bidirectional",
    grid: tuple[int, int] | None = None,
) -> Tensor:
    """HGRN2 scanned both ways along every line and summed, each scan from a zero state: along the sequence
    (direction 'bidirectional'), or along the rows and along the columns of the row-major token grid
    grid = (height, width), T = height * width ('2d'; the official Hgru2_2d_parallel; other directions ignore grid).

    q, v, f_logits, lower_bound as `hgrn2_recurrence`; returns o [B, T, H, V] in v's dtype. The small-head kernels
    walk each line both ways in one program and read the columns in place; elsewhere it is `hgrn2_recurrence` once
    per pass (hgrn.ops.directions).
    """
    arguments = dict(q=q, v=v, f_logits=f_logits, lower_bound=lower_bound, scale=scale, direction=direction, grid=grid)
    return dispatch.run(hgrn2_directions, arguments, check_hgrn2_directions_args)


def hgrn1_recurrence(
    x: Tensor,
    log_f: Tensor,
    theta: Tensor | None = None,
    *,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """HGRN1: h_t = exp(log_f_t) * exp(i theta) * h_{t-1} + x_t, element-wise; real when theta is None.

    log_f: [B, T, D]; x: [B, T, D] (real) or [B, T, D, 2] ((real, imag) pairs, when theta [D] is given).
    initial_state: [N, D] or [N, D, 2], N as in `gla_recurrence`; cu_seqlens and reverse as there too.
    Returns (h, shaped as x; the final state [N, D(, 2)] or None).
    """
    arguments = dict(x=x, log_f=log_f, theta=theta, initial_state=initial_state, output_final_state=output_final_state,
                     reverse=reverse, cu_seqlens=cu_seqlens)  # fmt: skip
    return dispatch.run(hgrn1_recurrence, arguments, check_hgrn1_args)


def gla_step(
    q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, state: Tensor, *, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """One GLA decoding step. q, k, log_f [B, H, K]; v [B, H, V]; state [B, H, K, V] -> (o [B, H, V], new state)."""
    arguments = dict(q=q, k=k, v=v, log_f=log_f, state=state, scale=scale)
    return dispatch.run(gla_step, arguments, check_gla_step_args, step=True)


def hgrn2_step(
    q: Tensor, v: Tensor, f_logits: Tensor, state: Tensor, lower_bound: Tensor | None = None, *, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """One HGRN2 decoding step. q, f_logits [B, H, K]; v [B, H, V]; state [B, H, K, V]; lower_bound [H, K] or None
    -> (o [B, H, V], new state)."""
    arguments = dict(q=q, v=v, f_logits=f_logits, state=state, lower_bound=lower_bound, scale=scale)
    return dispatch.run(hgrn2_step, arguments, check_hgrn2_step_args, step=True)


def hgrn1_step(x: Tensor, log_f: Tensor, state: Tensor, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One HGRN1 decoding step. log_f [B, D]; x and state [B, D] (real) or [B, D, 2] (complex, theta [D])
    -> (h, shaped as x; new state)."""
    arguments = dict(x=x, log_f=log_f, state=state, theta=theta)
    return dispatch.run(hgrn1_step, arguments, check_hgrn1_step_args, step=True)


__all__ = [
    "USE_KERNELS",
    "gla_recurrence",
    "gla_step",
    "hgrn1_recurrence",
    "hgrn1_step",
    "hgrn2_directions",
    "hgrn2_recurrence",
    "hgrn2_step",
    "load_kernels",
    "lower_bounded_gate",
    "start_compile_workers",
    "use_backend",
]
