"""The chunked GLA / HGRN2 kernels (hgrn.ops.triton.chunk plans and launches them): S_t = diag(f_t) S_{t-1} +
k_t^T v_t, o_t = scale q_t S_t, in chunks of C tokens.

One kernel family serves both gates (GATE constexpr): GLA reads k and log f; HGRN2 reads the gate logits z (and the
lower bound) and forms k = 1 - f and log f in registers, so no k or log f tensor ever exists in memory.

The chunk-local work runs chunk-parallel; only the state recurrence walks the chunks, with its state in registers
(chunk states are never written, except dL/dS in the backward for the gate gradient's per-chunk start):
  forward   prep_kernel       per chunk: gate, g, tril(A), q e^g, k e^{g_C - g}  (saved for the backward)
            walk_fwd_kernel   o = scale (tril(A) v + (q e^g) S);  S <- e^{g_C} S + (k e^{g_C - g})^T v
  backward  walk_rev_kernel   dS <- e^{g_C} dS + scale (q e^g)^T do; dv; xk = v dS^T; dS at each chunk start
            walk_fwd_kernel   yq = do S^T, and dlog f at each chunk start = sum_v dS * S
            pairs_kernel      per chunk: da = do v^T (only where K takes several tiles or V is wide: otherwise the
                              next kernel forms da itself, and it never exists in memory)
            intra_bwd_kernel  per chunk: dq, dk and the gate gradient (GLA: dlog f; HGRN2: dz, and the lower bound's
                              per-chunk partial sums) from da, xk, yq, the chunk-start dlog f and the intra-chunk pairs
  inference infer_kernel      a forward nothing will differentiate: prep and forward walk in one program, nothing
                              saved (one segment, K and V at most 64; the rule's at K 16 and 32, 16 V columns
                              per program)
Long sequences with few heads are cut into segments walked in parallel, joined by segment_combine_kernel.
The intra-chunk pairs e^{g_i - g_j} (g: the chunk-local cumulative log gate) take one of three paths per chunk
(fast, blocked, exact; hgrn.ops.triton.chunk_pairs), so no gate is clamped.
"""

from __future__ import annotations

import triton
import triton.language as tl

from hgrn.ops.triton._common import (
    load_block,
    load_tile,
    lower_bounded_gate,
    mm,
    operand,
    rcp,
    seq_span,
    store_tile,
    tile_tokens,
)
from hgrn.ops.triton.chunk_pairs import chunk_sum, pair_grads, scores
from hgrn.ops.triton.precompile import entry

SPECIALIZE = dict(do_not_specialize=["T", "NS", "L"])  # runtime sizes: one compile serves all


@triton.jit
def _gate_tile(kz, lg, lb, tok, valid, stride, cols, K, GATE: tl.constexpr):
    """(k, log f) for a tile, zero outside the sequence and beyond K."""
    zt = load_tile(kz, tok, valid, stride, cols, K)
    if GATE == 0:
        k = zt
        logf = load_tile(lg, tok, valid, stride, cols, K)
    else:
        lbv = _lower_bound(lb, cols, K, GATE)
        k, logf, _s, _ns, _f = lower_bounded_gate(zt, lbv)
        inside = valid[:, None] & (cols < K)[None, :]
        k = tl.where(inside, k, 0.0)
        logf = tl.where(inside, logf, 0.0)
    return k, logf


@triton.jit
def _lower_bound(lb, cols, K, GATE: tl.constexpr):
    if GATE == 2:
        return tl.load(lb + cols, mask=cols < K, other=0.0).to(tl.float32)[None, :]
    else:
        return 0.0


@triton.jit
def _chunk_index(p, c, h, NCH, H: tl.constexpr, K: tl.constexpr):
    """Offset of chunk c of pseudo-sequence p, head h in a per-chunk [P, NCH, H, K] buffer."""
    return ((p * NCH + c) * H + h).to(tl.int64) * K


@triton.jit
def _chunk_decay(gl, p, c, h, NCH, ck, H: tl.constexpr, K: tl.constexpr):
    """e^{g_C}: chunk c's decay over its steps, columns ck (from prep's per-chunk log decays gl)."""
    return tl.exp(tl.load(gl + _chunk_index(p, c, h, NCH, H, K) + ck, mask=ck < K, other=0.0))


