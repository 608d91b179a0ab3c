"""The PyTorch reference backend of hgrn.ops: the chunked parallel form of each recurrence (used off-GPU) and the
single-step form (used for decoding). Works on any device and in float64.

Each function is called by hgrn.ops.dispatch with the op's arguments, by name, already checked: the layouts and
meanings are in the op docstrings in hgrn.ops. `with hgrn.ops.use_backend("reference"):` runs the ops here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from hgrn.ops.checks import accumulation_dtype
from hgrn.ops.directions import hgrn2_by_directions
from hgrn.ops.gates import lower_bounded_gate

CHUNK_SIZE = 16
FACTORISED_DECAY_LIMIT = 60.0  # e^60 and e^-60 are well inside float32's range
Scan = Callable[..., tuple[Tensor, Tensor]]
Result = tuple[Tensor, Tensor | None]


def gla_recurrence(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, scale: float, **sequences: Any) -> Result:
    def scan(q, k, v, log_f, h0):
        return gla_chunked(q, k, v, log_f, h0, scale=scale)

    return run_sequences(scan, (q, k, v, log_f), **sequences)


def hgrn2_on(gla: Callable[..., Result]) -> Callable[..., Result]:
    """HGRN2 on a GLA implementation: log f and k = 1 - f formed in PyTorch (`lower_bounded_gate`), then `gla`."""

    def hgrn2_recurrence(q: Tensor, v: Tensor, f_logits: Tensor, lower_bound: Tensor | None, **options: Any) -> Result:
        log_f, k = lower_bounded_gate(f_logits, lower_bound)
        return gla(q, k, v, log_f, **options)

    return hgrn2_recurrence


hgrn2_recurrence = hgrn2_on(gla_recurrence)
hgrn2_directions = hgrn2_by_directions(hgrn2_recurrence)


def hgrn1_recurrence(x: Tensor, log_f: Tensor, theta: Tensor | None, **sequences: Any) -> Result:
    def scan(x, log_f, h0):
        return hgrn1_chunked(x, log_f, h0, theta=theta)

    return run_sequences(scan, (x, log_f), **sequences)


def gla_step(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, state: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    acc = state.dtype
    state = log_f.to(acc).exp()[..., None] * state + k.to(acc)[..., None] * v.to(acc)[..., None, :]
    o = scale * torch.einsum("bhk,bhkv->bhv", q.to(acc), state)
    return o.to(v.dtype), state


def hgrn2_step(
    q: Tensor, v: Tensor, f_logits: Tensor, state: Tensor, lower_bound: Tensor | None, scale: float
) -> tuple[Tensor, Tensor]:
    log_f, k = lower_bounded_gate(f_logits, lower_bound)
    return gla_step(q, k, v, log_f, state, scale)


def hgrn1_step(x: Tensor, log_f: Tensor, state: Tensor, theta: Tensor | None) -> tuple[Tensor, Tensor]:
    acc = state.dtype
    f = log_f.to(acc).exp()
    x = x.to(acc)
    if theta is None:
        state = f * state + x
    else:
        a_re, a_im = f * theta.to(acc).cos(), f * theta.to(acc).sin()
        s_re, s_im = state.unbind(-1)
        state = torch.stack((a_re * s_re - a_im * s_im + x[..., 0], a_re * s_im + a_im * s_re + x[..., 1]), -1)
    return state.to(log_f.dtype), state


# --- the chunked forms (one sequence direction, batch-parallel) -------------------------------------------------


def gla_chunked(
    q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, h0: Tensor | None, *, scale: float, chunk_size: int = CHUNK_SIZE
) -> tuple[Tensor, Tensor]:
    """Chunkwise-parallel GLA: exact intra-chunk pairs in log space, chunk states carried sequentially.

    Every exponent is a difference g_t - g_s with t >= s of a decreasing cumulative log gate, so it is <= 0 and
    nothing can overflow; the pairs with t < s are masked before the exponential.
    """
    B, T, H, K = q.shape
    acc = accumulation_dtype(q.dtype)
    pad = (-T) % chunk_size
    chunks = [
        rearrange(F.pad(t.to(acc), (0, 0, 0, 0, 0, pad)), "b (n c) h d -> b h n c d", c=chunk_size)
        for t in (q, k, v, log_f)
    ]
    q_c, k_c, v_c, g = chunks
    g = g.cumsum(-2)
    o = _intra_chunk_scores(q_c, k_c, g) @ v_c
    g_last = g[..., -1:, :]
    updates = (k_c * (g_last - g).exp()).transpose(-1, -2) @ v_c  # [B, H, N, K, V]
    chunk_decay = g_last.squeeze(-2).exp()[..., None]  # [B, H, N, K, 1]
    state = q.new_zeros(B, H, K, v.shape[-1], dtype=acc) if h0 is None else h0.to(acc)
    entering = []
    for n in range(g.shape[2]):
        entering.append(state)
        state = chunk_decay[:, :, n] * state + updates[:, :, n]
    if entering:
        o = o + (q_c * g.exp()) @ torch.stack(entering, 2)
    o = rearrange(scale * o, "b h n c v -> b (n c) h v")[:, :T]
    return o.to(v.dtype), state


def hgrn1_chunked(
    x: Tensor, log_f: Tensor, h0: Tensor | None, *, theta: Tensor | None, chunk_size: int = CHUNK_SIZE
) -> tuple[Tensor, Tensor]:
    """Chunkwise-parallel element-wise recurrence, real or complex (a rotation by theta per step)."""
    B, T = log_f.shape[:2]
    acc = accumulation_dtype(log_f.dtype)
    pad = (-T) % chunk_size
    x_c = rearrange(F.pad(x.to(acc), (0, 0) * (x.dim() - 2) + (0, pad)), "b (n c) ... -> b n c ...", c=chunk_size)
    g = rearrange(F.pad(log_f.to(acc), (0, 0, 0, pad)), "b (n c) d -> b n c d", c=chunk_size).cumsum(2)
    theta = None if theta is None else theta.to(acc)
    steps = torch.arange(1, chunk_size + 1, device=x.device, dtype=acc)[:, None]  # steps taken at each position
    h = _local_scan(x_c, g, theta, steps)
    carry = g.exp() if theta is None else _polar(g, steps * theta)  # what becomes of the state entering the chunk
    multiply = torch.mul if theta is None else _complex_mul
    state = x.new_zeros(B, *x.shape[2:], dtype=acc) if h0 is None else h0.to(acc)
    if g.shape[1]:
        entering = [state]
        for n in range(g.shape[1] - 1):
            entering.append(h[:, n, -1] + multiply(carry[:, n, -1], entering[-1]))
        h = h + multiply(carry, torch.stack(entering, 1)[:, :, None])
    h = rearrange(h, "b n c ... -> b (n c) ...")[:, :T]
    final = h[:, -1] if T else state  # not the padded chunk end: padding still rotates a complex state
    return h.to(log_f.dtype), final


def _local_scan(x: Tensor, g: Tensor, theta: Tensor | None, steps: Tensor) -> Tensor:
    """h_t = sum_{s<=t} e^{g_t - g_s} e^{i (t - s) theta} x_s within each chunk (zero entering state).

    Factorised as e^{g_t + i t theta} cumsum_s(e^{-g_s - i s theta} x_s) when the decay allows (see
    `_factorisable`); otherwise from the explicit pairwise decays.
    """
    if _factorisable(g):
        if theta is None:
            return g.exp() * torch.cumsum((-g).exp() * x, 2)
        return _complex_mul(_polar(g, steps * theta), torch.cumsum(_complex_mul(_polar(-g, -steps * theta), x), 2))
    decay = _pairwise_decay(g)  # [B, N, C, C, D]
    if theta is None:
        return torch.einsum("bntsd,bnsd->bntd", decay, x)
    lag = steps - steps.T  # t - s, [C, C]
    weights = torch.stack((decay * (lag[..., None] * theta).cos(), decay * (lag[..., None] * theta).sin()), -1)
    return _complex_mul(weights, x[:, :, None]).sum(3)


def _polar(log_magnitude: Tensor, angle: Tensor) -> Tensor:
    """(re, im) of exp(log_magnitude + i angle), as a trailing axis of size 2."""
    magnitude = log_magnitude.exp()
    return torch.stack((magnitude * angle.cos(), magnitude * angle.sin()), -1)


def _factorisable(g: Tensor) -> bool:
    """No chunk decays by more than e^-60 (cumulative log gates g [..., C, D]): then e^g and e^-g both stay well
    inside the float32 range and a chunk's pairwise decays can be factorised into per-position terms."""
    return g.numel() == 0 or bool(g[..., -1, :].min() > -FACTORISED_DECAY_LIMIT)


