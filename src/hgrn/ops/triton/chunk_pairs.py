"""The intra-chunk pairs of the chunked kernels (hgrn.ops.triton.chunk): sums over i >= j of a_i k_j e^{g_i - g_j}
within a chunk of C rows, g the chunk-local cumulative log gate: the forward's scores and the backward's dq, dk.

When a chunk's log-decay range is at most 128 in every channel (the fast path, the usual case) it factorises around
the range's midpoint, e^{g_i - m} e^{m - g_j}, each factor within e^{+-64}, and the pairs are a tensor-core product.
A steeper chunk (gates near 0, e.g. log f = -20 per step) whose g falls (HGRN2 always; GLA when no log f > 0) takes
the blocked path: rows in blocks of BLK; the pairs inside a block factorise around the block's midpoint (a block's
range, BLK - 1 steps, at most 128), one product; the pairs of two blocks are split by halving the chunk, then each
half, down to blocks, one product per level (log2(C / BLK) of them), each pair's weight the product of factors <= 1
around the middle row of the span it straddles, so a factor underflows only where the pair itself is below it. Only
a block whose own range exceeds 128 (at BLK 4, log f below about -42 per step; never for HGRN2 at BLK 2, since its
log f >= -104) or a rising g sends its chunk to the exact log-space path, the pairs masked before the exponential
(slow path).

Every function takes register tiles ([C, K] or [C, C], fp32) and returns them; nothing here touches memory.
"""

from __future__ import annotations

import triton
import triton.language as tl

from hgrn.ops.triton._common import LOG2E, mm, operand, rcp