@triton.jit
def _chunk_rows(c, n, bos, h, H: tl.constexpr, C: tl.constexpr, REVERSE: tl.constexpr, FULL: tl.constexpr):
    """Chunk c of head h as (row, each row's token offset (int32), which rows exist): row (int64) is the chunk's first
    token's row of head h, so that in a token-major [.., H, w] tensor the chunk's [C, w] tile starts at ptr + row * w
    and its rows follow at offsets times H w (one scalar base plus constant offsets, not 64-bit arithmetic on every
    element); FULL (every row exists): no row masks."""
    t0, rel, valid = tile_tokens(c * C, n, bos, 1, C, REVERSE)
    if FULL:
        valid = tl.arange(0, C) < C
    return t0 * H + h, rel, valid


@entry(**SPECIALIZE)
def prep_kernel(q, kz, lg, lb, qi, ks, a, gl, cu, T, NS, L, NCH,
                 H: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, C: tl.constexpr, BLK: tl.constexpr,
                 GATE: tl.constexpr, REVERSE: tl.constexpr, IS_VARLEN: tl.constexpr, DOT: tl.constexpr,
                 EVEN: tl.constexpr):  # fmt: skip
    """Chunk-parallel: the gate, the chunk's cumulative log decay g, and the walks' operands
    q e^g, k e^{g_C - g} and tril(A), A_ij = sum_c q_ic k_jc e^{g_ic - g_jc} (exact on the slow path).
    (g by a scan here: at all of K, chunk_sum's product, then in 3xTF32, measured slower, 0.23 -> 0.37 ms.)
    EVEN: every chunk is full (dense batch, T a multiple of C), so the kernel holds one chunk body, not also the
    masked one: its compilation, the longest of the recurrence's, takes about half as long."""
    c, h, p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, n = seq_span(p, cu, T, NS, L, IS_VARLEN)
    if EVEN:
        if c * C < n:  # a segment may hold fewer chunks than NCH
            _prep_chunk(q, kz, lg, lb, qi, ks, a, gl, bos, n, c, h, p, NCH, H, K, KP, C, BLK, GATE, REVERSE, DOT,
                        True)  # fmt: skip
    elif (c + 1) * C <= n:  # a full chunk (all but a sequence's last): no row masks, a fifth fewer instructions
        _prep_chunk(q, kz, lg, lb, qi, ks, a, gl, bos, n, c, h, p, NCH, H, K, KP, C, BLK, GATE, REVERSE, DOT, True)
    elif c * C < n:
        _prep_chunk(q, kz, lg, lb, qi, ks, a, gl, bos, n, c, h, p, NCH, H, K, KP, C, BLK, GATE, REVERSE, DOT, False)


@triton.jit
def _prep_chunk(q, kz, lg, lb, qi, ks, a, gl, bos, n, c, h, p, NCH,
                H: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, C: tl.constexpr, BLK: tl.constexpr,
                GATE: tl.constexpr, REVERSE: tl.constexpr, DOT: tl.constexpr, FULL: tl.constexpr):  # fmt: skip
    """prep_kernel's work on chunk c (tiles addressed from the chunk's first row, _chunk_rows; FULL: every row
    exists, no masks)."""
    r = tl.arange(0, C)
    row, rel, valid = _chunk_rows(c, n, bos, h, H, C, REVERSE, FULL)
    # No alignment claimed for the columns: Triton then gives each thread whole columns (scalar accesses, not 16-byte
    # vectors across columns), so the cumsum down the chunk is serial in registers instead of a cross-warp scan.
    ck = tl.multiple_of(tl.arange(0, KP), 1)
    k, logf = _gate_tile(kz + row * K, lg + row * K, lb + h * K, rel, valid, H * K, ck, K, GATE)
    g = tl.cumsum(logf, 0)
    glv = tl.sum(logf, 0)
    tl.store(gl + _chunk_index(p, c, h, NCH, H, K) + ck, glv, mask=ck < K)
    qt = load_tile(q + row * K, rel, valid, H * K, ck, K)
    A, qit, kst = scores(qt, k, g, logf, glv, C, BLK, GATE, DOT)
    store_tile(qi + row * K, qit, rel, valid, H * K, ck, K)
    store_tile(ks + row * K, kst, rel, valid, H * K, ck, K)
    store_tile(a + row * C, A, rel, valid, H * C, r, C)


