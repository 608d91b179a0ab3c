"""Small heads: the K x V state of each head as K * V element-wise channels, run through the HGRN1 scan.

For head sizes below the tensor cores' 16-wide tiles the chunked kernels pad K and V to 16 and spend (16 / K)^2 of
their work on zeros: expand ratio 1 ran 86x slower than the HGRN1 scan, which does the same element-wise work. Here
S_t[k, v] = f_t[k] S_{t-1}[k, v] + k_t[k] v_t[v] is an element-wise linear recurrence over the H * K * V channels
(x_t[h, k, v] = k_t[h, k] v_t[h, v], log f broadcast over v), run by the HGRN1 chained scan (hgrn1_scan.py, which
owns the backward, the packed sequences, the reverse scan and the states), and o_t[h, v] = scale sum_k q_t[h, k]
S_t[h, k, v] is reduced afterwards. The forming and the reduction are PyTorch element-wise ops, so the channels'
inputs and states pass through memory in fp32: about 3 x 4 x K bytes per model channel per token each way, which
undercuts the padded tiles while K <= SMALL_HEAD_MAX (measured: results/bench/expand-ratio-*). At ratio 1 the scan
is exactly the HGRN1 scan.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hgrn.ops.gates import lower_bounded_gate
from hgrn.ops.triton import hgrn1_scan

SMALL_HEAD_MAX = 2  # the largest K (and V) taken here; from 4 the chunked kernels are faster (results/bench/)


def fits(k: Tensor, v: Tensor) -> bool:
    """Whether heads of these sizes (k [.., K], v [.., V]) take the small-head path."""
    return k.shape[-1] <= SMALL_HEAD_MAX and v.shape[-1] <= SMALL_HEAD_MAX


def recurrence(
    q: Tensor,
    k: Tensor,
    log_f: Tensor,
    v: Tensor,
    *,
    scale: float,
    initial_state: Tensor | None,
    output_final_state: bool,
    reverse: bool,
    cu_seqlens: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """GLA on small heads: q, k, log_f [B, T, H, K]; v [B, T, H, V]; initial_state [N, H, K, V] or None.
    Returns (o [B, T, H, V] in v's dtype, the final state [N, H, K, V] in fp32 or None)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    x = k.float()[..., :, None] * v.float()[..., None, :]  # [B, T, H, K, V]
    channel_log_f = log_f.float()[..., :, None].expand(B, T, H, K, V)
    h0 = None if initial_state is None else initial_state.float().reshape(initial_state.shape[0], H * K * V)
    states, final = hgrn1_scan.scan(
        x.reshape(B, T, H * K * V),
        channel_log_f.reshape(B, T, H * K * V),
        None,
        initial_state=h0,
        output_final_state=output_final_state,
        reverse=reverse,
        cu_seqlens=cu_seqlens,
    )
    # a broadcast product and sum, not einsum: that becomes a batched matmul of B*T*H tiny matrices, 10x slower
    o = (q.float()[..., :, None] * states.view(B, T, H, K, V)).sum(-2) * scale
    return o.to(v.dtype), None if final is None else final.view(-1, H, K, V)


class LowerBoundedGate(torch.autograd.Function):
    """(log f, k) of `lower_bounded_gate` in fp32, with the gradient formed from sigmoid(z) and sigmoid(-z) kept
    apart, as the chunked kernels do: autograd's sigmoid backward forms y (1 - y), which is 0 in fp32 once y rounds to
    1 (|z| > ~17), and so drops the gate gradient of every nearly closed or open gate.

    z [..., H, K] (any float dtype); lower_bound [H, K] or None. d log f / dz = (1 - lb) s ns / f, dk / dz =
    -(1 - lb) s ns, d log f / dlb = ns / f, dk / dlb = -ns, with s = sigmoid(z), ns = sigmoid(-z); the ratios to f
    are taken in log space so that none overflows where the true gradient is finite."""

    @staticmethod
    def forward(ctx, z: Tensor, lower_bound: Tensor | None) -> tuple[Tensor, Tensor]:
        z_dtype = z.dtype
        z = z.float()
        lb = None if lower_bound is None else lower_bound.float()
        log_f, k = lower_bounded_gate(z, lb)
        ctx.save_for_backward(z, lb, log_f)
        ctx.dtypes = (z_dtype, None if lower_bound is None else lower_bound.dtype)
        return log_f, k

    @staticmethod
    def backward(ctx, dlog_f: Tensor, dk: Tensor) -> tuple[Tensor, Tensor | None]:
        z, lb, log_f = ctx.saved_tensors
        log_s, log_ns = torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z)
        log_keep = torch.zeros_like(z) if lb is None else torch.log1p(-lb).expand_as(z)  # log (1 - lb)
        dz = dlog_f * torch.exp(log_keep + log_s + log_ns - log_f) - dk * torch.exp(log_keep + log_s + log_ns)
        dlb = None
        if lb is not None and ctx.needs_input_grad[1]:
            per_element = dlog_f * torch.exp(log_ns - log_f) - dk * torch.exp(log_ns)
            dlb = per_element.reshape(-1, *lb.shape).sum(0).to(ctx.dtypes[1])
        return dz.to(ctx.dtypes[0]), dlb
