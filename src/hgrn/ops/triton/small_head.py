"""Small heads: GLA / HGRN2 with K, V <= SMALL_HEAD_MAX, each head's K x V state as element-wise channels.

Below the tensor cores' 16-wide tiles the chunked kernels pad K and V to 16 and spend (16 / K)^2 of their work on
zeros. Here S_t[k, v] = f_t[k] S_{t-1}[k, v] + k_t[k] v_t[v] is an element-wise linear recurrence over the
H * K * V state channels, scanned in registers: one program owns BH heads of one (pseudo-)sequence, walks it in
[BT, BH, K, V] tiles (k v^T formed on the fly, the affine maps (f, x) scanned down the tile, o_t = scale q_t S_t
reduced over K), and carries the state between tiles. Inputs are read once and outputs written once; the states
exist only in registers, except the state entering each tile after a sequence's first, saved for the backward
(the first tile's is the initial or the segment's start state: a ViT's 16-token grid lines save none).

Backward, tiles from the last: dS_t = scale q_t do_t^T + f_{t+1} dS_{t+1} by the reversed scan, the tile's states
recomputed from the saved one, and dq = scale S do, dk = dS v, dv = dS^T k, dlog f = sum_v dS (S - k v^T), the
HGRN2 gate gradient from s = sigmoid(z) and sigmoid(-z) kept apart (no cancellation at saturated gates).

Long sequences with few state channels are cut into segments walked in parallel and joined as the chunked
kernels' are (`segment_combine`): a first walk finds each segment's own final state (backward: the gradient
reaching its start), the combine chains them, the second walk starts each segment from its true state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from hgrn.ops.triton._common import (
    INTERPRET,
    LOG2E,
    affine,
    lower_bounded_gate,
    pow2,
    seq_span,
    target_programs,
    tokens,
)
from hgrn.ops.triton.chunk import segment_combine

SMALL_HEAD_MAX = 8  # the largest K (and V) taken here; from 16 the chunked kernels are faster (results/bench/)
SPECIALIZE = dict(do_not_specialize=["T", "NS", "L", "NTS"])


def fits(k: Tensor, v: Tensor) -> bool:
    """Whether heads of these sizes (k [.., K], v [.., V]) take the small-head path."""
    return k.shape[-1] <= SMALL_HEAD_MAX and v.shape[-1] <= SMALL_HEAD_MAX


@triton.jit
def _where(tok, valid, heads, hm, cols, E: tl.constexpr, H: tl.constexpr):
    """(offsets, mask) of a [BT, BH, EP] tile of a token-major [.., H, E] tensor."""
    offs = tok[:, None, None] * (H * E) + heads[None, :, None] * E + cols[None, None, :]
    return offs, valid[:, None, None] & hm[None, :, None] & (cols < E)[None, None, :]


@triton.jit
def _tile(ptr, tok, valid, heads, hm, cols, E: tl.constexpr, H: tl.constexpr):
    """[BT, BH, EP] fp32 tile of a token-major [.., H, E] tensor; zeros outside."""
    offs, m = _where(tok, valid, heads, hm, cols, E, H)
    return tl.load(ptr + offs, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _store(ptr, x, tok, valid, heads, hm, cols, E: tl.constexpr, H: tl.constexpr):
    offs, m = _where(tok, valid, heads, hm, cols, E, H)
    tl.store(ptr + offs, x.to(ptr.dtype.element_ty), mask=m)


@triton.jit
def _lower_bound(lb, heads, hm, ck, K: tl.constexpr, GATE: tl.constexpr):
    """The lower bound [1, BH, KP] (GATE 2), else 0."""
    if GATE == 2:
        lbv = tl.load(lb + heads[:, None] * K + ck[None, :], mask=hm[:, None] & (ck < K)[None, :], other=0.0)
        lbv = lbv.to(tl.float32)[None, :, :]
    else:
        lbv = 0.0
    return lbv


@triton.jit
def _gate_load(kz, lg, tok, valid, heads, hm, ck, K: tl.constexpr, H: tl.constexpr, GATE: tl.constexpr):
    """The raw gate tiles: (k, log f) for GLA, (z, z) for HGRN2 (loads issued apart from their use: prefetch)."""
    zt = _tile(kz, tok, valid, heads, hm, ck, K, H)
    if GATE == 0:  # noqa: SIM108 (Triton: constexpr branch)
        lt = _tile(lg, tok, valid, heads, hm, ck, K, H)
    else:
        lt = zt
    return zt, lt


@triton.jit
def _gate(zt, lt, lbv, valid, hm, ck, K: tl.constexpr, GATE: tl.constexpr):
    """(k, log f, s, ns, f) of a [BT, BH, KP] tile from _gate_load's, k = log f = 0 outside (the identity step). GLA
    has k and log f (s, ns, f are then unused); HGRN2 forms them from the gate logits z and the lower bound."""
    if GATE == 0:
        k, logf, s, ns, f = zt, lt, zt, zt, zt
    else:
        k, logf, s, ns, f = lower_bounded_gate(zt, lbv)
        inside = valid[:, None, None] & hm[None, :, None] & (ck < K)[None, None, :]
        k = tl.where(inside, k, 0.0)
        logf = tl.where(inside, logf, 0.0)
    return k, logf, s, ns, f


@triton.jit
def _row(x, i, BT: tl.constexpr):
    """Row i of a [BT, ...] register tile (a masked sum: register tiles cannot be indexed)."""
    pick = tl.arange(0, BT) == i
    return tl.sum(tl.where(pick[:, None, None, None], x, 0.0), 0)


@triton.jit
def _decays(logf, BT: tl.constexpr, BH: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr):
    """f = e^{log f} [BT, BH, KP] broadcast over V: the scan's inputs must share one shape."""
    return tl.broadcast_to(tl.exp2(logf * LOG2E)[:, :, :, None], [BT, BH, KP, VP])