@triton.jit
def _state_tile(ptr, p, h, ck, cv, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, PRESENT: tl.constexpr):
    """The [ck, cv] tile of head h's state of sequence p in a [P, H, K, V] tensor, fp32 (zeros when not PRESENT),
    with its offsets and mask."""
    s_off = (p * H + h).to(tl.int64) * K * V + ck[:, None] * V + cv[None, :]
    s_mask = (ck < K)[:, None] & (cv < V)[None, :]
    if PRESENT:
        S = tl.load(ptr + s_off, mask=s_mask, other=0.0).to(tl.float32)
    else:
        S = tl.zeros([ck.shape[0], cv.shape[0]], tl.float32)
    return S, s_off, s_mask


@entry(**SPECIALIZE)
def walk_fwd_kernel(qi, ks, a, v, do, gl, out, h0, ht, dstates, starts, cu, T, NS, L, NCH, scale,
                     H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BKW: tl.constexpr, BVW: tl.constexpr,
                     C: tl.constexpr, MODE: tl.constexpr, REVERSE: tl.constexpr, IS_VARLEN: tl.constexpr,
                     HAS_H0: tl.constexpr, STORE_HT: tl.constexpr, DOT: tl.constexpr,
                     EVEN: tl.constexpr):  # fmt: skip
    """Forward walk over chunks with a [BKW, BVW] state tile S in registers, S <- e^{g_C} S + (k e^{g_C-g})^T v.

    MODE 0: o = scale (tril(A) v + (q e^g) S)  (BKW = all of K);  MODE 2: the final state only (a segment's own);
    MODE 1: yq = do S^T and dlog f at each chunk's first step, sum_v dL/dS * S, with dL/dS from the reverse walk
    (dstates), all of V. EVEN (every chunk full: dense batch, T a multiple of C): no row masks (_chunk_rows)."""
    it, h, p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_v: tl.constexpr = (V + BVW - 1) // BVW
    ck = (it // n_v) * BKW + tl.arange(0, BKW)
    cv = (it % n_v) * BVW + tl.arange(0, BVW)
    bos, n = seq_span(p, cu, T, NS, L, IS_VARLEN)
    S, s_off, s_mask = _state_tile(h0, p, h, ck, cv, H, K, V, HAS_H0)
    for c in range(0, tl.cdiv(n, C)):
        row, tok, valid = _chunk_rows(c, n, bos, h, H, C, REVERSE, EVEN)
        kst = operand(load_block(ks + row * K, tok, valid, H * K, ck, K), DOT)
        vt = operand(load_block(v + row * V, tok, valid, H * V, cv, V), DOT)
        decay = _chunk_decay(gl, p, c, h, NCH, ck, H, K)
        if MODE == 0:
            qit = operand(load_block(qi + row * K, tok, valid, H * K, ck, K), DOT)
            At = operand(load_block(a + row * C, tok, valid, H * C, tl.arange(0, C), C), DOT)
            o = scale * (mm(At, vt, DOT) + mm(qit, operand(S, DOT), DOT))
            store_tile(out + row * V, o, tok, valid, H * V, cv, V)
        elif MODE == 1:
            dot = operand(load_block(do + row * V, tok, valid, H * V, cv, V), DOT)
            store_tile(out + row * K, mm(dot, tl.trans(operand(S, DOT)), DOT), tok, valid, H * K, ck, K)
            ci = _chunk_index(p, c, h, NCH, H, K)
            dS = tl.load(dstates + ci * V + ck[:, None] * V + cv[None, :], mask=s_mask, other=0.0).to(tl.float32)
            tl.store(starts + ci + ck, tl.sum(dS * S, 1), mask=ck < K)
        S = S * decay[:, None] + mm(tl.trans(kst), vt, DOT)
    if STORE_HT:
        tl.store(ht + s_off, S, mask=s_mask)


@entry(**SPECIALIZE)
def infer_kernel(q, kz, lg, lb, v, out, h0, ht, cu, T, NS, L, scale,
                  H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr, BVW: tl.constexpr,
                  C: tl.constexpr, BLK: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr,
                  IS_VARLEN: tl.constexpr, HAS_H0: tl.constexpr, STORE_HT: tl.constexpr,
                  DOT: tl.constexpr, EVEN: tl.constexpr):  # fmt: skip
    """The forward without a backward to feed: the prep kernel's work and the forward walk's in one program per
    (V tile, head, sequence), so q e^g, k e^{g_C - g}, tril(A) and the chunk decays live only in registers (at head
    size 16 and 32-row chunks, A alone is 2x q's size in memory). The same helpers as prep + walk, so the same path
    (fast, blocked or exact) per chunk and the same rounding; the gate work runs once per V tile."""
    iv, h, p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ck = tl.multiple_of(tl.arange(0, KP), 1)  # whole columns per thread: the cumsum stays in registers (prep)
    cv = iv * BVW + tl.arange(0, BVW)
    # Where v's tile has q's shape, its columns claim no alignment either: its 16-byte vectors would set every tile's
    # layout (rows over lanes, so the cumsum and the blocked path's per-block values cross lanes; offline sm_90 at
    # K 16: 5,056 -> 4,608 instructions, 265 -> 212 MUFU; at K 32, whose tiles differ, it would add 72 instructions)
    if BVW == KP:
        cv = tl.multiple_of(cv, 1)
    bos, n = seq_span(p, cu, T, NS, L, IS_VARLEN)
    S, s_off, s_mask = _state_tile(h0, p, h, ck, cv, H, K, V, HAS_H0)
    for c in range(0, tl.cdiv(n, C)):
        row, tok, valid = _chunk_rows(c, n, bos, h, H, C, REVERSE, EVEN)
        k, logf = _gate_tile(kz + row * K, lg + row * K, lb + h * K, tok, valid, H * K, ck, K, GATE)
        glv = tl.sum(logf, 0)
        qt = load_tile(q + row * K, tok, valid, H * K, ck, K)
        A, qit, kst = scores(qt, k, tl.cumsum(logf, 0), logf, glv, C, BLK, GATE, DOT)
        vt = operand(load_block(v + row * V, tok, valid, H * V, cv, V), DOT)
        o = scale * (mm(operand(A, DOT), vt, DOT) + mm(qit, operand(S, DOT), DOT))
        store_tile(out + row * V, o, tok, valid, H * V, cv, V)
        S = S * tl.exp(glv)[:, None] + mm(tl.trans(kst), vt, DOT)
    if STORE_HT:
        tl.store(ht + s_off, S, mask=s_mask)


@entry(**SPECIALIZE)
def walk_rev_kernel(qi, ks, a, v, do, gl, dv, xk, dstates, dht, dh0, cu, T, NS, L, NCH, scale,
                     H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr, BVW: tl.constexpr,
                     C: tl.constexpr, MODE: tl.constexpr, REVERSE: tl.constexpr, IS_VARLEN: tl.constexpr,
                     HAS_DHT: tl.constexpr, STORE_DH0: tl.constexpr, ATOMIC: tl.constexpr,
                     DOT: tl.constexpr, EVEN: tl.constexpr):  # fmt: skip
    """Reverse walk with dS = dL/dS (all of K, BVW columns of V), dS <- e^{g_C} dS + scale (q e^g)^T do.

    MODE 0: dv = scale tril(A)^T do + (k e^{g_C-g}) dS, xk = v dS^T (summed over V tiles: ATOMIC), and dstates,
    dS at each chunk's start; MODE 2: dS at the start only. STORE_DH0 keeps dS at the start (dL/d initial state)."""
    iv, h, p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    ck = tl.arange(0, KP)
    cv = iv * BVW + tl.arange(0, BVW)
    bos, n = seq_span(p, cu, T, NS, L, IS_VARLEN)
    dS, s_off, s_mask = _state_tile(dht, p, h, ck, cv, H, K, V, HAS_DHT)
    n_chunks = tl.cdiv(n, C)
    for cc in range(0, n_chunks):
        c = n_chunks - 1 - cc
        row, tok, valid = _chunk_rows(c, n, bos, h, H, C, REVERSE, EVEN)
        qit = operand(load_block(qi + row * K, tok, valid, H * K, ck, K), DOT)
        dot = operand(load_block(do + row * V, tok, valid, H * V, cv, V), DOT)
        decay = _chunk_decay(gl, p, c, h, NCH, ck, H, K)
        if MODE == 0:
            kst = operand(load_block(ks + row * K, tok, valid, H * K, ck, K), DOT)
            At = operand(load_block(a + row * C, tok, valid, H * C, tl.arange(0, C), C), DOT)
            vt = operand(load_block(v + row * V, tok, valid, H * V, cv, V), DOT)
            dS_op = operand(dS, DOT)
            store_tile(dv + row * V, scale * mm(tl.trans(At), dot, DOT) + mm(kst, dS_op, DOT), tok, valid, H * V, cv, V)
            part = mm(vt, tl.trans(dS_op), DOT)
            ptrs = xk + row * K + tok[:, None] * (H * K) + ck[None, :]
            if ATOMIC:
                tl.atomic_add(ptrs, part, mask=valid[:, None] & (ck < K)[None, :])
            else:
                tl.store(ptrs, part.to(xk.dtype.element_ty), mask=valid[:, None] & (ck < K)[None, :])
        dS = dS * decay[:, None] + scale * mm(tl.trans(qit), dot, DOT)
        if MODE == 0:
            ci = _chunk_index(p, c, h, NCH, H, K) * V
            tl.store(dstates + ci + ck[:, None] * V + cv[None, :], dS.to(dstates.dtype.element_ty), mask=s_mask)
    if STORE_DH0:
        tl.store(dh0 + s_off, dS, mask=s_mask)


@triton.jit
def _do_vt(v, do, tok, valid, H: tl.constexpr, V: tl.constexpr, VP: tl.constexpr, DOT: tl.constexpr):
    """da = do v^T [C, C] over one chunk's rows (v and do at one head's columns): the intra-chunk pairs' weights."""
    cv = tl.arange(0, VP)
    vt = operand(load_block(v, tok, valid, H * V, cv, V), DOT)
    return mm(operand(load_block(do, tok, valid, H * V, cv, V), DOT), tl.trans(vt), DOT)


@entry(**SPECIALIZE)
def pairs_kernel(v, do, da, cu, T, NS, L, H: tl.constexpr, V: tl.constexpr, VP: tl.constexpr, C: tl.constexpr,
                  REVERSE: tl.constexpr, IS_VARLEN: tl.constexpr, DOT: tl.constexpr,
                  EVEN: tl.constexpr):  # fmt: skip
    """Chunk-parallel: da = do v^T within each chunk (diagonal included), once per chunk, so that the intra-chunk
    backward, which runs once per K tile, never reads v or do (inside a walk this product cost more than the
    walk's own step: it lengthens the sequential chain)."""
    c, h, p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, n = seq_span(p, cu, T, NS, L, IS_VARLEN)
    if c * C < n:
        row, tok, valid = _chunk_rows(c, n, bos, h, H, C, REVERSE, EVEN)
        store_tile(da + row * C, _do_vt(v + row * V, do + row * V, tok, valid, H, V, VP, DOT), tok, valid, H * C,
                   tl.arange(0, C), C)  # fmt: skip


@entry(**SPECIALIZE)
def intra_bwd_kernel(q, kz, lg, lb, gl, da, v, do, xk, yq, starts, dq, dkz, dlg, plb, cu, T, NS, L, NCH, scale,
                      H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, V: tl.constexpr, VP: tl.constexpr,
                      C: tl.constexpr, BLK: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr,
                      IS_VARLEN: tl.constexpr, INLINE_DA: tl.constexpr, DOT: tl.constexpr,
                      EVEN: tl.constexpr):  # fmt: skip
    """Chunk-parallel gradients for BK columns: dq, dk (GLA) and the gate gradient, one program per (chunk, K tile).

    With da = do v^T (from pairs_kernel, or formed here from v and do: INLINE_DA), xk = v dS_C^T, yq = do S_0^T
    from the walks: dq = scale (intra + e^g yq), dk = scale intra +
    e^{g_C - g} xk. The gate gradient obeys dlog f_{t+1} = dlog f_t + k_t dk_t - q_t dq_t; within the chunk it is
    the exclusive sum of w = k dk - q dq (the i = j pair, equal in both terms, left out so that f ~ 0 sums small
    terms), plus the exact value at the chunk start from the states (`starts`, from the yq walk). Summing only
    within a chunk keeps the bf16-level error of dq, dk from accumulating along the sequence.
    Writes GLA: dk and dlog f; HGRN2: dz = k (s/f dlog f - s dk), and plb, the chunk's lower-bound gradient.
    EVEN as the walks'."""
    n_k: tl.constexpr = (K + BK - 1) // BK
    pid, h, p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    c = pid // n_k
    ck = (pid % n_k) * BK + tl.arange(0, BK)
    bos, n = seq_span(p, cu, T, NS, L, IS_VARLEN)
    if c * C < n:
        ci = _chunk_index(p, c, h, NCH, H, K) + ck
        glv = tl.load(gl + ci, mask=ck < K, other=0.0)  # the chunk's total log decay, from the prep kernel
        _intra_bwd_chunk(q, kz, lg, lb, da, v, do, xk, yq, starts, dq, dkz, dlg, plb, ci, glv, c, n, bos, h, ck,
                         scale, H, K, V, VP, C, BLK, GATE, REVERSE, INLINE_DA, DOT, EVEN)  # fmt: skip


@triton.jit
def _intra_bwd_chunk(q, kz, lg, lb, da, v, do, xk, yq, starts, dq, dkz, dlg, plb, ci, glv, c, n, bos, h, ck, scale,
                     H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, VP: tl.constexpr, C: tl.constexpr,
                     BLK: tl.constexpr, GATE: tl.constexpr, REVERSE: tl.constexpr, INLINE_DA: tl.constexpr,
                     DOT: tl.constexpr, EVEN: tl.constexpr):  # fmt: skip
    """intra_bwd_kernel's gradients of chunk c's K tile ck: dq, dk or dz, dlog f, plb."""
    row, tok, valid = _chunk_rows(c, n, bos, h, H, C, REVERSE, EVEN)
    inside = valid[:, None] & (ck < K)[None, :]
    q, kz, lg, lb = q + row * K, kz + row * K, lg + row * K, lb + h * K
    cc = tl.arange(0, C)
    if INLINE_DA:
        dA = _do_vt(v + row * V, do + row * V, tok, valid, H, V, VP, DOT)
    else:
        dA = load_tile(da + row * C, tok, valid, H * C, cc, C)
    diag = scale * tl.sum(tl.where(cc[:, None] == cc[None, :], dA, 0.0), 1)[:, None]
    dA = tl.where(cc[:, None] > cc[None, :], dA, 0.0)
    zt = load_tile(kz, tok, valid, H * K, ck, K)
    if GATE == 0:
        k = zt
        logf = load_tile(lg, tok, valid, H * K, ck, K)
    else:
        k, logf, s, ns, f = lower_bounded_gate(zt, _lower_bound(lb, ck, K, GATE))
        k = tl.where(inside, k, 0.0)
        logf = tl.where(inside, logf, 0.0)
    g = chunk_sum(logf, C, False)
    qt = load_tile(q, tok, valid, H * K, ck, K)
    intra_q, intra_k, e_in, e_out = pair_grads(dA, qt, k, g, logf, glv, C, BLK, GATE, DOT)
    dqt = scale * (intra_q + e_in * load_tile(yq + row * K, tok, valid, H * K, ck, K))
    dkt = scale * intra_k + e_out * load_tile(xk + row * K, tok, valid, H * K, ck, K)
    dlogf = chunk_sum(k * dkt - qt * dqt, C, True) + tl.load(starts + ci, mask=ck < K, other=0.0)[None, :]
    store_tile(dq + row * K, dqt + diag * k, tok, valid, H * K, ck, K)
    dkt += diag * qt
    if GATE == 0:
        store_tile(dkz + row * K, dkt, tok, valid, H * K, ck, K)
        store_tile(dlg + row * K, dlogf, tok, valid, H * K, ck, K)
    else:
        inv_f = tl.where(inside & (f > 0), rcp(f), 0.0)
        ratio = tl.where(f > 0, s * inv_f, 1.0)  # s / f -> 1 as f -> 0 without a bound
        store_tile(dkz + row * K, k * (ratio * dlogf - s * dkt), tok, valid, H * K, ck, K)
        if GATE == 2:
            tl.store(plb + ci, tl.sum(tl.where(inside, ns * (inv_f * dlogf - dkt), 0.0), 0), mask=ck < K)


@entry()
def segment_combine_kernel(local, logdec, init, before, final, NS, HKV, V,
                            BLOCK: tl.constexpr, DESCENDING: tl.constexpr, HAS_INIT: tl.constexpr,
                            STORE_FINAL: tl.constexpr):  # fmt: skip
    """Join segment states: x <- e^{log decay_s} x + local_s over the segments of one row; store x before each."""
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    b = tl.program_id(1).to(tl.int64)
    mask = e < HKV
    if HAS_INIT:  # noqa: SIM108 (Triton: constexpr branch)
        x = tl.load(init + b * HKV + e, mask=mask, other=0.0).to(tl.float32)
    else:
        x = tl.zeros([BLOCK], tl.float32)
    for i in range(0, NS):
        if DESCENDING:  # noqa: SIM108 (Triton: constexpr branch)
            row = b * NS + NS - 1 - i
        else:
            row = b * NS + i
        tl.store(before + row * HKV + e, x, mask=mask)
        decay = tl.exp(tl.load(logdec + row * (HKV // V) + e // V, mask=mask, other=0.0))
        x = decay * x + tl.load(local + row * HKV + e, mask=mask, other=0.0)
    if STORE_FINAL:
        tl.store(final + b * HKV + e, x, mask=mask)
