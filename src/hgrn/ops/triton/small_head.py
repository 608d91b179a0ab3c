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

Both ways (`directions`, hgrn.ops.hgrn2_directions): a line's program walks it forward, then backward, adding into
the outputs (backward: the gradients) it has just written; a grid's rows are segments of the grid's width, its
columns lines read in place with the width as token step (STRIDED), added to the rows'. Inputs are read through
their token strides, so the views chunk(3, -1) makes of a projection are never copied. Grid lines of at most 16
tokens (a ViT's) can instead take the parallel form (HGRN_SMALL_TILES="PAR=1"; not yet the rule: untimed): both
ways as one decay-weighted 16 x 16 score matrix per line and head on the tensor cores, steep lines left to the scan.
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
    dot_mode,
    empty_grads,
    lower_bounded_gate,
    mm,
    needs_grad,
    or_empty,
    pow2,
    present_grads,
    register_cap,
    seq_span,
    target_programs,
)
from hgrn.ops.triton.chunk import segment_combine
from hgrn.ops.triton.precompile import ahead, entry, together

SMALL_HEAD_MAX = 8  # the largest K (and V) taken here; from 16 the chunked kernels are faster (results/bench/)
SPECIALIZE = dict(do_not_specialize=["T", "NS", "L", "NTS", "SK", "SV"])


def fits(k: Tensor, v: Tensor) -> bool:
    """Whether heads of these sizes (k [.., K], v [.., V]) take the small-head path."""
    return k.shape[-1] <= SMALL_HEAD_MAX and v.shape[-1] <= SMALL_HEAD_MAX


@triton.jit
def _where(rel, valid, heads, hm, cols, stride, E: tl.constexpr):
    """(int32 offsets from the tile's first token, mask) of a [BT, BH, EP] tile of a [.., H, E] tensor whose tokens
    lie `stride` elements apart; rel: the rows' tokens counted from the first's."""
    offs = rel[:, None, None] * stride + heads[None, :, None] * E + cols[None, None, :]
    return offs, valid[:, None, None] & hm[None, :, None] & (cols < E)[None, None, :]