@triton.jit
def _program(cu, T, NS, L, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr,
             BH: tl.constexpr, IS_VARLEN: tl.constexpr):  # fmt: skip
    """This program's pseudo-sequence p (first token, length), its heads (and which exist), the K and V columns, and
    the offsets of its [BH, KP, VP] states within one [H, K, V] state and within a [P, H, K, V] one (and the mask)."""
    ih, p = tl.program_id(0), tl.program_id(1)
    bos, n = seq_span(p, cu, T, NS, L, IS_VARLEN)
    heads = ih * BH + tl.arange(0, BH)
    hm = heads < H
    ck, cv = tl.arange(0, KP), tl.arange(0, VP)
    h_off = (heads[:, None, None] * K + ck[None, :, None]) * V + cv[None, None, :]
    s_off = p.to(tl.int64) * H * K * V + h_off
    s_mask = hm[:, None, None] & (ck < K)[None, :, None] & (cv < V)[None, None, :]
    return p, bos, n, heads, hm, ck, cv, h_off, s_off, s_mask


@triton.jit
def _state(ptr, s_off, s_mask, PRESENT: tl.constexpr, BH: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr):
    """A [BH, KP, VP] state in fp32 from a [P, H, K, V] tensor, or zeros when there is none."""
    if PRESENT:  # noqa: SIM108 (Triton: constexpr branch)
        x = tl.load(ptr + s_off, mask=s_mask, other=0.0).to(tl.float32)
    else:
        x = tl.zeros([BH, KP, VP], tl.float32)
    return x