@triton.jit
def chunk_sum(x, C: tl.constexpr, STRICT: tl.constexpr):
    """sum_{s <= t} x_s (STRICT: s < t) down the chunk axis as tensor-core products with a 0/1 triangle, fp32-accurate:
    x = hi + lo with hi x rounded to TF32's 11 significant bits (exact in TF32, as the triangle is) and lo = x - hi
    exact in fp32, so tri @ hi's products are exact and tri @ lo's err by less than 2^-10 of lo (2^-21 of x: the tensor
    cores truncate lo to TF32), both summed in fp32: two TF32 products where 3xTF32 takes three (with the reciprocals of
    `_block_scales` and `_fast_grads`, the intra-chunk backward on an H100, session 63: 0.718 -> 0.697 ms at head size
    16, 0.513 -> 0.495 at 128). Products on the tensor cores rather than a scan: with approximate divisions, 3xTF32 took
    the intra-chunk backward from 0.80 to 0.66 ms at head size 128 on an H200 (session 2); a scan, tried on an H100 in
    sessions 32-33: 2.30 against 2.21 ms at head size 16. The strict form never adds x_t itself, so a small sum next to
    a large x_t (the last step, carrying the final-state gradient) is not lost to cancellation."""
    r = tl.arange(0, C)
    if STRICT:  # noqa: SIM108 (Triton: constexpr branch)
        keep = r[:, None] > r[None, :]
    else:
        keep = r[:, None] >= r[None, :]
    tri = tl.where(keep, 1.0, 0.0)
    hi = ((x.to(tl.uint32, bitcast=True) + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return tl.dot(tri, x - hi, tl.dot(tri, hi, input_precision="tf32"), input_precision="tf32")


@triton.jit
def midpoint(g, glv, GATE: tl.constexpr):
    """(fast, m): the chunk factorises around m = the middle of each channel's log-decay range when every range is
    at most 128 (so e^{+-(g - m)} stay within e^{+-64}) and m itself is moderate. HGRN2's log f <= 0, so g falls
    from at most 0 to g_C and m = g_C / 2 needs no reductions along the chunk; GLA's log gate may have any sign."""
    if GATE == 0:
        gmin = tl.min(g, 0)
        gmax = tl.max(g, 0)
        mid = 0.5 * (gmin + gmax)
        fast = (tl.max(gmax - gmin, 0) <= 128.0) & (tl.max(tl.abs(mid), 0) <= 80.0)
    else:
        mid = 0.5 * glv
        fast = tl.min(glv, 0) >= -128.0
    return fast, mid


@triton.jit
def _per_row(x, C: tl.constexpr, BLK: tl.constexpr):
    """Per-block values x [C // BLK, W] repeated for each row of their block: [C, W]."""
    W: tl.constexpr = x.shape[1]
    return tl.reshape(tl.broadcast_to(x[:, None, :], (C // BLK, BLK, W)), (C, W))


@triton.jit
def block_ends(g, logf, C: tl.constexpr, BLK: tl.constexpr, GATE: tl.constexpr):
    """(g at each block's first row, g at its last row), [C // BLK, W] each, and whether the blocked path applies:
    g falls (HGRN2's log f <= 0 always; GLA's when no log f is positive) and every block's range is at most 128, so
    that its midpoint factorisation stays within e^{+-64}."""
    W: tl.constexpr = g.shape[1]
    g3 = tl.reshape(g, (C // BLK, BLK, W))
    row = tl.arange(0, BLK)[None, :, None]
    first = tl.sum(tl.where(row == 0, g3, 0.0), 1)
    last = tl.sum(tl.where(row == BLK - 1, g3, 0.0), 1)
    ok = tl.min(tl.min(last - first, 1), 0) >= -128.0
    if GATE == 0:
        ok = ok & (tl.max(tl.max(logf, 1), 0) <= 0.0)
    return first, last, ok


@triton.jit
def _halves(first, last, C: tl.constexpr, BLK: tl.constexpr, SPAN: tl.constexpr):
    """One level of the blocked path: spans of SPAN rows, each cut in halves at its middle row p. For the pairs with
    the row in a span's second half and the column in its first half, e^{g_i - g_j} = e^{g_i - g_s(I)}
    e^{g_s(I) - g_p} e^{g_p - g_e(J)} e^{g_e(J) - g_j} (I, J: the rows' blocks, s / e: a block's first / last row).
    Returns the middle factors per row, [C, W] each: e^{g_s(I) - g_p} on second-half rows, e^{g_p - g_e(J)} on
    first-half rows, 0 elsewhere; g falls, so each is <= 1."""
    NB: tl.constexpr = C // BLK
    PER: tl.constexpr = SPAN // BLK  # blocks per span
    W: tl.constexpr = first.shape[1]
    spans = tl.reshape(first, (NB // PER, PER, W))
    g_p = tl.sum(tl.where(tl.arange(0, PER)[None, :, None] == PER // 2, spans, 0.0), 1)
    g_p = _per_row(g_p, NB, PER)
    second = (tl.arange(0, NB) % PER >= PER // 2)[:, None]
    # One exponential for both halves: these [NB, W] vectors sit replicated over 4 lanes (at K 16, 1 warp), so each
    # costs as much as a whole tile (H100, 2026-12-07, every chunk steep, kernel sums of a forward + backward: K 32
    # 1.741 -> 1.692 ms, K 16 1.723 -> 1.718; the same values bit for bit)
    factor = _per_row(tl.exp(tl.where(second, first - g_p, g_p - last)), C, BLK)
    second_row = _per_row(tl.broadcast_to(second, (NB, W)), C, BLK)  # [C, W], as factor
    return tl.where(second_row, factor, 0.0), tl.where(second_row, 0.0, factor)


@triton.jit
def _block_scales(g, first, last, C: tl.constexpr, BLK: tl.constexpr):
    """(e^{g - m}, e^{m - g}, e^{(g_e - g_s) / 2}) per row, [C, W] each: m the midpoint of the row's block, s / e its
    first / last row. The first two factorise the pairs inside a block (each within e^{+-64}, so the second is the
    first's approximate reciprocal, one MUFU op like an exponential but without its range reduction); with the third,
    <= 1, they give e^{g - g_s} and e^{g_e - g} (the halving levels' row factors) from one exponential per block
    instead of two more per element."""
    up = tl.exp(g - _per_row(0.5 * (first + last), C, BLK))
    return up, rcp(up), _per_row(tl.exp(0.5 * (last - first)), C, BLK)


@triton.jit
def _cross_blocks(W, aa, kb, first, last, C: tl.constexpr, BLK: tl.constexpr, MODE: tl.constexpr, DOT: tl.constexpr):
    """The pairs of two blocks of the blocked path, with aa = a e^{g - g_s(I)} and kb = k e^{g_e(J) - g} (each row's
    block I, J; s / e: a block's first / last row). Split by halving: the chunk's halves, then each half's halves,
    down to blocks (log2(C / BLK) levels); at each level the pairs that straddle a span's middle row p take the
    middle factors of _halves, so every factor is <= 1 and underflows only where the pair itself is below it: one
    product per level. MODE 0: W (the pairs inside blocks, [C, C]) plus these scores; MODE 1 / 2: with W the pairs'
    weights, dk / dq before their row's e^{g_e - g} / e^{g - g_s}."""
    rows = tl.arange(0, C)
    if MODE == 0:  # noqa: SIM108 (Triton: constexpr branch)
        cross = W
    else:
        cross = tl.zeros_like(aa)
    for level in tl.static_range(8):  # spans C, C / 2, ..., 2 BLK
        if (C >> level) > BLK:
            to_p, from_p = _halves(first, last, C, BLK, C >> level)
            span = (rows[:, None] // (C >> level)) == (rows[None, :] // (C >> level))
            if MODE == 0:
                # A level's product is exactly 0 on the pairs inside a span's halves (to_p or from_p is 0 on their
                # rows), so it accumulates onto the scores in place; outside the spans they keep their value (level
                # 0's span is the whole chunk)
                x, y = operand(aa * to_p, DOT), tl.trans(operand(kb * from_p, DOT))
                cross = mm(x, y, DOT, cross) if level == 0 else tl.where(span, mm(x, y, DOT, cross), cross)
            else:
                Ws = W if level == 0 else tl.where(span, W, 0.0).to(W.dtype)
                if MODE == 1:
                    cross += from_p * mm(tl.trans(Ws), operand(aa * to_p, DOT), DOT)
                else:
                    cross += to_p * mm(Ws, operand(kb * from_p, DOT), DOT)
    return cross


@triton.jit
def _blocked_scores(a, k, g, gl, first, last, C: tl.constexpr, BLK: tl.constexpr, DOT: tl.constexpr):
    """`scores` on the blocked path (a falling g, blocks of BLK rows, each block's range at most 128; first, last:
    `block_ends`): A's pairs inside a block factorise around the block's midpoint m, e^{g_i - m} e^{m - g_j} (within
    e^{+-64}), one product; _cross_blocks adds those of two blocks onto them. q e^g and k e^{g_C - g} are formed from
    the same per-block factors, so a, k and g are not needed after them (fewer live registers)."""
    blk = tl.arange(0, C) // BLK
    up, down, half = _block_scales(g, first, last, C, BLK)
    am, km = a * up, k * down
    aa, kb = am * half, km * half
    inside = mm(operand(am, DOT), tl.trans(operand(km, DOT)), DOT)
    A = _cross_blocks(tl.where(blk[:, None] == blk[None, :], inside, 0.0), aa, kb, first, last, C, BLK, 0, DOT)
    qi = operand(aa * _per_row(tl.exp(first), C, BLK), DOT)
    ks = operand(kb * _per_row(tl.exp(gl[None, :] - last), C, BLK), DOT)
    return A, qi, ks


@triton.jit
def blocked_grads(W, a, k, g, first, last, C: tl.constexpr, BLK: tl.constexpr, MODE: tl.constexpr,
                  DOT: tl.constexpr):  # fmt: skip
    """`pairwise`'s MODE 1 (dk) and 2 (dq) sums on the blocked path (W strictly lower triangular; as
    _blocked_scores)."""
    blk = tl.arange(0, C) // BLK
    up, down, half = _block_scales(g, first, last, C, BLK)
    Wo = operand(W, DOT)
    Wd = tl.where(blk[:, None] == blk[None, :], Wo, 0.0).to(Wo.dtype)
    if MODE == 1:  # the pairs inside blocks first: only their sum and one row factor stay live over the levels
        inside = down * mm(tl.trans(Wd), operand(a * up, DOT), DOT)
        own = down * half
    else:
        inside = up * mm(Wd, operand(k * down, DOT), DOT)
        own = up * half
    return inside + own * _cross_blocks(Wo, a * up * half, k * down * half, first, last, C, BLK, MODE, DOT)


@triton.jit
def scores(qt, k, g, logf, gl, C: tl.constexpr, BLK: tl.constexpr, GATE: tl.constexpr, DOT: tl.constexpr):
    """(tril(A), q e^g, k e^{g_C - g}) with A_ij = sum_c q_ic k_jc e^{g_ic - g_jc}, each chunk on its own path; the
    last two as dot operands."""
    fast, mid = midpoint(g, gl, GATE)
    if fast:
        A, qi, ks = _fast_scores(qt, k, g, gl, mid, DOT)
    else:
        A, qi, ks = _steep_scores(qt, k, g, logf, gl, C, BLK, GATE, DOT)
    causal = tl.arange(0, C)[:, None] >= tl.arange(0, C)[None, :]
    return tl.where(causal, A, 0.0), qi, ks


@triton.jit
def _fast_scores(qt, k, g, gl, mid, DOT: tl.constexpr):
    """`scores` on the fast path (A not yet masked)."""
    g2, mid2 = g * LOG2E, (mid * LOG2E)[None, :]
    up = tl.exp2(g2 - mid2)
    qa = qt * up
    ka = k * rcp(up)
    A = mm(operand(qa, DOT), tl.trans(operand(ka, DOT)), DOT)
    return A, operand(qa * tl.exp(mid)[None, :], DOT), operand(ka * tl.exp(gl - mid)[None, :], DOT)


@triton.jit
def _steep_scores(qt, k, g, logf, gl, C: tl.constexpr, BLK: tl.constexpr, GATE: tl.constexpr, DOT: tl.constexpr):
    """`scores` on the blocked path where it applies, else the exact one (A not yet masked)."""
    first, last, blocked = block_ends(g, logf, C, BLK, GATE)
    if blocked:
        A, qi, ks = _blocked_scores(qt, k, g, gl, first, last, C, BLK, DOT)
    else:
        A = pairwise(0.0, qt, k, g, C, 0)
        qi = operand(qt * tl.exp(g), DOT)
        ks = operand(k * tl.exp(gl[None, :] - g), DOT)
    return A, qi, ks


@triton.jit
def pair_grads(dA, qt, k, g, logf, glv, C: tl.constexpr, BLK: tl.constexpr, GATE: tl.constexpr, DOT: tl.constexpr):
    """The intra-chunk backward's (sum_j dA_ij k_j e^{g_i - g_j}, sum_i dA_ij q_i e^{g_i - g_j}, e^g, e^{g_C - g}),
    dA strictly lower triangular, each chunk on its own path (as `scores`)."""
    fast, mid = midpoint(g, glv, GATE)
    if fast:
        intra_q, intra_k, e_in, e_out = _fast_grads(dA, qt, k, g, glv, mid, DOT)
    else:
        intra_q, intra_k, e_in, e_out = _steep_grads(dA, qt, k, g, logf, glv, C, BLK, GATE, DOT)
    return intra_q, intra_k, e_in, e_out


@triton.jit
def _fast_grads(dA, qt, k, g, glv, mid, DOT: tl.constexpr):
    """`pair_grads` on the fast path."""
    e1 = tl.exp(g - mid[None, :])
    e2 = rcp(e1)
    intra_q = e1 * mm(operand(dA, DOT), operand(k * e2, DOT), DOT)
    intra_k = e2 * mm(tl.trans(operand(dA, DOT)), operand(qt * e1, DOT), DOT)
    return intra_q, intra_k, e1 * tl.exp(mid)[None, :], e2 * tl.exp(glv - mid)[None, :]


@triton.jit
def _steep_grads(dA, qt, k, g, logf, glv, C: tl.constexpr, BLK: tl.constexpr, GATE: tl.constexpr,
                 DOT: tl.constexpr):  # fmt: skip
    """`pair_grads` on the blocked path where it applies, else the exact one."""
    first, last, blocked = block_ends(g, logf, C, BLK, GATE)
    if blocked:
        intra_q = blocked_grads(dA, qt, k, g, first, last, C, BLK, 2, DOT)
        intra_k = blocked_grads(dA, qt, k, g, first, last, C, BLK, 1, DOT)
    else:
        intra_q = pairwise(dA, qt, k, g, C, 2)
        intra_k = pairwise(dA, qt, k, g, C, 1)
    return intra_q, intra_k, tl.exp(g), tl.exp(glv[None, :] - g)


@triton.jit
def pairwise(W, a, k, g, C: tl.constexpr, MODE: tl.constexpr):
    """Exact log-space intra-chunk sums (the slow path), one source row j at a time, all in registers:

    MODE 0: scores[i, j] = sum_c a_ic k_jc e^{g_ic - g_jc}       (i >= j; W unused)
    MODE 1: dk[j, c]     = sum_{i >= j} W_ij a_ic e^{g_ic - g_jc}
    MODE 2: dq[i, c]     = sum_{j <= i} W_ij k_jc e^{g_ic - g_jc}
    The exponent is masked to -inf for i < j before the exponential, so no pair can overflow.
    """
    rows = tl.arange(0, C)
    if MODE == 0:  # noqa: SIM108 (Triton: constexpr branch)
        out = tl.zeros([C, C], tl.float32)
    else:
        out = tl.zeros_like(g)
    for j in range(0, C):
        pick = (rows == j)[:, None]
        g_j = tl.sum(tl.where(pick, g, 0.0), 0)
        decay = tl.exp(tl.where((rows >= j)[:, None], g - g_j[None, :], float("-inf")))
        if MODE == 0:
            k_j = tl.sum(tl.where(pick, k, 0.0), 0)
            column = tl.sum(a * k_j[None, :] * decay, 1)
            out += tl.where((rows == j)[None, :], column[:, None], 0.0)
        else:
            w_j = tl.sum(tl.where((rows == j)[None, :], W, 0.0), 1)  # W[:, j]
            if MODE == 1:
                out += tl.where(pick, tl.sum(w_j[:, None] * a * decay, 0)[None, :], 0.0)
            else:
                out += w_j[:, None] * tl.sum(tl.where(pick, k, 0.0), 0)[None, :] * decay
    return out
