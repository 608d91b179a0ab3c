"""Recurrence operators: the only place that knows how they run (Triton on CUDA, the PyTorch reference elsewhere).

gla_recurrence(q, k, v, log_f, ...)              GLA:   S_t = diag(f_t) S_{t-1} + k_t^T v_t,  o_t = q_t S_t
hgrn2_recurrence(q, v, f_logits, lower_bound)    HGRN2: the same with f = lb + (1-lb) sigmoid(z), k = 1 - f
hgrn1_recurrence(x, log_f, theta=None, ...)      HGRN1: h_t = f_t e^{i theta} h_{t-1} + x_t, element-wise
gla_step / hgrn2_step / hgrn1_step               one decoding step on a carried state
"""

from hgrn.ops.gates import hgrn2_gate
from hgrn.ops.reference import (
    gla_recurrence,
    gla_step,
    hgrn1_recurrence,
    hgrn1_step,
    hgrn2_recurrence,
    hgrn2_step,
)

__all__ = [
    "gla_recurrence",
    "gla_step",
    "hgrn1_recurrence",
    "hgrn1_step",
    "hgrn2_gate",
    "hgrn2_recurrence",
    "hgrn2_step",
]