@triton.jit(**SPECIALIZE)
def _fwd_kernel(q, kz, lg, lb, v, o, h0, ht, saved, logdec, cu, T, NS, L, NTS, scale,
                H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr,
                BH: tl.constexpr, BT: tl.constexpr, MODE: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr,
                IS_VARLEN: tl.constexpr, HAS_H0: tl.constexpr, STORE_HT: tl.constexpr,
                SAVE: tl.constexpr):  # fmt: skip
    """Forward walk of BH heads of pseudo-sequence p with the [BH, KP, VP] state S in registers.

    MODE 0: o = scale q S, the state entering each tile but the first into `saved` [P, NTS - 1, H, K, V] (SAVE),
    the final state into ht (STORE_HT).
    MODE 1: the segment's own final state (from S = 0) into ht and its total log decay into logdec [P, H, K]."""
    p, bos, n, heads, hm, ck, cv, h_off, s_off, s_mask = _program(cu, T, NS, L, H, K, V, KP, VP, BH, IS_VARLEN)
    S = _state(h0, s_off, s_mask, HAS_H0, BH, KP, VP)
    total = tl.zeros([BH, KP], tl.float32)
    lbv = _lower_bound(lb, heads, hm, ck, K, GATE)
    # each tile's loads are issued one tile ahead (software pipelining by hand: one warp walks the sequence)
    tok, valid = tokens(tl.arange(0, BT), n, bos, REVERSE)
    zt, lt = _gate_load(kz, lg, tok, valid, heads, hm, ck, K, H, GATE)
    vt = _tile(v, tok, valid, heads, hm, cv, V, H)
    qt = _tile(q, tok, valid, heads, hm, ck, K, H) if MODE == 0 else zt
    for c in range(0, tl.cdiv(n, BT)):
        tok_n, valid_n = tokens((c + 1) * BT + tl.arange(0, BT), n, bos, REVERSE)
        zt_n, lt_n = _gate_load(kz, lg, tok_n, valid_n, heads, hm, ck, K, H, GATE)
        vt_n = _tile(v, tok_n, valid_n, heads, hm, cv, V, H)
        qt_n = _tile(q, tok_n, valid_n, heads, hm, ck, K, H) if MODE == 0 else zt_n
        k, logf, _s, _ns, _f = _gate(zt, lt, lbv, valid, hm, ck, K, GATE)
        if SAVE and c > 0:
            tl.store(saved + (p * (NTS - 1) + c - 1).to(tl.int64) * H * K * V + h_off, S, mask=s_mask)
        x = k[:, :, :, None] * vt[:, :, None, :]
        A, B = tl.associative_scan((_decays(logf, BT, BH, KP, VP), x), 0, affine)
        if MODE == 0:
            states = A * S[None] + B
            _store(o, scale * tl.sum(qt[:, :, :, None] * states, 2), tok, valid, heads, hm, cv, V, H)
            S = _row(states, BT - 1, BT)
        else:
            S = _row(A, BT - 1, BT) * S + _row(B, BT - 1, BT)
            total += tl.sum(logf, 0)
        tok, valid, zt, lt, vt, qt = tok_n, valid_n, zt_n, lt_n, vt_n, qt_n
    if STORE_HT:
        tl.store(ht + s_off, S, mask=s_mask)
    if MODE == 1:
        k_off = (p * H + heads).to(tl.int64)[:, None] * K + ck[None, :]
        tl.store(logdec + k_off, total, mask=hm[:, None] & (ck < K)[None, :])


@triton.jit
def _bwd_loads(q, kz, lg, v, do, r, n, bos, heads, hm, ck, cv, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
               GATE: tl.constexpr, REVERSE: tl.constexpr):  # fmt: skip
    """The backward's tiles of processing-order rows r: (tokens, which exist, which of the rows one step later exist,
    the raw gate tiles of those later rows, the raw gate tiles, q, do, v)."""
    tok, valid = tokens(r, n, bos, REVERSE)
    tok_x, valid_x = tokens(r + 1, n, bos, REVERSE)
    zx, lx = _gate_load(kz, lg, tok_x, valid_x, heads, hm, ck, K, H, GATE)
    zt, lt = _gate_load(kz, lg, tok, valid, heads, hm, ck, K, H, GATE)
    qt = _tile(q, tok, valid, heads, hm, ck, K, H)
    dot = _tile(do, tok, valid, heads, hm, cv, V, H)
    vt = _tile(v, tok, valid, heads, hm, cv, V, H)
    return tok, valid, valid_x, zx, lx, zt, lt, qt, dot, vt


