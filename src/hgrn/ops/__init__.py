"""Recurrence operators: the only place that knows how they run (Triton on CUDA, the PyTorch reference elsewhere).

gla_recurrence(q, k, v, log_f, ...)              GLA:   S_t = diag(f_t) S_{t-1} + k_t^T v_t,  o_t = q_t S_t
hgrn2_recurrence(q, v, f_logits, lower_bound)    HGRN2: the same with f = lb + (1-lb) sigmoid(z), k = 1 - f
hgrn1_recurrence(x, log_f, theta=None, ...)      HGRN1: h_t = f_t e^{i theta} h_{t-1} + x_t, element-wise
gla_step / hgrn2_step / hgrn1_step               one decoding step on a carried state

CUDA tensors in fp32/fp16/bf16 run the Triton kernels (hgrn.ops.triton); everything else runs the reference.
HGRN_OPS=reference in the environment sends everything to the reference (to compare, or to rule the kernels out).
The Triton decoding steps update the state in place (and return it); the reference returns a new state, and is also
used when a step needs gradients.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

from hgrn.ops import reference
from hgrn.ops.gates import hgrn2_gate

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
HAS_TRITON = importlib.util.find_spec("triton") is not None
OPS_BACKENDS = ("auto", "reference")
if os.environ.get("HGRN_OPS", "auto") not in OPS_BACKENDS:
    raise ValueError(f"HGRN_OPS={os.environ['HGRN_OPS']!r} is not known; choose one of {OPS_BACKENDS}")
USE_KERNELS = HAS_TRITON and os.environ.get("HGRN_OPS", "auto") == "auto"


def _kernels(*tensors: Tensor | None, step: bool = False):
    """The Triton module if these tensors can run there, else None."""
    present = [t for t in tensors if t is not None]
    if not USE_KERNELS or not all(t.is_cuda for t in present) or present[0].dtype not in KERNEL_DTYPES:
        return None
    if not step and present[0].shape[1] == 0:  # no time steps: nothing for a kernel to do
        return None
    if step and torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return None
    from hgrn.ops import triton as kernels

    return kernels


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
    """S_t = diag(exp(log_f_t)) S_{t-1} + k_t^T v_t,  o_t = scale * q_t S_t.  Returns (o, final state or None)."""
    impl = _kernels(q, k, v, log_f, initial_state) or reference
    return impl.gla_recurrence(
        q,
        k,
        v,
        log_f,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        reverse=reverse,
        cu_seqlens=cu_seqlens,
    )


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
    """HGRN2: GLA with f = lb + (1 - lb) sigmoid(f_logits) and the tied key k = 1 - f; lower_bound [H, K] or None."""
    impl = _kernels(q, v, f_logits, lower_bound, initial_state) or reference
    return impl.hgrn2_recurrence(
        q,
        v,
        f_logits,
        lower_bound,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        reverse=reverse,
        cu_seqlens=cu_seqlens,
    )


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
    """HGRN1: h_t = exp(log_f_t) * exp(i theta) * h_{t-1} + x_t, element-wise; real when theta is None."""
    impl = _kernels(x, log_f, theta, initial_state) or reference
    return impl.hgrn1_recurrence(
        x,
        log_f,
        theta,
        initial_state=initial_state,
        output_final_state=output_final_state,
        reverse=reverse,
        cu_seqlens=cu_seqlens,
    )


def gla_step(
    q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, state: Tensor, *, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """One decoding step. q, k, log_f [B, H, K]; v [B, H, V]; state [B, H, K, V] -> (o [B, H, V], new state)."""
    impl = _kernels(q, k, v, log_f, state, step=True) or reference
    return impl.gla_step(q, k, v, log_f, state, scale=scale)


def hgrn2_step(
    q: Tensor, v: Tensor, f_logits: Tensor, state: Tensor, lower_bound: Tensor | None = None, *, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """One HGRN2 decoding step; shapes as `gla_step`, lower_bound [H, K] or None."""
    impl = _kernels(q, v, f_logits, state, lower_bound, step=True) or reference
    return impl.hgrn2_step(q, v, f_logits, state, lower_bound, scale=scale)


def hgrn1_step(x: Tensor, log_f: Tensor, state: Tensor, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One HGRN1 decoding step. log_f [B, D]; x and state [B, D] (real) or [B, D, 2] (complex)."""
    impl = _kernels(x, log_f, state, theta, step=True) or reference
    return impl.hgrn1_step(x, log_f, state, theta)


__all__ = [
    "gla_recurrence",
    "gla_step",
    "hgrn1_recurrence",
    "hgrn1_step",
    "hgrn2_gate",
    "hgrn2_recurrence",
    "hgrn2_step",
]
