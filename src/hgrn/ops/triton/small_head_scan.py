"""The small-head scan's kernels (hgrn.ops.triton.small_head plans and launches them): each head's K x V state as
element-wise channels.

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

MODE 1 walks serve long sequences cut into segments (the plan's segment_combine joins them); BOTH walks a line
forward, then backward, adding into the outputs (backward: the gradients) it has just written; STRIDED lines are a
grid's columns, read in place with the grid's width as token step. Inputs are read through their token strides.
The tile helpers here are also the parallel form's (small_head_lines).
"""

from __future__ import annotations

import triton
import triton.language as tl

from hgrn.ops.triton._common import LOG2E, affine, lower_bounded_gate, rcp, seq_span, sigmoid_gate, tile_tokens
from hgrn.ops.triton.precompile import entry

SPECIALIZE = dict(do_not_specialize=["T", "NS", "L", "NTS", "SK", "SV"])  # runtime sizes: one compile serves all


@triton.jit
def tile_offsets(rel, valid, heads, hm, cols, stride, E: tl.constexpr):
    """(int32 offsets from the tile's first token, mask) of a [BT, BH, EP] tile of a [.., H, E] tensor whose tokens
    lie `stride` elements apart; rel: the rows' tokens counted from the first's."""
    offs = rel[:, None, None] * stride + heads[None, :, None] * E + cols[None, None, :]
    return offs, valid[:, None, None] & hm[None, :, None] & (cols < E)[None, None, :]


@triton.jit
def load_raw(ptr, t0, rel, valid, heads, hm, cols, stride, E: tl.constexpr):
    """[BT, BH, EP] tile whose first row is token t0 in the tensor's dtype; zeros outside."""
    offs, m = tile_offsets(rel, valid, heads, hm, cols, stride, E)
    return tl.load(ptr + t0 * stride + offs, mask=m, other=0.0)


@triton.jit
def load_tile(ptr, t0, rel, valid, heads, hm, cols, stride, E: tl.constexpr):
    """[BT, BH, EP] fp32 tile whose first row is token t0; zeros outside."""
    return load_raw(ptr, t0, rel, valid, heads, hm, cols, stride, E).to(tl.float32)


@triton.jit
def store_tile(ptr, x, t0, rel, valid, heads, hm, cols, E: tl.constexpr, H: tl.constexpr, ACC: tl.constexpr):
    """x into a [BT, BH, EP] tile (first row: token t0) of a contiguous [.., H, E] tensor, added to what is there
    (ACC)."""
    offs, m = tile_offsets(rel, valid, heads, hm, cols, H * E, E)
    ptr += t0 * (H * E)
    if ACC:
        x += tl.load(ptr + offs, mask=m, other=0.0).to(tl.float32)
    tl.store(ptr + offs, x.to(ptr.dtype.element_ty), mask=m)


@triton.jit
def lower_bound(lb, heads, hm, ck, K: tl.constexpr, GATE: tl.constexpr):
    """The lower bound [1, BH, KP] (GATE 2), else 0."""
    if GATE == 2:
        lbv = tl.load(lb + heads[:, None] * K + ck[None, :], mask=hm[:, None] & (ck < K)[None, :], other=0.0)
        lbv = lbv.to(tl.float32)[None, :, :]
    else:
        lbv = 0.0
    return lbv


@triton.jit
def gate_load_raw(kz, lg, t0, rel, valid, heads, hm, ck, SK, K: tl.constexpr, GATE: tl.constexpr):
    """The raw gate tiles in the inputs' dtype: (k, log f) for GLA, zeros outside; (z, z) for HGRN2, +inf outside
    (k = 0, f = 1: the identity step, so a tile's gates need no mask). Loads issued apart from their use: prefetch."""
    offs, m = tile_offsets(rel, valid, heads, hm, ck, SK, K)
    if GATE == 0:
        zt = tl.load(kz + t0 * SK + offs, mask=m, other=0.0)
        lt = tl.load(lg + t0 * SK + offs, mask=m, other=0.0)
    else:
        zt = tl.load(kz + t0 * SK + offs, mask=m, other=float("inf"))
        lt = zt
    return zt, lt