def _intra_chunk_scores(q: Tensor, k: Tensor, g: Tensor) -> Tensor:
    """A[t, s] = sum_k q_tk k_sk exp(g_tk - g_sk) for t >= s, else 0; q, k, g [..., C, K] -> [..., C, C].

    A matmul of (q e^g)(k e^-g)^T when `_factorisable`; otherwise the pairwise differences are formed explicitly
    (exact for any gate, more memory).
    """
    causal = torch.ones(g.shape[-2], g.shape[-2], dtype=torch.bool, device=g.device).tril()
    if _factorisable(g):
        return ((q * g.exp()) @ (k * (-g).exp()).transpose(-1, -2)).masked_fill(~causal, 0)
    return (q[..., :, None, :] * k[..., None, :, :] * _pairwise_decay(g)).sum(-1)


def _pairwise_decay(g: Tensor) -> Tensor:
    """exp(g_t - g_s) for t >= s and 0 above the diagonal, from cumulative log gates g [..., C, D] -> [..., C, C, D]."""
    C = g.shape[-2]
    causal = torch.ones(C, C, dtype=torch.bool, device=g.device).tril()
    diff = g[..., :, None, :] - g[..., None, :, :]
    return diff.masked_fill(~causal[..., None], float("-inf")).exp()


def _complex_mul(a: Tensor, b: Tensor) -> Tensor:
    a_re, a_im = a.unbind(-1)
    b_re, b_im = b.unbind(-1)
    return torch.stack((a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re), -1)


# --- shared plumbing: packed sequences and direction --------------------------------------------------------------


def run_sequences(
    scan: Scan,
    tensors: Sequence[Tensor],
    *,
    initial_state: Tensor | None,
    output_final_state: bool,
    reverse: bool,
    cu_seqlens: Tensor | None,
) -> Result:
    """Run a forward-in-time `scan(*tensors, h0) -> (out, h_T)` on each packed sequence, optionally reversed."""

    def one(parts: Sequence[Tensor], h0: Tensor | None) -> tuple[Tensor, Tensor]:
        if reverse:
            parts = [t.flip(1) for t in parts]
        out, final = scan(*parts, h0)
        return (out.flip(1) if reverse else out), final

    if cu_seqlens is None:
        out, final = one(tensors, initial_state)
        return out, final if output_final_state else None
    offsets = cu_seqlens.tolist()
    outs, finals = [], []
    for i, (start, end) in enumerate(itertools.pairwise(offsets)):
        h0 = None if initial_state is None else initial_state[i : i + 1]
        out, final = one([t[:, start:end] for t in tensors], h0)
        outs.append(out)
        finals.append(final)
    return torch.cat(outs, 1), torch.cat(finals) if output_final_state else None
