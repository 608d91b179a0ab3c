"""Decoding steps: one token, the recurrent state updated in place (no copy of a [B, H, K, V] state per token)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hgrn.ops.triton._common import cdiv, lower_bounded_gate, pow2


@triton.jit
def _gla_step_kernel(q, kz, lg, lb, v, o, state, scale, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                     KP: tl.constexpr, BV: tl.constexpr, GATE: tl.constexpr):  # fmt: skip
    iv, bh = tl.program_id(0), tl.program_id(1)
    ck = tl.arange(0, KP)
    cv = iv * BV + tl.arange(0, BV)
    km, vm = ck < K, cv < V
    row = bh.to(tl.int64) * K
    z = tl.load(kz + row + ck, mask=km, other=0.0).to(tl.float32)
    if GATE == 0:
        k = z
        f = tl.exp(tl.load(lg + row + ck, mask=km, other=0.0).to(tl.float32))
    else:
        lbv = 0.0
        if GATE == 2:
            lbv = tl.load(lb + (bh % H) * K + ck, mask=km, other=0.0).to(tl.float32)
        k, _logf, _s, _ns, f = lower_bounded_gate(z, lbv)
    s_ptr = state + bh.to(tl.int64) * K * V + ck[:, None] * V + cv[None, :]
    s_mask = km[:, None] & vm[None, :]
    S = tl.load(s_ptr, mask=s_mask, other=0.0).to(tl.float32)
    vt = tl.load(v + bh.to(tl.int64) * V + cv, mask=vm, other=0.0).to(tl.float32)
    S = f[:, None] * S + k[:, None] * vt[None, :]
    tl.store(s_ptr, S.to(state.dtype.element_ty), mask=s_mask)
    qt = tl.load(q + row + ck, mask=km, other=0.0).to(tl.float32)
    out = scale * tl.sum(qt[:, None] * S.to(state.dtype.element_ty).to(tl.float32), 0)
    tl.store(o + bh.to(tl.int64) * V + cv, out.to(o.dtype.element_ty), mask=vm)


@triton.jit
def _hgrn1_step_kernel(x, lg, th, h, state, N, D, COMPLEX: tl.constexpr, BLOCK: tl.constexpr):
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = e < N
    f = tl.exp(tl.load(lg + e, mask=m, other=0.0).to(tl.float32))
    if COMPLEX:
        theta = tl.load(th + e % D, mask=m, other=0.0).to(tl.float32)
        ar, ai = f * tl.cos(theta), f * tl.sin(theta)
        sr = tl.load(state + 2 * e, mask=m, other=0.0).to(tl.float32)
        si = tl.load(state + 2 * e + 1, mask=m, other=0.0).to(tl.float32)
        nr = ar * sr - ai * si + tl.load(x + 2 * e, mask=m, other=0.0).to(tl.float32)
        ni = ar * si + ai * sr + tl.load(x + 2 * e + 1, mask=m, other=0.0).to(tl.float32)
        tl.store(state + 2 * e, nr.to(state.dtype.element_ty), mask=m)
        tl.store(state + 2 * e + 1, ni.to(state.dtype.element_ty), mask=m)
        tl.store(h + 2 * e, nr.to(h.dtype.element_ty), mask=m)
        tl.store(h + 2 * e + 1, ni.to(h.dtype.element_ty), mask=m)
    else:
        s = f * tl.load(state + e, mask=m, other=0.0).to(tl.float32) + tl.load(x + e, mask=m, other=0.0).to(tl.float32)
        tl.store(state + e, s.to(state.dtype.element_ty), mask=m)
        tl.store(h + e, s.to(h.dtype.element_ty), mask=m)


@torch.compiler.disable  # updates the state in place: a graph break under torch.compile (hgrn.ops.dispatch)
def gla_step(
    q: Tensor, kz: Tensor, v: Tensor, lg: Tensor | None, state: Tensor, lb: Tensor | None, *, gate: int, scale: float
) -> tuple[Tensor, Tensor]:
    """One GLA step (gate 0: kz = k, lg = log f) or HGRN2 step (kz = gate logits); `state` is updated in place."""
    B, H, K = q.shape
    V = v.shape[-1]
    q, kz, v = q.contiguous(), kz.contiguous(), v.contiguous()
    lg = None if lg is None else lg.contiguous()
    o = v.new_empty(B, H, V)
    KP = max(pow2(K), 16)
    BV = max(16, min(pow2(V), 8192 // KP))
    _gla_step_kernel[(cdiv(V, BV), B * H)](
        q, kz, q if lg is None else lg, q if lb is None else lb.contiguous(), v, o, state, float(scale),
        H=H, K=K, V=V, KP=KP, BV=BV, GATE=gate, num_warps=4,
    )  # fmt: skip
    return o, state


@torch.compiler.disable  # updates the state in place: a graph break under torch.compile (hgrn.ops.dispatch)
def hgrn1_step(x: Tensor, log_f: Tensor, state: Tensor, theta: Tensor | None) -> tuple[Tensor, Tensor]:
    """One HGRN1 step; `state` [B, D(, 2)] is updated in place; returns (h in log_f's dtype, state)."""
    x, log_f = x.contiguous(), log_f.contiguous()
    h = x.new_empty(x.shape, dtype=log_f.dtype)
    n, block = log_f.numel(), 1024
    _hgrn1_step_kernel[(cdiv(n, block),)](
        x, log_f, x if theta is None else theta.contiguous(), h, state, n, log_f.shape[-1],
        COMPLEX=theta is not None, BLOCK=block,
    )  # fmt: skip
    return h, state