@triton.jit(**SPECIALIZE)
def _bwd_kernel(q, kz, lg, lb, v, do, saved, s0, dht, dq, dkz, dlg, dv, dh0, plb, cu, T, NS, L, NTS, scale,
                H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr,
                BH: tl.constexpr, BT: tl.constexpr, MODE: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr,
                IS_VARLEN: tl.constexpr, HAS_S0: tl.constexpr, HAS_DHT: tl.constexpr,
                STORE_DH0: tl.constexpr):  # fmt: skip
    """Reverse walk with U = dL/dS at the first step of the tile after the current one (dht at the start).

    MODE 0: dq, dk (GLA) or dz (HGRN2), dlog f (GLA), dv, the lower bound's per-program sums into plb [P, H, K];
    MODE 1: only the gradient reaching the state that enters the segment (from dht = 0). STORE_DH0 stores it.
    Tile states: the first tile's from s0 [P, H, K, V] (HAS_S0; else zeros), the later ones' from `saved`."""
    p, bos, n, heads, hm, ck, cv, h_off, s_off, s_mask = _program(cu, T, NS, L, H, K, V, KP, VP, BH, IS_VARLEN)
    U = _state(dht, s_off, s_mask, HAS_DHT, BH, KP, VP)
    lb_sum = tl.zeros([BH, KP], tl.float32)
    lbv = _lower_bound(lb, heads, hm, ck, K, GATE)
    n_tiles = tl.cdiv(n, BT)
    # each tile's loads are issued one tile ahead, as in the forward; "next": the rows one step later (their f
    # multiplies dS; 1 past the end, where dS_t = scale q_t do_t^T + dht)
    tok, valid, valid_x, zx, lx, zt, lt, qt, dot, vt = _bwd_loads(
        q, kz, lg, v, do, (n_tiles - 1) * BT + tl.arange(0, BT), n, bos, heads, hm, ck, cv, H, K, V, GATE, REVERSE
    )
    for cc in range(0, n_tiles):
        c = n_tiles - 1 - cc
        if MODE == 0:
            if c > 0:
                S0 = tl.load(saved + (p * (NTS - 1) + c - 1).to(tl.int64) * H * K * V + h_off, mask=s_mask, other=0.0)
            else:
                S0 = _state(s0, s_off, s_mask, HAS_S0, BH, KP, VP)
        tok_n, valid_n, valid_x_n, zx_n, lx_n, zt_n, lt_n, qt_n, dot_n, vt_n = _bwd_loads(
            q, kz, lg, v, do, (c - 1) * BT + tl.arange(0, BT), n, bos, heads, hm, ck, cv, H, K, V, GATE, REVERSE
        )
        _k, logf_next, _s, _ns, _f = _gate(zx, lx, lbv, valid_x, hm, ck, K, GATE)
        grads = scale * qt[:, :, :, None] * dot[:, :, None, :]
        Cr, Dr = tl.associative_scan((_decays(logf_next, BT, BH, KP, VP), grads), 0, affine, reverse=True)
        dS = Cr * U[None] + Dr
        if MODE == 0:
            k, logf, s, ns, f = _gate(zt, lt, lbv, valid, hm, ck, K, GATE)
            x = k[:, :, :, None] * vt[:, :, None, :]
            A, B = tl.associative_scan((_decays(logf, BT, BH, KP, VP), x), 0, affine)
            states = A * S0[None] + B
            dkt = tl.sum(dS * vt[:, :, None, :], 3)
            dlogf = tl.sum(dS * states, 3) - k * dkt  # sum_v dS (S - k v^T) = sum_v dS f S_{t-1}
            _store(dq, scale * tl.sum(states * dot[:, :, None, :], 3), tok, valid, heads, hm, ck, K, H)
            _store(dv, tl.sum(dS * k[:, :, :, None], 2), tok, valid, heads, hm, cv, V, H)
            if GATE == 0:
                _store(dkz, dkt, tok, valid, heads, hm, ck, K, H)
                _store(dlg, dlogf, tok, valid, heads, hm, ck, K, H)
            else:
                inside = valid[:, None, None] & hm[None, :, None] & (ck < K)[None, None, :]
                inv_f = tl.where(inside & (f > 0), tl.fdiv(1.0, f), 0.0)
                ratio = tl.where(f > 0, s * inv_f, 1.0)  # s / f -> 1 as f -> 0 without a bound
                _store(dkz, k * (ratio * dlogf - s * dkt), tok, valid, heads, hm, ck, K, H)
                if GATE == 2:
                    lb_sum += tl.sum(tl.where(inside, ns * (inv_f * dlogf - dkt), 0.0), 0)
        U = _row(dS, 0, BT)
        tok, valid, valid_x, zx, lx, zt, lt = tok_n, valid_n, valid_x_n, zx_n, lx_n, zt_n, lt_n
        qt, dot, vt = qt_n, dot_n, vt_n
    if STORE_DH0:  # dL/dS_{-1} = f_0 dS_0 (an empty sequence passes dht through)
        tok0, valid0 = tokens(tl.arange(0, BT), n, bos, REVERSE)
        z0, l0 = _gate_load(kz, lg, tok0, valid0, heads, hm, ck, K, H, GATE)
        _k, logf0, _s, _ns, _f = _gate(z0, l0, lbv, valid0, hm, ck, K, GATE)
        f0 = tl.sum(tl.where((tl.arange(0, BT) == 0)[:, None, None], tl.exp(logf0), 0.0), 0)
        tl.store(dh0 + s_off, f0[:, :, None] * U, mask=s_mask)
    if GATE == 2 and MODE == 0:
        k_off = (p * H + heads).to(tl.int64)[:, None] * K + ck[None, :]
        tl.store(plb + k_off, lb_sum, mask=hm[:, None] & (ck < K)[None, :])