@triton.jit
def _tile(ptr, t0, rel, valid, heads, hm, cols, stride, E: tl.constexpr):
    """[BT, BH, EP] fp32 tile whose first row is token t0; zeros outside."""
    offs, m = _where(rel, valid, heads, hm, cols, stride, E)
    return tl.load(ptr + t0 * stride + offs, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _store(ptr, x, t0, rel, valid, heads, hm, cols, E: tl.constexpr, H: tl.constexpr, ACC: tl.constexpr):
    """x into a [BT, BH, EP] tile (first row: token t0) of a contiguous [.., H, E] tensor, added to what is there
    (ACC)."""
    offs, m = _where(rel, valid, heads, hm, cols, H * E, E)
    ptr += t0 * (H * E)
    if ACC:
        x += tl.load(ptr + offs, mask=m, other=0.0).to(tl.float32)
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
def _gate_load(kz, lg, t0, rel, valid, heads, hm, ck, SK, K: tl.constexpr, GATE: tl.constexpr):
    """The raw gate tiles: (k, log f) for GLA, (z, z) for HGRN2 (loads issued apart from their use: prefetch)."""
    zt = _tile(kz, t0, rel, valid, heads, hm, ck, SK, K)
    if GATE == 0:  # noqa: SIM108 (Triton: constexpr branch)
        lt = _tile(lg, t0, rel, valid, heads, hm, ck, SK, K)
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
def _scan_from(f, x, S, BT: tl.constexpr):
    """The states S_t = f_t S_{t-1} + x_t of a [BT, ...] tile entered with S [...]. S is folded into the first row,
    so the scan's products of f go unused and are dropped: one FFMA per step and channel instead of three (the time
    axis lies within each thread). Offline sm_90 SASS, head size 8, 2-D, per line and head: backward 3,750 -> 3,614
    instructions and 168 -> 140 registers, forward 1,324 -> 1,229."""
    first = (tl.arange(0, BT) == 0)[:, None, None, None]
    _, B = tl.associative_scan((f, tl.where(first, x + f * S[None], x)), 0, affine)
    return B


@triton.jit
def _suffix_scan_from(f_next, g, U, BT: tl.constexpr):
    """dS_t = f_{t+1} dS_{t+1} + g_t down a [BT, ...] tile from the last row, U = dS at the row after the tile
    (f_next: the rows' f_{t+1}): _scan_from between two flips. The flips are register renaming; Triton's reverse
    scan instead cost 640 warp shuffles per tile of the head-size-8 backward (offline sm_90 SASS, triton 3.6: 2,624
    -> 1,976 instructions)."""
    return tl.flip(_scan_from(tl.flip(f_next, 0), tl.flip(g, 0), U, BT), 0)


@triton.jit
def _row(x, i, BT: tl.constexpr):
    """Row i of a [BT, ...] register tile (a masked sum: register tiles cannot be indexed)."""
    pick = tl.arange(0, BT) == i
    return tl.sum(tl.where(pick[:, None, None, None], x, 0.0), 0)


@triton.jit
def _decays(logf, BT: tl.constexpr, BH: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr, VK: tl.constexpr):
    """f = e^{log f} [BT, BH, KP] broadcast over V, to [BT, BH, KP, VP] (VK: [BT, BH, VP, KP]): the scan's inputs
    must share one shape."""
    f = tl.exp2(logf * LOG2E)
    if VK:
        f = tl.broadcast_to(f[:, :, None, :], [BT, BH, VP, KP])
    else:
        f = tl.broadcast_to(f[:, :, :, None], [BT, BH, KP, VP])
    return f


@triton.jit
def _tokens(r0, n, bos, ts, BT: tl.constexpr, REVERSE: tl.constexpr):
    """Processing-order rows r0 .. r0 + BT - 1 of a line of n tokens `ts` apart from token bos: (the first row's
    token (int64), each row's token counted from it (int32), which rows exist). Offsets within a tile fit in 32 bits
    where a long sequence's do not (offline sm_90 SASS, head size 8, 2-D backward: 3,898 -> 3,750 instructions per
    line and head against 64-bit offsets per element)."""
    r = r0 + tl.arange(0, BT)
    valid = (r >= 0) & (r < n)
    if REVERSE:
        return bos + (n - 1 - r0) * ts, -tl.arange(0, BT) * ts, valid
    return bos + r0 * ts, tl.arange(0, BT) * ts, valid


@triton.jit
def _program(ih, p, cu, T, NS, L, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr,
             VP: tl.constexpr, BH: tl.constexpr, IS_VARLEN: tl.constexpr, STRIDED: tl.constexpr,
             VK: tl.constexpr):  # fmt: skip
    """Line p (first token, length, token step) and head group ih: its heads (and which exist), the K and V columns,
    and the offsets of its [BH, KP, VP] states (VK: [BH, VP, KP]) within one [H, K, V] state and within a
    [P, H, K, V] one (and the mask). A line is a pseudo-sequence, or (STRIDED) one of the NS interleaved lines of L
    tokens of a sequence of T = NS * L: the columns of a row-major grid of L rows of NS tokens, read in place."""
    if STRIDED:
        b = p // NS
        bos = b.to(tl.int64) * T + (p - b * NS)
        n = L
        ts = NS
    else:
        bos, n = seq_span(p, cu, T, NS, L, IS_VARLEN)
        ts = 1
    heads = ih * BH + tl.arange(0, BH)
    hm = heads < H
    ck, cv = tl.arange(0, KP), tl.arange(0, VP)
    if VK:
        h_off = (heads[:, None, None] * K + ck[None, None, :]) * V + cv[None, :, None]
        s_mask = hm[:, None, None] & (ck < K)[None, None, :] & (cv < V)[None, :, None]
    else:
        h_off = (heads[:, None, None] * K + ck[None, :, None]) * V + cv[None, None, :]
        s_mask = hm[:, None, None] & (ck < K)[None, :, None] & (cv < V)[None, None, :]
    s_off = p.to(tl.int64) * H * K * V + h_off
    return bos, n, ts, heads, hm, ck, cv, h_off, s_off, s_mask


@triton.jit
def _state(ptr, s_off, s_mask, PRESENT: tl.constexpr, BH: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr,
           VK: tl.constexpr):  # fmt: skip
    """A [BH, KP, VP] state (VK: [BH, VP, KP]) in fp32 from a [P, H, K, V] tensor, or zeros when there is none."""
    if PRESENT:
        x = tl.load(ptr + s_off, mask=s_mask, other=0.0).to(tl.float32)
    elif VK:
        x = tl.zeros([BH, VP, KP], tl.float32)
    else:
        x = tl.zeros([BH, KP, VP], tl.float32)
    return x


@triton.jit
def _other_way(saved, NTS, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr):
    """Where the reversed scan's saved tile states start (BOTH): after the [P, NTS - 1, H, K, V] of the forward's."""
    return saved + (tl.num_programs(1) * (NTS - 1)).to(tl.int64) * (H * K * V)


@triton.jit
def _fwd_walk(q, kz, lg, v, o, saved, S, lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, NTS, SK, SV, scale,
              H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr,
              BH: tl.constexpr, BT: tl.constexpr, MODE: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr,
              SAVE: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """One walk along line p from state S; returns (the final state, the line's total log decay [BH, KP] (MODE 1)).
    MODE 0 stores (ACC: adds) o and saves the state entering each tile but the first (SAVE)."""
    total = tl.zeros([BH, KP], tl.float32)
    # each tile's loads are issued one tile ahead (software pipelining by hand: one warp walks the sequence)
    t0, rel, valid = _tokens(0, n, bos, ts, BT, REVERSE)
    zt, lt = _gate_load(kz, lg, t0, rel, valid, heads, hm, ck, SK, K, GATE)
    vt = _tile(v, t0, rel, valid, heads, hm, cv, SV, V)
    qt = _tile(q, t0, rel, valid, heads, hm, ck, SK, K) if MODE == 0 else zt
    for c in range(0, tl.cdiv(n, BT)):
        t0_n, rel, valid_n = _tokens((c + 1) * BT, n, bos, ts, BT, REVERSE)
        zt_n, lt_n = _gate_load(kz, lg, t0_n, rel, valid_n, heads, hm, ck, SK, K, GATE)
        vt_n = _tile(v, t0_n, rel, valid_n, heads, hm, cv, SV, V)
        qt_n = _tile(q, t0_n, rel, valid_n, heads, hm, ck, SK, K) if MODE == 0 else zt_n
        k, logf, _s, _ns, _f = _gate(zt, lt, lbv, valid, hm, ck, K, GATE)
        if SAVE and c > 0:
            tl.store(saved + (p * (NTS - 1) + c - 1).to(tl.int64) * H * K * V + h_off, S, mask=s_mask)
        x = k[:, :, :, None] * vt[:, :, None, :]
        states = _scan_from(_decays(logf, BT, BH, KP, VP, False), x, S, BT)
        if MODE == 0:
            _store(o, scale * tl.sum(qt[:, :, :, None] * states, 2), t0, rel, valid, heads, hm, cv, V, H, ACC)
        else:
            total += tl.sum(logf, 0)
        S = _row(states, BT - 1, BT)
        t0, valid, zt, lt, vt, qt = t0_n, valid_n, zt_n, lt_n, vt_n, qt_n
    return S, total


@entry(**SPECIALIZE)
def _fwd_kernel(q, kz, lg, lb, v, o, h0, ht, saved, logdec, cu, T, NS, L, NTS, SK, SV, scale,
                H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr,
                BH: tl.constexpr, BT: tl.constexpr, MODE: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr,
                IS_VARLEN: tl.constexpr, STRIDED: tl.constexpr, HAS_H0: tl.constexpr, STORE_HT: tl.constexpr,
                SAVE: tl.constexpr, BOTH: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """Forward walk of BH heads of line p with the [BH, KP, VP] state S in registers.

    MODE 0: o = scale q S (ACC: added to o), the state entering each tile but the first into `saved` [P, NTS - 1,
    H, K, V] (SAVE), the final state into ht (STORE_HT). BOTH: then the line walked the other way from S = 0 and
    its o added (no states in or out; its saved states follow the first walk's).
    MODE 1: the segment's own final state (from S = 0) into ht and its total log decay into logdec [P, H, K]."""
    p = tl.program_id(1)
    bos, n, ts, heads, hm, ck, cv, h_off, s_off, s_mask = _program(
        tl.program_id(0), p, cu, T, NS, L, H, K, V, KP, VP, BH, IS_VARLEN, STRIDED, False
    )
    lbv = _lower_bound(lb, heads, hm, ck, K, GATE)
    S = _state(h0, s_off, s_mask, HAS_H0, BH, KP, VP, False)
    S, total = _fwd_walk(q, kz, lg, v, o, saved, S, lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, NTS, SK, SV,
                         scale, H, K, V, KP, VP, BH, BT, MODE, GATE, REVERSE, SAVE, ACC)  # fmt: skip
    if BOTH:
        tl.debug_barrier()  # this program's stores of o are visible to its loads
        _fwd_walk(q, kz, lg, v, o, _other_way(saved, NTS, H, K, V), tl.zeros([BH, KP, VP], tl.float32), lbv, p, bos,
                  n, ts, heads, hm, ck, cv, h_off, s_mask, NTS, SK, SV, scale, H, K, V, KP, VP, BH, BT, MODE, GATE,
                  True, SAVE, True)  # fmt: skip
    if STORE_HT:
        tl.store(ht + s_off, S, mask=s_mask)
    if MODE == 1:
        k_off = (p * H + heads).to(tl.int64)[:, None] * K + ck[None, :]
        tl.store(logdec + k_off, total, mask=hm[:, None] & (ck < K)[None, :])


@triton.jit
def _bwd_loads(q, kz, lg, v, do, r0, n, bos, ts, heads, hm, ck, cv, SK, SV, H: tl.constexpr, K: tl.constexpr,
               V: tl.constexpr, BT: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr):  # fmt: skip
    """The backward's tiles of processing-order rows r0 .. r0 + BT - 1: (the first row's token, the rows' tokens
    from it, which rows exist, which of the rows one step later exist, the raw gate tiles of those later rows, the raw
    gate tiles, q, do, v)."""
    t0, rel, valid = _tokens(r0, n, bos, ts, BT, REVERSE)
    t0_x, rel, valid_x = _tokens(r0 + 1, n, bos, ts, BT, REVERSE)
    zx, lx = _gate_load(kz, lg, t0_x, rel, valid_x, heads, hm, ck, SK, K, GATE)
    zt, lt = _gate_load(kz, lg, t0, rel, valid, heads, hm, ck, SK, K, GATE)
    qt = _tile(q, t0, rel, valid, heads, hm, ck, SK, K)
    dot = _tile(do, t0, rel, valid, heads, hm, cv, H * V, V)
    vt = _tile(v, t0, rel, valid, heads, hm, cv, SV, V)
    return t0, rel, valid, valid_x, zx, lx, zt, lt, qt, dot, vt


@triton.jit
def _gate_grads(dkz, dlg, dk, dlogf, k, s, ns, f, lb_sum, t0, rel, valid, heads, hm, ck, K: tl.constexpr,
                H: tl.constexpr, GATE: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """Stores (ACC: adds) the gate inputs' gradients of a [BT, BH, KP] tile from dk and dlog f: those two for GLA, dz
    for HGRN2 (_gate's k, s, ns, f); returns lb_sum plus the tile's lower-bound gradient sums [BH, KP] (GATE 2)."""
    if GATE == 0:
        _store(dkz, dk, t0, rel, valid, heads, hm, ck, K, H, ACC)
        _store(dlg, dlogf, t0, rel, valid, heads, hm, ck, K, H, ACC)
    else:
        inside = valid[:, None, None] & hm[None, :, None] & (ck < K)[None, None, :]
        inv_f = tl.where(inside & (f > 0), tl.fdiv(1.0, f), 0.0)
        ratio = tl.where(f > 0, s * inv_f, 1.0)  # s / f -> 1 as f -> 0 without a bound
        _store(dkz, k * (ratio * dlogf - s * dk), t0, rel, valid, heads, hm, ck, K, H, ACC)
        if GATE == 2:
            lb_sum += tl.sum(tl.where(inside, ns * (inv_f * dlogf - dk), 0.0), 0)
    return lb_sum


@triton.jit
def _bwd_walk(q, kz, lg, v, do, saved, S0_first, dq, dkz, dlg, dv, U, lb_sum, lbv, p, bos, n, ts, heads, hm, ck, cv,
              h_off, s_mask, NTS, SK, SV, scale, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr,
              VP: tl.constexpr, BH: tl.constexpr, BT: tl.constexpr, MODE: tl.constexpr, GATE: tl.constexpr,
              REVERSE: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """One reverse walk along line p, U = dL/dS at the first step of the tile after the current one (the terminal
    gradient at the start); returns (U at the line's first step, lb_sum plus this walk's lower-bound sums).
    MODE 0 stores (ACC: adds) dq, dk or dz, dlog f, dv; the tile states come from S0_first (the first tile's) and
    `saved` (the later ones'). States and their gradients are [BT, BH, VP, KP] tiles here, V before K (the forward's
    are [.., KP, VP]): Triton spreads the last axis over the most lanes, and three of the four sums per tile run over
    V (offline sm_90 SASS at head size 8: 1,976 -> 1,664 instructions, 338 -> 210 shuffles)."""
    n_tiles = tl.cdiv(n, BT)
    # each tile's loads are issued one tile ahead, as in the forward; "next": the rows one step later (their f
    # multiplies dS; 1 past the end, where dS_t = scale q_t do_t^T + dht)
    t0, rel, valid, valid_x, zx, lx, zt, lt, qt, dot, vt = _bwd_loads(
        q, kz, lg, v, do, (n_tiles - 1) * BT, n, bos, ts, heads, hm, ck, cv, SK, SV, H, K, V, BT, GATE, REVERSE
    )
    for cc in range(0, n_tiles):
        c = n_tiles - 1 - cc
        if MODE == 0:
            if c > 0:
                S0 = tl.load(saved + (p * (NTS - 1) + c - 1).to(tl.int64) * H * K * V + h_off, mask=s_mask, other=0.0)
                S0 = S0.to(tl.float32)  # (a dummy pointer of the inputs' dtype where no line has two tiles)
            else:
                S0 = S0_first
        t0_n, rel, valid_n, valid_x_n, zx_n, lx_n, zt_n, lt_n, qt_n, dot_n, vt_n = _bwd_loads(
            q, kz, lg, v, do, (c - 1) * BT, n, bos, ts, heads, hm, ck, cv, SK, SV, H, K, V, BT, GATE, REVERSE
        )
        _k, logf_next, _s, _ns, _f = _gate(zx, lx, lbv, valid_x, hm, ck, K, GATE)
        grads = scale * qt[:, :, None, :] * dot[:, :, :, None]
        dS = _suffix_scan_from(_decays(logf_next, BT, BH, KP, VP, True), grads, U, BT)
        if MODE == 0:
            k, logf, s, ns, f = _gate(zt, lt, lbv, valid, hm, ck, K, GATE)
            x = k[:, :, None, :] * vt[:, :, :, None]
            states = _scan_from(_decays(logf, BT, BH, KP, VP, True), x, S0, BT)
            dkt = tl.sum(dS * vt[:, :, :, None], 2)
            dlogf = tl.sum(dS * states, 2) - k * dkt  # sum_v dS (S - k v^T) = sum_v dS f S_{t-1}
            _store(dq, scale * tl.sum(states * dot[:, :, :, None], 2), t0, rel, valid, heads, hm, ck, K, H, ACC)
            _store(dv, tl.sum(dS * k[:, :, None, :], 3), t0, rel, valid, heads, hm, cv, V, H, ACC)
            lb_sum = _gate_grads(dkz, dlg, dkt, dlogf, k, s, ns, f, lb_sum, t0, rel, valid, heads, hm, ck, K, H, GATE,
                                 ACC)  # fmt: skip
        U = _row(dS, 0, BT)
        t0, valid, valid_x, zx, lx, zt, lt = t0_n, valid_n, valid_x_n, zx_n, lx_n, zt_n, lt_n
        qt, dot, vt = qt_n, dot_n, vt_n
    return U, lb_sum


@entry(**SPECIALIZE)
def _bwd_kernel(q, kz, lg, lb, v, do, saved, s0, dht, dq, dkz, dlg, dv, dh0, plb, cu, T, NS, L, NTS, SK, SV, scale,
                H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr,
                BH: tl.constexpr, BT: tl.constexpr, MODE: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr,
                IS_VARLEN: tl.constexpr, STRIDED: tl.constexpr, HAS_S0: tl.constexpr, HAS_DHT: tl.constexpr,
                STORE_DH0: tl.constexpr, BOTH: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """Reverse walk from the gradient dht reaching the line's final state.

    MODE 0: dq, dk (GLA) or dz (HGRN2), dlog f (GLA), dv (ACC: added), the lower bound's per-program sums into plb
    [P, H, K]; BOTH: then the walk for the line's reversed scan, its gradients added. MODE 1: only the gradient
    reaching the state that enters the segment (from dht = 0). STORE_DH0 stores it.
    Tile states: the first tile's from s0 [P, H, K, V] (HAS_S0; else zeros), the later ones' from `saved`."""
    p = tl.program_id(1)
    bos, n, ts, heads, hm, ck, cv, h_off, s_off, s_mask = _program(
        tl.program_id(0), p, cu, T, NS, L, H, K, V, KP, VP, BH, IS_VARLEN, STRIDED, True
    )
    lbv = _lower_bound(lb, heads, hm, ck, K, GATE)
    U = _state(dht, s_off, s_mask, HAS_DHT, BH, KP, VP, True)
    S0 = _state(s0, s_off, s_mask, HAS_S0, BH, KP, VP, True)
    U, lb_sum = _bwd_walk(q, kz, lg, v, do, saved, S0, dq, dkz, dlg, dv, U, tl.zeros([BH, KP], tl.float32), lbv, p,
                          bos, n, ts, heads, hm, ck, cv, h_off, s_mask, NTS, SK, SV, scale, H, K, V, KP, VP, BH, BT,
                          MODE, GATE, REVERSE, ACC)  # fmt: skip
    if BOTH:
        tl.debug_barrier()  # this program's stores of the gradients are visible to its loads
        zeros = tl.zeros([BH, VP, KP], tl.float32)
        _u, lb_sum = _bwd_walk(q, kz, lg, v, do, _other_way(saved, NTS, H, K, V), zeros, dq, dkz, dlg, dv, zeros,
                               lb_sum, lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, NTS, SK, SV, scale, H, K,
                               V, KP, VP, BH, BT, MODE, GATE, True, True)  # fmt: skip
    if STORE_DH0:  # dL/dS_{-1} = f_0 dS_0 (an empty sequence passes dht through)
        t00, rel0, valid0 = _tokens(0, n, bos, ts, BT, REVERSE)
        z0, l0 = _gate_load(kz, lg, t00, rel0, valid0, heads, hm, ck, SK, K, GATE)
        _k, logf0, _s, _ns, _f = _gate(z0, l0, lbv, valid0, hm, ck, K, GATE)
        f0 = tl.sum(tl.where((tl.arange(0, BT) == 0)[:, None, None], tl.exp(logf0), 0.0), 0)
        tl.store(dh0 + s_off, f0[:, None, :] * U, mask=s_mask)
    if GATE == 2 and MODE == 0:
        k_off = (p * H + heads).to(tl.int64)[:, None] * K + ck[None, :]
        tl.store(plb + k_off, lb_sum, mask=hm[:, None] & (ck < K)[None, :])


# --- grid lines of at most 16 tokens: the parallel form --------------------------------------------------------------
# A ViT's lines are 16 tokens. Each program takes BH slabs of LINE channels (LINE / K heads each) of one line, both
# ways at once, as decay-weighted scores on the tensor cores: o_t = scale sum_s M_ts v_s with, per head,
# M_ts = sum_k q_tk k_sk e^{C_tk - C_sk} (s <= t, forward) + sum_k q_tk k_sk e^{D_tk - D_sk} (s >= t, reverse; the
# diagonal in both), C_t = sum_{r <= t} log f_r, D_t = sum_{r >= t} log f_r, each factored as
# (q_t e^{C_t - C_m}) . (k_s e^{C_m - C_s}) about the middle token m. Loads, gates and factors run on whole slabs (no
# padding of 8-channel heads to the dots' 16); each head's dots mask the slab's other heads out of k and v. Nothing
# is saved for the backward, which recomputes M. Where some |C_t - C_m| or |D_t - D_m| exceeds STEEP the factors
# would leave fp32's range (e^88): the program marks itself in `slots` and appends itself to their list, and a
# second launch walks the listed lines by the scan, one 16-step tile per way (in the same kernel the scan's
# registers would bound the parallel form's: offline sm_90, 255 registers with spills against 160 for one head).
# slots [1 + 2 G P] int32: the list's length, each program's mark [P, G], the list (p G + g).

LINE = 16  # the parallel form's line length and slab width: the tensor cores' smallest tile
STEEP = tl.constexpr(60.0)  # e^{+-60} factors: their unmasked products stay below e^60 |q| |k|
FALLBACK_PROGRAMS = 1024  # the second launch's programs, each walking every so-many listed lines


@triton.jit
def _line_exponents(logf, n, LP: tl.constexpr):
    """(C - C_m, D - D_m) of a line's [LP, BH, LINE] log f (0 outside), m its middle token, and whether any exceeds
    STEEP in size."""
    C = tl.cumsum(logf, 0)
    D = tl.sum(logf, 0)[None] - C + logf
    mid = (tl.arange(0, LP) == (n - 1) // 2)[:, None, None]
    C -= tl.sum(tl.where(mid, C, 0.0), 0)[None]
    D -= tl.sum(tl.where(mid, D, 0.0), 0)[None]
    return C, D, tl.max(tl.max(tl.max(tl.maximum(tl.abs(C), tl.abs(D)), 0), 0), 0) > STEEP


@triton.jit
def _line_factors(C, D):
    """(e^C, e^-C, e^D, e^-D) of _line_exponents' (the factors of q and k for either way)."""
    return tl.exp2(C * LOG2E), tl.exp2(C * -LOG2E), tl.exp2(D * LOG2E), tl.exp2(D * -LOG2E)


@triton.jit
def _heads_first(x):
    """[LP, BH, W] -> [BH, LP, W] (and back): the dots batch over the program's slabs."""
    return tl.permute(x, (1, 0, 2))


@triton.jit
def _dot_t(a, b, DOT: tl.constexpr):
    """a b^T per slab: [LP, BH, W] x [LP, BH, W] -> [BH, LP, LP]."""
    return mm(_heads_first(a), tl.permute(b, (1, 2, 0)), DOT)


@triton.jit
def _line_scores(qf, kf, qr, kr, LP: tl.constexpr, DOT: tl.constexpr):
    """M [BH, LP(t), LP(s)] from the factored operands [LP, BH, LINE]: forward scores where s <= t, reverse where
    s >= t (masked scores may overflow; they are dropped, never multiplied)."""
    t = tl.arange(0, LP)[None, :, None]
    s = tl.arange(0, LP)[None, None, :]
    return tl.where(s <= t, _dot_t(qf, kf, DOT), 0.0) + tl.where(s >= t, _dot_t(qr, kr, DOT), 0.0)


@triton.jit
def _line_program(cu, T, NS, L, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BH: tl.constexpr,
                  LP: tl.constexpr, STRIDED: tl.constexpr):  # fmt: skip
    """(this program's line p, its mark's place in `slots` (1 + p G + g for slab group g), the line's length, first
    token, tokens from it, which exist, its slabs (H, K, V count slabs here), which exist, the LP-wide columns)."""
    g, p = tl.program_id(0), tl.program_id(1)
    bos, n, ts, heads, hm, _ck, _cv, _h, _s, _m = _program(g, p, cu, T, NS, L, H, K, V, LP, LP, BH, False, STRIDED,
                                                           False)  # fmt: skip
    t0, rel, valid = _tokens(0, n, bos, ts, LP, False)
    return p, 1 + p * tl.num_programs(0) + g, n, t0, rel, valid, heads, hm, tl.arange(0, LP)


@entry(**SPECIALIZE)
def _line_fwd_kernel(q, kz, lg, lb, v, o, slots, cu, T, NS, L, NTS, SK, SV, scale, H: tl.constexpr, K: tl.constexpr,
                     V: tl.constexpr, HK: tl.constexpr, BH: tl.constexpr, BT: tl.constexpr, GATE: tl.constexpr,
                     STRIDED: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr):  # fmt: skip
    """o of BH slabs of line p (at most BT = LINE tokens), both ways summed (ACC: added to o), or the program's mark
    and place in the list of steep ones. A slab is K = V = LINE channels, LINE / HK heads of size HK: loads, gates
    and factors run on whole slabs, each head's scores mask the other heads' channels out of k (and of v)."""
    _p, mark, n, t0, rel, valid, heads, hm, cw = _line_program(cu, T, NS, L, H, K, V, BH, BT, STRIDED)
    zt, lt = _gate_load(kz, lg, t0, rel, valid, heads, hm, cw, SK, K, GATE)
    k, logf, _s, _ns, _f = _gate(zt, lt, _lower_bound(lb, heads, hm, cw, K, GATE), valid, hm, cw, K, GATE)
    C, D, steep = _line_exponents(logf, n, BT)
    tl.store(slots + mark, steep.to(tl.int32))
    if steep:
        programs = tl.num_programs(0) * tl.num_programs(1)
        tl.store(slots + 1 + programs + tl.atomic_add(slots, 1), mark - 1)
    else:
        qt = _tile(q, t0, rel, valid, heads, hm, cw, SK, K)
        vt = _tile(v, t0, rel, valid, heads, hm, cw, SV, V)
        a, b, c, d = _line_factors(C, D)
        qf, kf, qr, kr = qt * a, k * b, qt * c, k * d
        out = tl.zeros([BH, BT, V], tl.float32)
        for j in tl.static_range(K // HK):
            mine = (cw // HK == j)[None, None, :]
            M = _line_scores(qf, tl.where(mine, kf, 0.0), qr, tl.where(mine, kr, 0.0), BT, DOT)
            out += mm(M, _heads_first(tl.where(mine, vt, 0.0)), DOT)
        _store(o, _heads_first(scale * out), t0, rel, valid, heads, hm, cw, V, H, ACC)


@entry(**SPECIALIZE)
def _line_bwd_kernel(q, kz, lg, lb, v, do, dq, dkz, dlg, dv, plb, slots, cu, T, NS, L, NTS, SK, SV, scale,
                     H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, HK: tl.constexpr, BH: tl.constexpr,
                     BT: tl.constexpr, GATE: tl.constexpr, STRIDED: tl.constexpr, ACC: tl.constexpr,
                     DOT: tl.constexpr):  # fmt: skip
    """The gradients of _line_fwd_kernel (ACC: added), the lower bound's per-program sums into plb [P, H, K]; the
    programs the forward marked steep are left to the second launch. Per head, with dM_ts = scale do_t . v_s split by
    way (dMf where s <= t, dMr where s >= t), the factors a, b = e^{+-(C - C_m)}, c, d = e^{+-(D - D_m)} and the
    operands qf = q a, kf = k b, qr = q c, kr = k d: dv = scale M^T do, dq = a dMf kf + c dMr kr,
    dk = b dMf^T qf + d dMr^T qr, and dlog f_r = sum_{t >= r} dC_t + sum_{t <= r} dD_t with
    dC = qf (dMf kf) - kf (dMf^T qf), dD alike (the reference token's share cancels: M does not depend on it)."""
    p, mark, n, t0, rel, valid, heads, hm, cw = _line_program(cu, T, NS, L, H, K, V, BH, BT, STRIDED)
    if tl.load(slots + mark) == 0:
        zt, lt = _gate_load(kz, lg, t0, rel, valid, heads, hm, cw, SK, K, GATE)
        k, logf, s, ns, f = _gate(zt, lt, _lower_bound(lb, heads, hm, cw, K, GATE), valid, hm, cw, K, GATE)
        C, D, _steep = _line_exponents(logf, n, BT)
        qt = _tile(q, t0, rel, valid, heads, hm, cw, SK, K)
        vt = _tile(v, t0, rel, valid, heads, hm, cw, SV, V)
        dot = _tile(do, t0, rel, valid, heads, hm, cw, H * V, V)
        a, b, c, d = _line_factors(C, D)
        qf, kf, qr, kr = qt * a, k * b, qt * c, k * d
        tt = tl.arange(0, BT)[None, :, None]
        ss = tl.arange(0, BT)[None, None, :]
        Af = tl.zeros([BH, BT, K], tl.float32)
        Ar, Bf, Br, dvt = Af, Af, Af, tl.zeros([BH, BT, V], tl.float32)
        for j in tl.static_range(K // HK):
            mine = (cw // HK == j)[None, None, :]
            kfj, krj, doj = tl.where(mine, kf, 0.0), tl.where(mine, kr, 0.0), tl.where(mine, dot, 0.0)
            dM = scale * _dot_t(doj, vt, DOT)
            dMf = tl.where(ss <= tt, dM, 0.0)
            dMr = tl.where(ss >= tt, dM, 0.0)
            Af += mm(dMf, _heads_first(kfj), DOT)
            Ar += mm(dMr, _heads_first(krj), DOT)
            Bf += mm(tl.permute(dMf, (0, 2, 1)), _heads_first(tl.where(mine, qf, 0.0)), DOT)
            Br += mm(tl.permute(dMr, (0, 2, 1)), _heads_first(tl.where(mine, qr, 0.0)), DOT)
            M = _line_scores(qf, kfj, qr, krj, BT, DOT)
            dvt += mm(tl.permute(M, (0, 2, 1)), _heads_first(doj), DOT)
        Af, Ar, Bf, Br = _heads_first(Af), _heads_first(Ar), _heads_first(Bf), _heads_first(Br)
        dC = qf * Af - kf * Bf
        dD = qr * Ar - kr * Br
        dlogf = tl.sum(dC, 0)[None] - tl.cumsum(dC, 0) + dC + tl.cumsum(dD, 0)
        _store(dq, a * Af + c * Ar, t0, rel, valid, heads, hm, cw, K, H, ACC)
        _store(dv, _heads_first(scale * dvt), t0, rel, valid, heads, hm, cw, V, H, ACC)
        lb_sum = _gate_grads(dkz, dlg, b * Bf + d * Br, dlogf, k, s, ns, f, tl.zeros([BH, K], tl.float32), t0, rel,
                             valid, heads, hm, cw, K, H, GATE, ACC)  # fmt: skip
        if GATE == 2:
            k_off = (p * H + heads).to(tl.int64)[:, None] * K + cw[None, :]
            tl.store(plb + k_off, lb_sum, mask=hm[:, None] & (cw < K)[None, :])


@triton.jit
def _listed(slots, i, NP, H: tl.constexpr, BH: tl.constexpr):
    """(line, head group) of the i-th listed steep program of a launch of NP lines."""
    G: tl.constexpr = (H + BH - 1) // BH
    e = tl.load(slots + 1 + NP * G + i)
    return e // G, e % G


@entry(**SPECIALIZE)
def _line_fallback_fwd_kernel(q, kz, lg, lb, v, o, slots, cu, T, NS, L, NTS, SK, SV, scale, NP,
                              H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr,
                              VP: tl.constexpr, BH: tl.constexpr, BT: tl.constexpr, GATE: tl.constexpr,
                              STRIDED: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """_line_fwd_kernel's steep programs (NP lines), each walked both ways by the scan in [BT, BH, KP, VP] tiles."""
    for i in range(tl.program_id(0), tl.load(slots), tl.num_programs(0)):
        p, g = _listed(slots, i, NP, H, BH)
        bos, n, ts, heads, hm, ck, cv, h_off, _s_off, s_mask = _program(g, p, cu, T, NS, L, H, K, V, KP, VP, BH, False,
                                                                        STRIDED, False)  # fmt: skip
        lbv = _lower_bound(lb, heads, hm, ck, K, GATE)
        S = tl.zeros([BH, KP, VP], tl.float32)
        _fwd_walk(q, kz, lg, v, o, q, S, lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, 1, SK, SV, scale, H, K,
                  V, KP, VP, BH, BT, 0, GATE, False, False, ACC)  # fmt: skip
        tl.debug_barrier()  # this program's stores of o are visible to its loads
        _fwd_walk(q, kz, lg, v, o, q, S, lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, 1, SK, SV, scale, H, K,
                  V, KP, VP, BH, BT, 0, GATE, True, False, True)  # fmt: skip


@entry(**SPECIALIZE)
def _line_fallback_bwd_kernel(q, kz, lg, lb, v, do, dq, dkz, dlg, dv, plb, slots, cu, T, NS, L, NTS, SK, SV, scale, NP,
                              H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr,
                              VP: tl.constexpr, BH: tl.constexpr, BT: tl.constexpr, GATE: tl.constexpr,
                              STRIDED: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """The gradients of _line_fallback_fwd_kernel (ACC: added), the lower bound's sums into plb [P, H, K]."""
    for i in range(tl.program_id(0), tl.load(slots), tl.num_programs(0)):
        p, g = _listed(slots, i, NP, H, BH)
        bos, n, ts, heads, hm, ck, cv, h_off, _s_off, s_mask = _program(g, p, cu, T, NS, L, H, K, V, KP, VP, BH, False,
                                                                        STRIDED, True)  # fmt: skip
        lbv = _lower_bound(lb, heads, hm, ck, K, GATE)
        zeros = tl.zeros([BH, VP, KP], tl.float32)
        _u, lb_sum = _bwd_walk(q, kz, lg, v, do, q, zeros, dq, dkz, dlg, dv, zeros, tl.zeros([BH, KP], tl.float32),
                               lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, 1, SK, SV, scale, H, K, V, KP, VP,
                               BH, BT, 0, GATE, False, ACC)  # fmt: skip
        tl.debug_barrier()  # this program's stores of the gradients are visible to its loads
        _u, lb_sum = _bwd_walk(q, kz, lg, v, do, q, zeros, dq, dkz, dlg, dv, zeros, lb_sum, lbv, p, bos, n, ts, heads,
                               hm, ck, cv, h_off, s_mask, 1, SK, SV, scale, H, K, V, KP, VP, BH, BT, 0, GATE, True,
                               True)  # fmt: skip
        if GATE == 2:
            k_off = (p * H + heads).to(tl.int64)[:, None] * K + ck[None, :]
            tl.store(plb + k_off, lb_sum, mask=hm[:, None] & (ck < K)[None, :])


# --- launch plan and autograd ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Lines and tiles for one launch, chosen by rule (HGRN_SMALL_TILES="BH=4,BT=16,warps=4,NS=2,maxnreg=128,PAR=1"
    for tile experiments). The kernels walk P = n_seqs * NS lines: the segments of length L of each sequence of T
    tokens, or (strided) its NS interleaved lines of L tokens, the columns of a grid of L rows of NS tokens."""

    n_seqs: int
    T: int  # tokens per sequence (unpacked)
    NS: int  # lines per sequence
    L: int  # line length (segments: a multiple of BT)
    NTS: int  # tiles per line (at most)
    KP: int
    VP: int
    BH: int  # heads per program
    BT: int  # time steps per tile
    warps: int
    maxnreg: int | None  # register cap (None: the compiler's choice; offline sm_90, the ViT's 2-D backward at head
    # size 8 takes 168 registers uncapped, 128 with 24 bytes of stack when capped: 16 one-warp programs per SM, not 12;
    # timed on an H200, 2026-12-05, at 256 x 256 x 48 x 8: 3.71 ms fwd+bwd kernels capped at 128 against 3.66 uncapped)
    strided: bool = False
    parallel: bool = False  # grid lines of at most LINE tokens in the parallel form (_line_fwd_kernel)

    @property
    def P(self) -> int:
        return self.n_seqs * self.NS


def _tiles(H: int, K: int, V: int, bt: int = 16) -> dict[str, int | None]:
    """One warp per program holding about 32 state channels (BH heads, one channel per thread, a tile's 16 steps in
    its registers, so the scan down the tile stays in-thread). Chosen by tile sweeps on an H200 (B8 T2048 d2048
    bf16, fwd+bwd ms, 2026-12-02). Before the loads were issued a tile ahead: head size 8 2.55 at (BH 1, BT 16,
    1 warp), 3.26 at (2, 8, 4 warps), 4.92 at (4, 8, 4); head size 2 1.10 at (8, 16, 1), 1.49 at (32, 8, 4), 1.74
    at (128, 8, 4); larger tiles spill registers (up to 66 ms). With them, at (BT 16 / 8 / 32, 1 warp): head size 8
    1.92 / 1.88 / 2.46, 4 1.39 / 1.20 / 1.41, 2 0.90 / 0.78 / 1.57, 1 0.94 / 0.74 / 1.62; BT 8 again on 2026-12-03
    (GPU tests pass at both): 8 1.90, 4 1.23, 2 0.85, 1 1.05, so one-way scans keep BT 16. Scans along a grid's
    lines take BT 8 (bt): with the V-major backward (2026-12-04, head size 8, 256 images of 16 x 16 tokens, 24 / 48
    heads, fwd+bwd) 2.37 / 4.69 ms at BT 16 against 1.86 / 3.66 at BT 8, while one-way at head size 4 / 8 it was
    1.28 / 1.41 against 1.32 / 1.37."""
    tiles = _overrides()
    KP, VP = pow2(K), pow2(V)
    return dict(KP=KP, VP=VP, BH=tiles.get("BH", min(pow2(H), max(32 // (KP * VP), 1))), BT=tiles.get("BT", bt),
                warps=4 if INTERPRET else tiles.get("warps", 1),
                maxnreg=None if INTERPRET else tiles.get("maxnreg") or None, NS=tiles.get("NS", 0))  # fmt: skip


def _overrides() -> dict[str, int]:
    """The tile experiment's overrides, HGRN_SMALL_TILES="BH=2,BT=8,..." as a dict."""
    return {k: int(x) for k, x in (i.split("=") for i in os.environ.get("HGRN_SMALL_TILES", "").split(",") if i)}


def make_plan(q: Tensor, v: Tensor, cu_seqlens: Tensor | None, segments: int | None = None, save: bool = True) -> Plan:
    """The plan of a one-way scan: segments while the programs would not fill the GPU four times over. A forward
    that saves nothing for a backward (save False) takes 8-step tiles from head size 2: on an H200 (2026-12-04, B 8,
    T 2048, d 2048, bf16) the forward at head size 2 / 4 / 8 ran 0.33 / 0.40 / 0.44 ms at 16 steps against 0.23-0.27
    / 0.29 / 0.32 at 8, and 0.31-0.33 against 0.34-0.38 at head size 1; with a backward 16 stays (its sums above)."""
    T, H, K = q.shape[1:]
    V = v.shape[-1]
    tiles = _tiles(H, K, V, bt=16 if save or K * V < 4 else 8)
    BT = tiles["BT"]
    n_seqs = q.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
    if segments is None:
        programs = n_seqs * triton.cdiv(H, tiles["BH"])
        target = 2 * target_programs(q.device)
        segments = 1 if cu_seqlens is not None or programs >= target else triton.cdiv(target, programs)
    segments = max(1, min(tiles.pop("NS") or segments, triton.cdiv(T, 4 * BT)))
    L = triton.cdiv(triton.cdiv(max(T, 1), segments), BT) * BT
    NS = triton.cdiv(T, L) if T else 1
    longest = L if cu_seqlens is None else int(cu_seqlens.diff().max()) if n_seqs else 0
    return Plan(n_seqs, T, NS, L, max(triton.cdiv(longest, BT), 1), **tiles)


def line_plans(q: Tensor, v: Tensor, grid: tuple[int, int] | None) -> list[Plan] | None:
    """The launches of a scan both ways along each line: the sequences (grid None), or the rows (segments of the
    grid's width) and then the columns (strided) of a (height, width) grid. None where a one-way plan would cut
    the sequences into segments (too few lines to fill the GPU: each direction then runs on its own). PAR=1 in
    HGRN_SMALL_TILES: grids of lines of at most LINE tokens in the parallel form where K = V divides LINE and H K is
    a multiple of LINE (BH slabs of LINE channels per program, one warp each). Offline sm_90 SASS (Triton 3.6) at
    256 x 256 x 48 x 8, warp-instructions per line and head, both ways: forward 620 (86 registers), backward 1,168
    (196), against the scan's 1,229 (96) and 3,614 (140); one head per program padded to 16 channels: 1,104 / 1,960.
    Untimed."""
    if grid is None:
        plan = make_plan(q, v, None)
        return [plan] if plan.NS == 1 else None
    B, T, H, K = q.shape
    tiles = _tiles(H, K, v.shape[-1], bt=8)
    tiles.pop("NS")
    height, width = grid
    overrides = _overrides()
    V = v.shape[-1]
    parallel = bool(overrides.get("PAR")) and max(grid) <= LINE and K == V and LINE % K == 0 and H * K % LINE == 0
    if parallel:  # BH slabs of LINE channels per program (the plan counts heads), one warp each
        slabs = overrides.get("BH", 1)
        warps = tiles["warps"] if INTERPRET else overrides.get("warps", slabs)
        tiles.update(BH=slabs * LINE // K, BT=LINE, warps=warps)
    BT = tiles["BT"]
    rows = Plan(B, T, height, width, triton.cdiv(width, BT), **tiles, parallel=parallel)
    return [rows, Plan(B, T, width, height, triton.cdiv(height, BT), **tiles, strided=True, parallel=parallel)]


def _forward(
    q, kz, lg, lb, v, h0, scale: float, gate: int, reverse: bool, cu, plan: Plan, want_final: bool, save: bool
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """(o, the final state or None, the states entering each tile but the first (save) or None, the states
    entering each pseudo-sequence [P, H, K, V] or None (zeros), the segments' log decays [P, H, K] (segmented
    runs) or None)."""
    H, K, V = *q.shape[2:], v.shape[-1]
    inputs, seq, shape, grid = _launch(q, kz, lg, lb, v, scale, gate, reverse, cu, plan)
    o = v.new_empty(v.shape)
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


# The one-way scan as torch.library custom ops (opaque nodes that torch.compile keeps in its graph), paired by the
# autograd formula. Custom ops return no None and alias no input: absent results are empty tensors, and a
# one-segment scan's starting state is h0 itself, taken again in the backward.
FORWARD_SCHEMA = (
    "(Tensor q, Tensor kz, Tensor? lg, Tensor? lb, Tensor v, Tensor? h0, Tensor? cu, float scale, int gate, "
    "bool reverse, bool want_final, int? segments, bool save) "
    "-> (Tensor o, Tensor final, Tensor saved, Tensor starts, Tensor logdec)"
)
BACKWARD_SCHEMA = (
    "(Tensor do, Tensor? dht, Tensor q, Tensor kz, Tensor? lg, Tensor? lb, Tensor v, Tensor? h0, Tensor saved, "
    "Tensor starts, Tensor logdec, Tensor? cu, float scale, int gate, bool reverse, int? segments) "
    "-> (Tensor dq, Tensor dkz, Tensor dlg, Tensor dlb, Tensor dv, Tensor dh0)"
)


@torch.library.custom_op("hgrn::small_head_forward", mutates_args=(), schema=FORWARD_SCHEMA)
def recurrence_forward(q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, segments, save):
    """o, the final state, the tile states (save, for the backward), the segments' starting states and log decays;
    each an empty tensor where there is none. q, kz, lg, v as `_read_in_place` leaves them, lb and h0 contiguous."""
    together(recurrence_forward, (q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, segments, save))
    plan = make_plan(q, v, cu, segments, save)
    o, final, saved, starts, logdec = _forward(q, kz, lg, lb, v, h0, scale, gate, reverse, cu, plan, want_final, save)
    return o, *or_empty((final, saved, starts if plan.NS > 1 else None, logdec), q)


@recurrence_forward.register_fake
def _(q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, segments, save):
    if cu is not None:
        raise NotImplementedError("cu_seqlens under torch.compile: the tile count is read from it; run it eagerly")
    ahead(recurrence_forward, (q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, segments, save))
    plan = make_plan(q, v, cu, segments, save)
    H, K, V = *q.shape[2:], v.shape[-1]
    segmented = plan.NS > 1
    final = q.new_empty(plan.n_seqs, H, K, V, dtype=torch.float32) if want_final else None
    saved = q.new_empty(plan.P, max(plan.NTS - 1, 1), H, K, V, dtype=torch.float32) if save else None
    starts = q.new_empty(plan.P, H, K, V, dtype=torch.float32) if segmented else None
    logdec = q.new_empty(plan.P, H, K, dtype=torch.float32) if segmented else None
    return torch.empty_like(v), *or_empty((final, saved, starts, logdec), q)


@torch.library.custom_op("hgrn::small_head_backward", mutates_args=(), schema=BACKWARD_SCHEMA)
def recurrence_backward(do, dht, q, kz, lg, lb, v, h0, saved, starts, logdec, cu, scale, gate, reverse, segments):
    """The gradients of q, kz, lg, lb, v and h0 (empty tensors for absent inputs)."""
    together(recurrence_backward, (do, dht, q, kz, lg, lb, v, h0, saved, starts, logdec, cu, scale, gate, reverse,
                                   segments))  # fmt: skip
    plan = make_plan(q, v, cu, segments)
    starts = starts if plan.NS > 1 else h0
    H, K, V = *q.shape[2:], v.shape[-1]
    inputs, seq, shape, grid = _launch(q, kz, lg, lb, v, scale, gate, reverse, cu, plan)
    if plan.NS > 1:  # the gradient reaching each segment's end from the later segments
        local = q.new_empty(plan.P, H, K, V, dtype=torch.float32)
        _bwd_kernel[grid](*inputs, do, q, q, q, q, q, q, q, local, q, *seq, MODE=1, HAS_S0=False, HAS_DHT=False,
                          STORE_DH0=True, **shape)  # fmt: skip
        terminal, dh0 = segment_combine(local, logdec, dht, plan.n_seqs, plan.NS, not reverse, h0 is not None)
    else:
        terminal = dht
        dh0 = q.new_empty(plan.n_seqs, H, K, V, dtype=torch.float32) if h0 is not None else None
    dq, dkz, dlg, dv = _gradients(q, kz, lg, v)
    plb = _bound_sums(q, lb, plan)
    _bwd_kernel[grid](*inputs, do, saved, q if starts is None else starts, q if terminal is None else terminal,
                      dq, dkz, q if dlg is None else dlg, dv, q if plan.NS > 1 or dh0 is None else dh0,
                      q if plb is None else plb, *seq, MODE=0, HAS_S0=starts is not None,
                      HAS_DHT=terminal is not None, STORE_DH0=plan.NS == 1 and dh0 is not None,
                      **shape)  # fmt: skip
    dlb = None if lb is None else plb.sum(0).to(lb.dtype)
    dh0 = None if h0 is None else dh0.to(h0.dtype)
    return or_empty((dq, dkz, dlg, dlb, dv, dh0), q)


@recurrence_backward.register_fake
def _(do, dht, q, kz, lg, lb, v, h0, saved, starts, logdec, cu, scale, gate, reverse, segments):
    ahead(recurrence_backward, (do, dht, q, kz, lg, lb, v, h0, saved, starts, logdec, cu, scale, gate, reverse,
                                segments))  # fmt: skip
    return empty_grads((q, kz, lg, lb, v, h0), q)


def _save_for_backward(ctx, inputs: tuple, output: tuple) -> None:
    q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, segments, _ = inputs
    _, _, saved, starts, logdec = output
    ctx.save_for_backward(q, kz, lg, lb, v, h0, saved, starts, logdec, cu)
    ctx.options = (scale, gate, reverse, want_final, segments)
    ctx.mark_non_differentiable(saved, starts, logdec)  # for the backward, never differentiated
    ctx.set_materialize_grads(False)


def _backward(ctx, do: Tensor | None, dfinal: Tensor | None, *_: Tensor | None) -> tuple[Tensor | None, ...]:
    q, kz, lg, lb, v, h0, saved, starts, logdec, cu = ctx.saved_tensors
    scale, gate, reverse, want_final, segments = ctx.options
    do = v.new_zeros(v.shape) if do is None else do.contiguous()
    dht = dfinal.contiguous() if want_final and dfinal is not None else None
    grads = torch.ops.hgrn.small_head_backward(do, dht, q, kz, lg, lb, v, h0, saved, starts, logdec, cu, scale, gate,
                                               reverse, segments)  # fmt: skip
    return *present_grads((q, kz, lg, lb, v, h0), grads), None, None, None, None, None, None, None


recurrence_forward.register_autograd(_backward, setup_context=_save_for_backward)


DIRECTIONS_FORWARD_SCHEMA = (
    "(Tensor q, Tensor kz, Tensor? lg, Tensor? lb, Tensor v, float scale, int gate, int[]? grid, bool save) "
    "-> (Tensor o, Tensor[] saved)"
)
DIRECTIONS_BACKWARD_SCHEMA = (
    "(Tensor do, Tensor q, Tensor kz, Tensor? lg, Tensor? lb, Tensor v, Tensor[] saved, float scale, int gate, "
    "int[]? grid) -> (Tensor dq, Tensor dkz, Tensor dlg, Tensor dlb, Tensor dv)"
)


@torch.library.custom_op("hgrn::small_head_directions_forward", mutates_args=(), schema=DIRECTIONS_FORWARD_SCHEMA)
def directions_forward(q, kz, lg, lb, v, scale, gate, grid, save):
    """o summed over both ways of every line of `line_plans(q, v, grid)`, and each launch's saved tile states (save;
    an empty tensor for lines of one tile or without save), as custom ops (see recurrence_forward)."""
    together(directions_forward, (q, kz, lg, lb, v, scale, gate, grid, save))
    o, saved = _both_ways(q, kz, lg, lb, v, scale, gate, line_plans(q, v, _grid(grid)), save)
    return o, list(or_empty(saved, q))


@directions_forward.register_fake
def _(q, kz, lg, lb, v, scale, gate, grid, save):
    ahead(directions_forward, (q, kz, lg, lb, v, scale, gate, grid, save))
    plans = line_plans(q, v, _grid(grid))
    saved = [_both_ways_saved(q, v, plan) if save else None for plan in plans]
    return torch.empty_like(v), list(or_empty(saved, q))


@torch.library.custom_op("hgrn::small_head_directions_backward", mutates_args=(), schema=DIRECTIONS_BACKWARD_SCHEMA)
def directions_backward(do, q, kz, lg, lb, v, saved, scale, gate, grid):
    """The gradients of q, kz, lg, lb and v (empty tensors for absent inputs)."""
    together(directions_backward, (do, q, kz, lg, lb, v, saved, scale, gate, grid))
    dq, dkz, dlg, dv = _gradients(q, kz, lg, v)
    dlb = None
    for i, (plan, tiles) in enumerate(zip(line_plans(q, v, _grid(grid)), saved, strict=True)):
        inputs, seq, shape, launch = _launch(q, kz, lg, lb, v, scale, gate, False, None, plan, both=True, acc=i > 0)
        plb = _bound_sums(q, lb, plan)
        if plan.parallel:
            grads = (do, dq, dkz, q if dlg is None else dlg, dv, q if plb is None else plb, tiles)
            _line_bwd_kernel[launch](*inputs, *grads, *seq, **_slabs(shape, q.dtype))
            _line_fallback_bwd_kernel[_fallback_grid(plan)](*inputs, *grads, *seq, plan.P, **_fallback(shape))
        else:
            _bwd_kernel[launch](*inputs, do, q if plan.NTS == 1 else tiles, q, q, dq, dkz, q if dlg is None else dlg,
                                dv, q, q if plb is None else plb, *seq, MODE=0, HAS_S0=False, HAS_DHT=False,
                                STORE_DH0=False, **shape)  # fmt: skip
        if plb is not None:
            dlb = plb.sum(0) if dlb is None else dlb + plb.sum(0)
    dlb = None if dlb is None else dlb.to(lb.dtype)
    return or_empty((dq, dkz, dlg, dlb, dv), q)


@directions_backward.register_fake
def _(do, q, kz, lg, lb, v, saved, scale, gate, grid):
    ahead(directions_backward, (do, q, kz, lg, lb, v, saved, scale, gate, grid))
    return empty_grads((q, kz, lg, lb, v), q)


def _grid(grid: list[int] | None) -> tuple[int, int] | None:
    return None if grid is None else (grid[0], grid[1])


def _save_directions(ctx, inputs: tuple, output: tuple) -> None:
    q, kz, lg, lb, v, scale, gate, grid, _ = inputs
    ctx.save_for_backward(q, kz, lg, lb, v, *output[1])
    ctx.options = (scale, gate, grid)
    ctx.mark_non_differentiable(*output[1])
    ctx.set_materialize_grads(False)


def _directions_backward(ctx, do: Tensor, *_: Tensor | None) -> tuple[Tensor | None, ...]:
    q, kz, lg, lb, v, *saved = ctx.saved_tensors
    scale, gate, grid = ctx.options
    grads = torch.ops.hgrn.small_head_directions_backward(do.contiguous(), q, kz, lg, lb, v, saved, scale, gate, grid)
    return *present_grads((q, kz, lg, lb, v), grads), None, None, None, None


directions_forward.register_autograd(_directions_backward, setup_context=_save_directions)


def _both_ways(q, kz, lg, lb, v, scale: float, gate: int, plans: list[Plan], save: bool) -> tuple[Tensor, list]:
    """(o, what each plan's launch saved for the backward (save) or Nones: the tile states, or for the parallel
    form the steep programs' slots)."""
    o = v.new_empty(v.shape)
    saved = []
    for i, plan in enumerate(plans):
        inputs, seq, shape, grid = _launch(q, kz, lg, lb, v, scale, gate, False, None, plan, both=True, acc=i > 0)
        tiles = _both_ways_saved(q, v, plan) if save or plan.parallel else None
        if plan.parallel:
            tiles.zero_()  # the count; the whole, so that the list's unused slots are defined too
            _line_fwd_kernel[grid](*inputs, o, tiles, *seq, **_slabs(shape, q.dtype))
            _line_fallback_fwd_kernel[_fallback_grid(plan)](*inputs, o, tiles, *seq, plan.P, **_fallback(shape))
            tiles = tiles if save else None
        else:
            _fwd_kernel[grid](*inputs, o, q, q, q if tiles is None else tiles, q, *seq, MODE=0, HAS_H0=False,
                              STORE_HT=False, SAVE=tiles is not None, **shape)  # fmt: skip
        saved.append(tiles)
    return o, saved


def _both_ways_saved(q: Tensor, v: Tensor, plan: Plan) -> Tensor | None:
    """What a launch both ways saves: the tile states [2, P, NTS - 1, H, K, V] (None for lines of one tile), or for
    the parallel form its slots [1 + 2 G P] int32 (G head groups; _line_fwd_kernel)."""
    if plan.parallel:
        return q.new_empty(1 + 2 * triton.cdiv(q.shape[2], plan.BH) * plan.P, dtype=torch.int32)
    if plan.NTS == 1:
        return None
    return q.new_empty(2, plan.P, plan.NTS - 1, *q.shape[2:], v.shape[-1], dtype=torch.float32)


def _fallback_grid(plan: Plan) -> tuple[int]:
    """The programs of the parallel form's second launch (the scan of the steep lines it lists)."""
    return (min(FALLBACK_PROGRAMS, plan.P),)


def _slabs(shape: dict, dtype: torch.dtype) -> dict:
    """The parallel form's constexprs and options from its plan's (heads of K channels): slabs of LINE channels,
    LINE // K heads each (H K a multiple of LINE), one warp per slab unless the plan says otherwise; and the dot
    precision."""
    per = LINE // shape["K"]
    line = {k: x for k, x in shape.items() if k not in ("KP", "VP")}
    return line | dict(H=shape["H"] // per, K=LINE, V=LINE, HK=shape["K"], BH=shape["BH"] // per, DOT=dot_mode(dtype))


def _fallback(shape: dict) -> dict:
    """The second launch's (the scan of the steep lines): the plan's, one warp per head."""
    return shape if INTERPRET else dict(shape, num_warps=shape["BH"])


def _gradients(q, kz, lg, v) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Empty (dq, dk or dz, dlog f or None, dv), contiguous."""
    dlg = None if lg is None else lg.new_empty(lg.shape)
    return q.new_empty(q.shape), kz.new_empty(kz.shape), dlg, v.new_empty(v.shape)


def _bound_sums(q: Tensor, lb: Tensor | None, plan: Plan) -> Tensor | None:
    """Empty per-program sums of the lower bound's gradient, [P, H, K] fp32; None without a bound."""
    return None if lb is None else q.new_empty(plan.P, *lb.shape, dtype=torch.float32)


def _launch(
    q, kz, lg, lb, v, scale: float, gate: int, reverse: bool, cu, plan: Plan, both: bool = False, acc: bool = False
) -> tuple:
    """The kernels' common arguments: (input tensors, sequence arguments, constexprs and launch options, grid). The
    inputs share one token stride (`_read_in_place`), the outputs and do are contiguous; `both`: both ways along
    each line, `acc`: outputs added to what they hold."""
    H, K = q.shape[2:]
    inputs = (q, kz, q if lg is None else lg, q if lb is None else lb, v)
    seq = (q if cu is None else cu, plan.T, plan.NS, plan.L, plan.NTS, q.stride(-3), v.stride(-3), scale)
    shape = dict(H=H, K=K, V=v.shape[-1], KP=plan.KP, VP=plan.VP, BH=plan.BH, BT=plan.BT, GATE=gate,
                 STRIDED=plan.strided, ACC=acc, num_warps=plan.warps, **register_cap(plan.maxnreg))  # fmt: skip
    if not plan.parallel:  # (the parallel form's: _slabs)
        shape.update(REVERSE=reverse, IS_VARLEN=cu is not None, BOTH=both)
    return inputs, seq, shape, (triton.cdiv(H, plan.BH), plan.P)


def _read_in_place(q: Tensor, kz: Tensor, lg: Tensor | None, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """The kernels read [B, T, H, E] inputs with (H, E) packed and tokens evenly spaced, one token stride for q, kz
    and lg (SK) and one for v (SV), so views of a wider projection (chunk(3, -1) of [B, T, 3 d]) are read where they
    lie; anything else is copied contiguous."""

    def readable(t: Tensor, step: int) -> bool:
        B, T, _, E = t.shape
        return t.stride(-1) == 1 and t.stride(-2) == E and t.stride(-3) == step and (B == 1 or t.stride(0) == T * step)

    keys = [t for t in (q, kz, lg) if t is not None]
    if not all(readable(t, q.stride(-3)) for t in keys):
        q, kz, lg = (None if t is None else t.contiguous() for t in (q, kz, lg))
    return q, kz, lg, v if readable(v, v.stride(-3)) else v.contiguous()


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
    (o [B, T, H, V] in v's dtype, the final state [N, H, K, V] in fp32 or None); `segments` overrides the plan.
    The tile states for the backward are saved only where autograd will need them."""
    q, kz, lg, v = _read_in_place(q, kz, lg, v)
    lb, h0 = (None if t is None else t.contiguous() for t in (lb, initial_state))
    save = needs_grad((q, kz, lg, lb, v, h0))
    o, final, *_ = torch.ops.hgrn.small_head_forward(q, kz, lg, lb, v, h0, cu_seqlens, float(scale), gate, reverse,
                                                      output_final_state, segments, save)  # fmt: skip
    return o, final if output_final_state else None


def directions(
    q: Tensor,
    kz: Tensor,
    lg: Tensor | None,
    lb: Tensor | None,
    v: Tensor,
    *,
    gate: int,
    scale: float,
    grid: tuple[int, int] | None,
) -> Tensor:
    """The scans both ways along every line of `line_plans(q, v, grid)` (grid None: the sequences), summed into
    o [B, T, H, V] (v's dtype); arguments as `recurrence`'s, without states. Each line's program walks it forward,
    then backward adding to its o; the grid's columns are read in place (strided) and added to the rows' o; the
    backward adds its gradients the same way."""
    q, kz, lg, v = _read_in_place(q, kz, lg, v)
    lb = None if lb is None else lb.contiguous()
    save = needs_grad((q, kz, lg, lb, v))
    return torch.ops.hgrn.small_head_directions_forward(q, kz, lg, lb, v, float(scale), gate, grid, save)[0]