@triton.jit
def gate_load(kz, lg, t0, rel, valid, heads, hm, ck, SK, K: tl.constexpr, GATE: tl.constexpr):
    """gate_load_raw's tiles in fp32."""
    zt, lt = gate_load_raw(kz, lg, t0, rel, valid, heads, hm, ck, SK, K, GATE)
    return zt.to(tl.float32), lt.to(tl.float32)


@triton.jit
def gate_terms(zt, lt, lbv, valid, hm, ck, K: tl.constexpr, GATE: tl.constexpr):
    """(k, log f, s, ns, f) of a [BT, BH, KP] tile from gate_load's, k = log f = 0 outside (the identity step). GLA
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
def scan_from(f, x, S, BT: tl.constexpr):
    """The states S_t = f_t S_{t-1} + x_t of a [BT, ...] tile entered with S [...]. S is folded into the first row,
    so the scan's products of f go unused and are dropped: one FFMA per step and channel instead of three (the time
    axis lies within each thread). Offline sm_90 SASS, head size 8, 2-D, per line and head: backward 3,750 -> 3,614
    instructions and 168 -> 140 registers, forward 1,324 -> 1,229."""
    first = (tl.arange(0, BT) == 0)[:, None, None, None]
    _, B = tl.associative_scan((f, tl.where(first, x + f * S[None], x)), 0, affine)
    return B


@triton.jit
def suffix_scan_from(f_next, g, U, BT: tl.constexpr):
    """dS_t = f_{t+1} dS_{t+1} + g_t down a [BT, ...] tile from the last row, U = dS at the row after the tile
    (f_next: the rows' f_{t+1}): scan_from between two flips. The flips are register renaming; Triton's reverse
    scan instead cost 640 warp shuffles per tile of the head-size-8 backward (offline sm_90 SASS, triton 3.6: 2,624
    -> 1,976 instructions)."""
    return tl.flip(scan_from(tl.flip(f_next, 0), tl.flip(g, 0), U, BT), 0)


@triton.jit
def row(x, i, BT: tl.constexpr):
    """Row i of a [BT, ...] register tile (a masked sum: register tiles cannot be indexed)."""
    pick = tl.arange(0, BT) == i
    return tl.sum(tl.where(pick[:, None, None, None], x, 0.0), 0)


@triton.jit
def decays(logf, BT: tl.constexpr, BH: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr, VK: tl.constexpr):
    """f = e^{log f} [BT, BH, KP] broadcast over V, to [BT, BH, KP, VP] (VK: [BT, BH, VP, KP]): the scan's inputs
    must share one shape."""
    f = tl.exp2(logf * LOG2E)
    if VK:
        f = tl.broadcast_to(f[:, :, None, :], [BT, BH, VP, KP])
    else:
        f = tl.broadcast_to(f[:, :, :, None], [BT, BH, KP, VP])
    return f


@triton.jit
def program_line(ih, p, cu, T, NS, L, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr,
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
def store_heads(ptr, x, p, heads, hm, ck, H: tl.constexpr, K: tl.constexpr):
    """x [BH, KP], one value per head and channel of line p, into a [P, H, K] buffer (a segment's log decay, the
    lower bound's per-program gradient sums)."""
    k_off = (p * H + heads).to(tl.int64)[:, None] * K + ck[None, :]
    tl.store(ptr + k_off, x, mask=hm[:, None] & (ck < K)[None, :])


@triton.jit
def load_state(ptr, s_off, s_mask, PRESENT: tl.constexpr, BH: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr,
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
def other_way(saved, NTS, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr):
    """Where the reversed scan's saved tile states start (BOTH): after the [P, NTS - 1, H, K, V] of the forward's."""
    return saved + (tl.num_programs(1) * (NTS - 1)).to(tl.int64) * (H * K * V)


@triton.jit
def fwd_walk(q, kz, lg, v, o, saved, S, lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, NTS, SK, SV, scale,
             H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr, VP: tl.constexpr,
             BH: tl.constexpr, BT: tl.constexpr, MODE: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr,
             SAVE: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """One walk along line p from state S; returns (the final state, the line's total log decay [BH, KP] (MODE 1)).
    MODE 0 stores (ACC: adds) o and saves the state entering each tile but the first (SAVE). q and HGRN2's gate
    logits stay in the inputs' dtype until they are broadcast to the states' [BT, BH, KP, VP] layout, where k and f
    are formed, so Triton's layout conversions move them at half the bytes (H100, 2026-12-07, forward kernel time at
    head size 8: 0.316 -> 0.289-0.292 ms, at 4: 0.287-0.288 -> 0.268); v, broadcast over K, is upcast first (left
    16-bit until after its broadcast: 5% slower at 8)."""
    total = tl.zeros([BH, KP], tl.float32)
    # each tile's loads are issued one tile ahead (software pipelining by hand: one warp walks the sequence)
    t0, rel, valid = tile_tokens(0, n, bos, ts, BT, REVERSE)
    zt, lt = gate_load_raw(kz, lg, t0, rel, valid, heads, hm, ck, SK, K, GATE)
    vt = load_tile(v, t0, rel, valid, heads, hm, cv, SV, V)
    qt = load_raw(q, t0, rel, valid, heads, hm, ck, SK, K) if MODE == 0 else vt
    for c in range(0, tl.cdiv(n, BT)):
        t0_n, rel, valid_n = tile_tokens((c + 1) * BT, n, bos, ts, BT, REVERSE)
        zt_n, lt_n = gate_load_raw(kz, lg, t0_n, rel, valid_n, heads, hm, ck, SK, K, GATE)
        vt_n = load_tile(v, t0_n, rel, valid_n, heads, hm, cv, SV, V)
        qt_n = load_raw(q, t0_n, rel, valid_n, heads, hm, ck, SK, K) if MODE == 0 else vt_n
        if SAVE and c > 0:
            tl.store(saved + (p * (NTS - 1) + c - 1).to(tl.int64) * H * K * V + h_off, S, mask=s_mask)
        if MODE == 0 and GATE != 0:  # the logits reach the states' layout in the inputs' dtype; k and f formed there
            k4, _s, _ns, f4 = sigmoid_gate(zt[:, :, :, None].to(tl.float32), lbv[:, :, :, None] if GATE == 2 else 0.0)
            x = k4 * vt[:, :, None, :]
            f = tl.broadcast_to(f4, [BT, BH, KP, VP])
        else:
            k, logf, _s, _ns, _f = gate_terms(zt.to(tl.float32), lt.to(tl.float32), lbv, valid, hm, ck, K, GATE)
            x = k[:, :, :, None] * vt[:, :, None, :]
            f = decays(logf, BT, BH, KP, VP, False)
        states = scan_from(f, x, S, BT)
        if MODE == 0:
            ot = tl.sum(qt[:, :, :, None].to(tl.float32) * states, 2)
            store_tile(o, scale * ot, t0, rel, valid, heads, hm, cv, V, H, ACC)
        else:
            total += tl.sum(logf, 0)
        S = row(states, BT - 1, BT)
        t0, valid, zt, lt, vt, qt = t0_n, valid_n, zt_n, lt_n, vt_n, qt_n
    return S, total


@entry(**SPECIALIZE)
def fwd_kernel(q, kz, lg, lb, v, o, h0, ht, saved, logdec, cu, T, NS, L, NTS, SK, SV, scale,
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
    bos, n, ts, heads, hm, ck, cv, h_off, s_off, s_mask = program_line(
        tl.program_id(0), p, cu, T, NS, L, H, K, V, KP, VP, BH, IS_VARLEN, STRIDED, False
    )
    lbv = lower_bound(lb, heads, hm, ck, K, GATE)
    S = load_state(h0, s_off, s_mask, HAS_H0, BH, KP, VP, False)
    S, total = fwd_walk(q, kz, lg, v, o, saved, S, lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, NTS, SK, SV,
                        scale, H, K, V, KP, VP, BH, BT, MODE, GATE, REVERSE, SAVE, ACC)  # fmt: skip
    if BOTH:
        tl.debug_barrier()  # this program's stores of o are visible to its loads
        fwd_walk(q, kz, lg, v, o, other_way(saved, NTS, H, K, V), tl.zeros([BH, KP, VP], tl.float32), lbv, p, bos,
                 n, ts, heads, hm, ck, cv, h_off, s_mask, NTS, SK, SV, scale, H, K, V, KP, VP, BH, BT, MODE, GATE,
                 True, SAVE, True)  # fmt: skip
    if STORE_HT:
        tl.store(ht + s_off, S, mask=s_mask)
    if MODE == 1:
        store_heads(logdec, total, p, heads, hm, ck, H, K)


@triton.jit
def bwd_loads(q, kz, lg, v, do, r0, n, bos, ts, heads, hm, ck, cv, SK, SV, H: tl.constexpr, K: tl.constexpr,
              V: tl.constexpr, BT: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr):  # fmt: skip
    """The backward's tiles of processing-order rows r0 .. r0 + BT - 1: (the first row's token, the rows' tokens
    from it, which rows exist, which of the rows one step later exist, the raw gate tiles of those later rows, the raw
    gate tiles, q, do, v)."""
    t0, rel, valid = tile_tokens(r0, n, bos, ts, BT, REVERSE)
    t0_x, rel, valid_x = tile_tokens(r0 + 1, n, bos, ts, BT, REVERSE)
    zx, lx = gate_load(kz, lg, t0_x, rel, valid_x, heads, hm, ck, SK, K, GATE)
    zt, lt = gate_load(kz, lg, t0, rel, valid, heads, hm, ck, SK, K, GATE)
    qt = load_raw(q, t0, rel, valid, heads, hm, ck, SK, K)
    dot = load_raw(do, t0, rel, valid, heads, hm, cv, H * V, V)
    vt = load_raw(v, t0, rel, valid, heads, hm, cv, SV, V)
    return t0, rel, valid, valid_x, zx, lx, zt, lt, qt, dot, vt


@triton.jit
def gate_grads(dkz, dlg, dk, dlogf, k, s, ns, f, lb_sum, t0, rel, valid, heads, hm, ck, K: tl.constexpr,
               H: tl.constexpr, GATE: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """Stores (ACC: adds) the gate inputs' gradients of a [BT, BH, KP] tile from dk and dlog f: those two for GLA, dz
    for HGRN2 (gate_terms's k, s, ns, f); returns lb_sum plus the tile's lower-bound gradient sums [BH, KP] (GATE 2)."""
    if GATE == 0:
        store_tile(dkz, dk, t0, rel, valid, heads, hm, ck, K, H, ACC)
        store_tile(dlg, dlogf, t0, rel, valid, heads, hm, ck, K, H, ACC)
    else:
        inside = valid[:, None, None] & hm[None, :, None] & (ck < K)[None, None, :]
        inv_f = tl.where(inside & (f > 0), rcp(f), 0.0)
        ratio = tl.where(f > 0, s * inv_f, 1.0)  # s / f -> 1 as f -> 0 without a bound
        store_tile(dkz, k * (ratio * dlogf - s * dk), t0, rel, valid, heads, hm, ck, K, H, ACC)
        if GATE == 2:
            lb_sum += tl.sum(tl.where(inside, ns * (inv_f * dlogf - dk), 0.0), 0)
    return lb_sum


@triton.jit
def bwd_walk(q, kz, lg, v, do, saved, S0_first, dq, dkz, dlg, dv, U, lb_sum, lbv, p, bos, n, ts, heads, hm, ck, cv,
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
    t0, rel, valid, valid_x, zx, lx, zt, lt, qt, dot, vt = bwd_loads(
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
        t0_n, rel, valid_n, valid_x_n, zx_n, lx_n, zt_n, lt_n, qt_n, dot_n, vt_n = bwd_loads(
            q, kz, lg, v, do, (c - 1) * BT, n, bos, ts, heads, hm, ck, cv, SK, SV, H, K, V, BT, GATE, REVERSE
        )
        _k, logf_next, _s, _ns, _f = gate_terms(zx, lx, lbv, valid_x, hm, ck, K, GATE)
        dot4 = dot[:, :, :, None].to(tl.float32)
        grads = scale * qt[:, :, None, :].to(tl.float32) * dot4
        dS = suffix_scan_from(decays(logf_next, BT, BH, KP, VP, True), grads, U, BT)
        if MODE == 0:
            k, logf, s, ns, f = gate_terms(zt, lt, lbv, valid, hm, ck, K, GATE)
            vt4 = vt[:, :, :, None].to(tl.float32)
            x = k[:, :, None, :] * vt4
            states = scan_from(decays(logf, BT, BH, KP, VP, True), x, S0, BT)
            dkt = tl.sum(dS * vt4, 2)
            dlogf = tl.sum(dS * states, 2) - k * dkt  # sum_v dS (S - k v^T) = sum_v dS f S_{t-1}
            store_tile(dq, scale * tl.sum(states * dot4, 2), t0, rel, valid, heads, hm, ck, K, H, ACC)
            store_tile(dv, tl.sum(dS * k[:, :, None, :], 3), t0, rel, valid, heads, hm, cv, V, H, ACC)
            lb_sum = gate_grads(dkz, dlg, dkt, dlogf, k, s, ns, f, lb_sum, t0, rel, valid, heads, hm, ck, K, H, GATE,
                                ACC)  # fmt: skip
        U = row(dS, 0, BT)
        t0, valid, valid_x, zx, lx, zt, lt = t0_n, valid_n, valid_x_n, zx_n, lx_n, zt_n, lt_n
        qt, dot, vt = qt_n, dot_n, vt_n
    return U, lb_sum


@entry(**SPECIALIZE)
def bwd_kernel(q, kz, lg, lb, v, do, saved, s0, dht, dq, dkz, dlg, dv, dh0, plb, cu, T, NS, L, NTS, SK, SV, scale,
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
    bos, n, ts, heads, hm, ck, cv, h_off, s_off, s_mask = program_line(
        tl.program_id(0), p, cu, T, NS, L, H, K, V, KP, VP, BH, IS_VARLEN, STRIDED, True
    )
    lbv = lower_bound(lb, heads, hm, ck, K, GATE)
    U = load_state(dht, s_off, s_mask, HAS_DHT, BH, KP, VP, True)
    S0 = load_state(s0, s_off, s_mask, HAS_S0, BH, KP, VP, True)
    U, lb_sum = bwd_walk(q, kz, lg, v, do, saved, S0, dq, dkz, dlg, dv, U, tl.zeros([BH, KP], tl.float32), lbv, p,
                         bos, n, ts, heads, hm, ck, cv, h_off, s_mask, NTS, SK, SV, scale, H, K, V, KP, VP, BH, BT,
                         MODE, GATE, REVERSE, ACC)  # fmt: skip
    if BOTH:
        tl.debug_barrier()  # this program's stores of the gradients are visible to its loads
        zeros = tl.zeros([BH, VP, KP], tl.float32)
        _u, lb_sum = bwd_walk(q, kz, lg, v, do, other_way(saved, NTS, H, K, V), zeros, dq, dkz, dlg, dv, zeros,
                              lb_sum, lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, NTS, SK, SV, scale, H, K,
                              V, KP, VP, BH, BT, MODE, GATE, True, True)  # fmt: skip
    if STORE_DH0:  # dL/dS_{-1} = f_0 dS_0 (an empty sequence passes dht through)
        t00, rel0, valid0 = tile_tokens(0, n, bos, ts, BT, REVERSE)
        z0, l0 = gate_load(kz, lg, t00, rel0, valid0, heads, hm, ck, SK, K, GATE)
        _k, logf0, _s, _ns, _f = gate_terms(z0, l0, lbv, valid0, hm, ck, K, GATE)
        f0 = tl.sum(tl.where((tl.arange(0, BT) == 0)[:, None, None], tl.exp(logf0), 0.0), 0)
        tl.store(dh0 + s_off, f0[:, None, :] * U, mask=s_mask)
    if GATE == 2 and MODE == 0:
        store_heads(plb, lb_sum, p, heads, hm, ck, H, K)