# --- launch plan and autograd ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Tiles and pseudo-sequences for one call, chosen by rule (HGRN_SMALL_TILES="BH=4,BT=16,warps=4,NS=2" for
    tile experiments)."""

    n_seqs: int
    NS: int  # segments per sequence
    L: int  # segment length (a multiple of BT)
    NTS: int  # tiles per pseudo-sequence (at most)
    KP: int
    VP: int
    BH: int  # heads per program
    BT: int  # time steps per tile
    warps: int

    @property
    def P(self) -> int:
        return self.n_seqs * self.NS


def make_plan(q: Tensor, v: Tensor, cu_seqlens: Tensor | None, segments: int | None = None) -> Plan:
    """One warp per program holding about 32 state channels (BH heads, one channel per thread, a tile's 16 steps in
    its registers, so the scan down the tile stays in-thread); segments while the programs would not fill the GPU
    four times over. Chosen by tile sweeps on an H200 (B8 T2048 d2048 bf16, fwd+bwd ms, 2026-12-02). Before the
    loads were issued a tile ahead: head size 8 2.55 at (BH 1, BT 16, 1 warp), 3.26 at (2, 8, 4 warps), 4.92 at
    (4, 8, 4); head size 2 1.10 at (8, 16, 1), 1.49 at (32, 8, 4), 1.74 at (128, 8, 4); larger tiles spill
    registers (up to 66 ms). With them, at (BT 16 / 8 / 32, 1 warp): head size 8 1.92 / 1.88 / 2.46, 4 1.39 / 1.20 /
    1.41, 2 0.90 / 0.78 / 1.57, 1 0.94 / 0.74 / 1.62 (BT 8 is not yet checked on the GPU against the reference)."""
    T, H, K = q.shape[1:]
    tiles = {k: int(x) for k, x in (i.split("=") for i in os.environ.get("HGRN_SMALL_TILES", "").split(",") if i)}
    KP, VP = pow2(K), pow2(v.shape[-1])
    BH = tiles.get("BH", min(pow2(H), max(32 // (KP * VP), 1)))
    BT = tiles.get("BT", 16)
    n_seqs = q.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
    if segments is None:
        programs = n_seqs * triton.cdiv(H, BH)
        target = 2 * target_programs(q.device)
        segments = 1 if cu_seqlens is not None or programs >= target else triton.cdiv(target, programs)
    segments = max(1, min(tiles.get("NS", segments), triton.cdiv(T, 4 * BT)))
    L = triton.cdiv(triton.cdiv(max(T, 1), segments), BT) * BT
    NS = triton.cdiv(T, L) if T else 1
    longest = L if cu_seqlens is None else int(cu_seqlens.diff().max()) if n_seqs else 0
    warps = 4 if INTERPRET else tiles.get("warps", 1)
    return Plan(n_seqs, NS, L, max(triton.cdiv(longest, BT), 1), KP, VP, BH, BT, warps)


def _forward(
    q, kz, lg, lb, v, h0, scale: float, gate: int, reverse: bool, cu, plan: Plan, want_final: bool, save: bool
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """(o, the final state or None, the states entering each tile but the first (save) or None, the states
    entering each pseudo-sequence [P, H, K, V] or None (zeros), the segments' log decays [P, H, K] (segmented
    runs) or None)."""
    H, K, V = *q.shape[2:], v.shape[-1]
    inputs, seq, shape, grid = _launch(q, kz, lg, lb, v, scale, gate, reverse, cu, plan)
    o = torch.empty_like(v)
    saved = q.new_empty(plan.P, max(plan.NTS - 1, 1), H, K, V, dtype=torch.float32) if save else None
    logdec = None
    if plan.NS > 1:
        local = q.new_empty(plan.P, H, K, V, dtype=torch.float32)
        logdec = q.new_empty(plan.P, H, K, dtype=torch.float32)
        _fwd_kernel[grid](*inputs, o, q, local, q, logdec, *seq, MODE=1, HAS_H0=False, STORE_HT=True, SAVE=False,
                          **shape)  # fmt: skip
        starts, final = segment_combine(local, logdec, h0, plan.n_seqs, plan.NS, reverse, want_final)
    else:
        starts = h0
        final = q.new_empty(plan.n_seqs, H, K, V, dtype=torch.float32) if want_final else None
    _fwd_kernel[grid](*inputs, o, q if starts is None else starts, q if plan.NS > 1 or final is None else final,
                      q if saved is None else saved, q, *seq, MODE=0, HAS_H0=starts is not None,
                      STORE_HT=plan.NS == 1 and want_final, SAVE=save, **shape)  # fmt: skip
    return o, final, saved, starts, logdec


class SmallHeadRecurrence(torch.autograd.Function):
    """GLA (gate=0: kz = k, lg = log f) or HGRN2 (gate 1 / 2: kz = gate logits, lb = lower bound or None)."""

    @staticmethod
    def forward(ctx, q, kz, lg, lb, v, h0, scale, gate, reverse, cu, plan, want_final):
        o, final, saved, starts, logdec = _forward(q, kz, lg, lb, v, h0, scale, gate, reverse, cu, plan, want_final,
                                                   True)  # fmt: skip
        ctx.save_for_backward(q, kz, lg, lb, v, h0, saved, starts, logdec, cu)
        ctx.args = (scale, gate, reverse, plan)
        ctx.set_materialize_grads(False)
        return o, final

    @staticmethod
    def backward(ctx, do, dht=None):
        q, kz, lg, lb, v, h0, saved, starts, logdec, cu = ctx.saved_tensors
        scale, gate, reverse, plan = ctx.args
        H, K, V = *q.shape[2:], v.shape[-1]
        inputs, seq, shape, grid = _launch(q, kz, lg, lb, v, scale, gate, reverse, cu, plan)
        do = torch.zeros_like(v) if do is None else do.contiguous()
        dht = None if dht is None else dht.contiguous()
        if plan.NS > 1:  # the gradient reaching each segment's end from the later segments
            local = q.new_empty(plan.P, H, K, V, dtype=torch.float32)
            _bwd_kernel[grid](*inputs, do, q, q, q, q, q, q, q, local, q, *seq, MODE=1, HAS_S0=False, HAS_DHT=False,
                              STORE_DH0=True, **shape)  # fmt: skip
            terminal, dh0 = segment_combine(local, logdec, dht, plan.n_seqs, plan.NS, not reverse, h0 is not None)
        else:
            terminal = dht
            dh0 = q.new_empty(plan.n_seqs, H, K, V, dtype=torch.float32) if h0 is not None else None
        dq, dkz, dv = torch.empty_like(q), torch.empty_like(kz), torch.empty_like(v)
        dlg = None if lg is None else torch.empty_like(lg)
        plb = q.new_empty(plan.P, H, K, dtype=torch.float32) if lb is not None else None
        _bwd_kernel[grid](*inputs, do, saved, q if starts is None else starts, q if terminal is None else terminal,
                          dq, dkz, q if dlg is None else dlg, dv, q if plan.NS > 1 or dh0 is None else dh0,
                          q if plb is None else plb, *seq, MODE=0, HAS_S0=starts is not None,
                          HAS_DHT=terminal is not None, STORE_DH0=plan.NS == 1 and dh0 is not None,
                          **shape)  # fmt: skip
        dlb = None if lb is None else plb.sum(0).to(lb.dtype)
        dh0 = None if h0 is None else dh0.to(h0.dtype)
        return dq, dkz, dlg, dlb, dv, dh0, None, None, None, None, None, None


def _launch(q, kz, lg, lb, v, scale: float, gate: int, reverse: bool, cu, plan: Plan) -> tuple:
    """The kernels' common arguments: (input tensors, sequence arguments, constexprs and launch options, grid)."""
    T, H, K = q.shape[1:]
    inputs = (q, kz, q if lg is None else lg, q if lb is None else lb, v)
    seq = (q if cu is None else cu, T, plan.NS, plan.L, plan.NTS, scale)
    shape = dict(H=H, K=K, V=v.shape[-1], KP=plan.KP, VP=plan.VP, BH=plan.BH, BT=plan.BT, GATE=gate,
                 REVERSE=reverse, IS_VARLEN=cu is not None, num_warps=plan.warps)  # fmt: skip
    return inputs, seq, shape, (triton.cdiv(H, plan.BH), plan.P)


def recurrence(
    q: Tensor,
    kz: Tensor,
    lg: Tensor | None,
    lb: Tensor | None,
    v: Tensor,
    *,
    gate: int,
    scale: float,
    initial_state: Tensor | None,
    output_final_state: bool,
    reverse: bool,
    cu_seqlens: Tensor | None,
    segments: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """GLA (gate 0: kz = k [B, T, H, K], lg = log f) or HGRN2 (gate 1 / 2: kz = gate logits, lb = lower bound [H, K]
    or None) on small heads; q [B, T, H, K], v [B, T, H, V], initial_state [N, H, K, V] or None. Returns
    (o [B, T, H, V] in v's dtype, the final state [N, H, K, V] in fp32 or None); `segments` overrides the plan."""
    plan = make_plan(q, v, cu_seqlens, segments)
    tensors = [None if t is None else t.contiguous() for t in (q, kz, lg, lb, v, initial_state)]
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    args = (*tensors, float(scale), gate, reverse, cu_seqlens, plan, output_final_state)
    if grad:
        o, final = SmallHeadRecurrence.apply(*args)
    else:  # no autograd node and no saved tile states
        o, final, *_ = _forward(*args, False)
    return o, final if output_final_state else None
