"""Triton kernels behind the public ops, with the same signatures and argument checks as hgrn.ops.reference.

chunk.py: chunked GLA / HGRN2 forward and backward; hgrn1_scan.py: the HGRN1 scan; fused_recurrent.py: decoding
steps with the state updated in place. Tensors must live where Triton runs (CUDA, or the CPU interpreter in tests).
"""

from __future__ import annotations

from torch import Tensor

from hgrn.ops.checks import check_shape
from hgrn.ops.reference import check_gla_args, check_hgrn1_args, check_hgrn2_args
from hgrn.ops.triton import fused_recurrent, hgrn1_scan
from hgrn.ops.triton.chunk import GATE_GLA, GATE_HGRN2, GATE_HGRN2_LB, chunk_recurrence


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
    """S_t = diag(exp(log_f_t)) S_{t-1} + k_t^T v_t,  o_t = scale * q_t S_t (chunked kernels)."""
    check_gla_args(q, k, v, log_f, initial_state, cu_seqlens)
    return chunk_recurrence(q, k, log_f, None, v, gate=GATE_GLA, scale=scale, initial_state=initial_state,
                            output_final_state=output_final_state, reverse=reverse, cu_seqlens=cu_seqlens)  # fmt: skip


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
    """HGRN2 with the gate formed in the kernels: f = lb + (1 - lb) sigmoid(f_logits), k = 1 - f."""
    check_hgrn2_args(q, v, f_logits, lower_bound, initial_state, cu_seqlens)
    gate = GATE_HGRN2 if lower_bound is None else GATE_HGRN2_LB
    return chunk_recurrence(q, f_logits, None, lower_bound, v, gate=gate, scale=scale, initial_state=initial_state,
                            output_final_state=output_final_state, reverse=reverse, cu_seqlens=cu_seqlens)  # fmt: skip


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
    """HGRN1: h_t = exp(log_f_t) * exp(i theta) * h_{t-1} + x_t (scan kernels)."""
    check_hgrn1_args(x, log_f, theta, initial_state, cu_seqlens)
    return hgrn1_scan.scan(x, log_f, theta, initial_state=initial_state, output_final_state=output_final_state,
                      reverse=reverse, cu_seqlens=cu_seqlens)  # fmt: skip


def gla_step(
    q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, state: Tensor, *, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """One GLA decoding step; `state` is updated in place and returned."""
    check_shape("state", state, (*q.shape, v.shape[-1]), "[B, H, K, V]")
    return fused_recurrent.gla_step(q, k, v, log_f, state, None, gate=GATE_GLA, scale=scale)


def hgrn2_step(
    q: Tensor, v: Tensor, f_logits: Tensor, state: Tensor, lower_bound: Tensor | None = None, *, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """One HGRN2 decoding step; `state` is updated in place and returned."""
    check_shape("state", state, (*q.shape, v.shape[-1]), "[B, H, K, V]")
    gate = GATE_HGRN2 if lower_bound is None else GATE_HGRN2_LB
    return fused_recurrent.gla_step(q, f_logits, v, None, state, lower_bound, gate=gate, scale=scale)


def hgrn1_step(x: Tensor, log_f: Tensor, state: Tensor, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One HGRN1 decoding step; `state` is updated in place and returned."""
    check_shape("state", state, x.shape, "[B, D] real or [B, D, 2] complex")
    return fused_recurrent.hgrn1_step(x, log_f, state, theta)
