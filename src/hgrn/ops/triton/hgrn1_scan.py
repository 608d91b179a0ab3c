"""HGRN1 scan: h_t = e^{log f_t} e^{i theta} h_{t-1} + x_t, element-wise, real or complex ((re, im) pairs).

Forward of dense batches: a single-pass chained scan with decoupled look-back (Merrill & Garland, as in CUB). Each
program takes one [BT, BD] tile (time block, channel block, sequence), scans the affine maps (a, b) inside it, and
gets the state entering it from the tiles before it in time: their published aggregates, or the first inclusive
prefix it meets. x and log f are read once and h written once, the memory floor of the op, and every tile is in
flight at once instead of ~2 sequential walkers per multiprocessor (a walk over T is latency bound).

Packed batches (cu_seqlens) keep the sequential kernels: one program owns BD channels of one sequence and streams
[BT, BD] tiles through it, the carried h applied after each tile's scan. The backward runs the same scan backwards
in time on (conj a_{t+1}, do_t), chained for dense batches and sequential for packed ones, and forms
dlog f_t = <dh_t, a_t h_{t-1}> and dtheta_t = <dh_t, i a_t h_{t-1}> from the saved output in the same pass.

HGRN2 at expand ratio 1 (heads of one channel: `hgrn2_head_size_one`) is the real scan with x = k v: the same
kernels (GATED) form f and k from the gate logits, store o = scale q h, and save h for the backward, which forms dq,
dv and the gate logits' gradient in the same pass.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hgrn.ops.triton._common import (
    INTERPRET,
    LOG2E,
    affine,
    cdiv,
    empty_grads,
    lower_bounded_gate,
    needs_grad,
    or_empty,
    or_like,
    pow2,
    present_grads,
    seq_span,
    target_programs,
    tile_overrides,
    tokens,
)
from hgrn.ops.triton.precompile import ahead, entry, together


@triton.jit
def _affine_complex(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    return (ar1 * ar2 - ai1 * ai2, ar1 * ai2 + ai1 * ar2, ar2 * br1 - ai2 * bi1 + br2, ar2 * bi1 + ai2 * br1 + bi2)


@triton.jit
def _last_row(t, BT: tl.constexpr):
    return tl.sum(tl.where((tl.arange(0, BT) == BT - 1)[:, None], t, 0.0), 0)


@triton.jit
def _load_values(ptr, tok, m, cd, D: tl.constexpr, COMPLEX: tl.constexpr):
    """[BT, BD] values (real) or a pair of them (re, im) from [.., D] / [.., D, 2] rows, in fp32."""
    if COMPLEX:
        offs = tok[:, None, None] * (2 * D) + cd[None, :, None] * 2 + tl.arange(0, 2)[None, None, :]
        pair = tl.load(ptr + offs, mask=m[:, :, None], other=0.0).to(tl.float32)
        return tl.split(pair)
    else:
        t = tl.load(ptr + tok[:, None] * D + cd[None, :], mask=m, other=0.0).to(tl.float32)
        return t, t


@triton.jit
def _store_values(ptr, re, im, tok, m, cd, D: tl.constexpr, COMPLEX: tl.constexpr):
    if COMPLEX:
        offs = tok[:, None, None] * (2 * D) + cd[None, :, None] * 2 + tl.arange(0, 2)[None, None, :]
        tl.store(ptr + offs, tl.join(re, im).to(ptr.dtype.element_ty), mask=m[:, :, None])
    else:
        tl.store(ptr + tok[:, None] * D + cd[None, :], re.to(ptr.dtype.element_ty), mask=m)


@triton.jit
def _load_real(ptr, tok, m, cd, D: tl.constexpr):
    """A [BT, BD] fp32 tile of a real [.., D] tensor (log f, gate logits, q, v, a saved h); zeros outside m."""
    return tl.load(ptr + tok[:, None] * D + cd[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _load_state(ptr, dm, COMPLEX: tl.constexpr, VOLATILE: tl.constexpr):
    """A [BD] state (re, im) in fp32 (real: im = 0). VOLATILE for one written by another program of the same launch,
    so never a stale L1 line."""
    re = tl.load(ptr, mask=dm, other=0.0, volatile=VOLATILE).to(tl.float32)
    if COMPLEX:  # noqa: SIM108 (Triton: constexpr branch)
        im = tl.load(ptr + 1, mask=dm, other=0.0, volatile=VOLATILE).to(tl.float32)
    else:
        im = tl.zeros_like(re)
    return re, im


@triton.jit
def _store_state(ptr, re, im, dm, COMPLEX: tl.constexpr):
    tl.store(ptr, re, mask=dm)
    if COMPLEX:
        tl.store(ptr + 1, im, mask=dm)


@triton.jit
def _rotation(cs, cd, dm, D: tl.constexpr, COMPLEX: tl.constexpr):
    """cos and sin [BD] of the channels' angles, read from their table cs [2, D] (_cos_sin), or 1 and 0 (real)."""
    if COMPLEX:
        return tl.load(cs + cd, mask=dm, other=1.0), tl.load(cs + D + cd, mask=dm, other=0.0)
    else:
        zero = tl.zeros_like(cd.to(tl.float32))
        return zero + 1.0, zero


@entry(do_not_specialize=["T"])
def _fwd_kernel(x, g, th, o, h0, ht, cu, T, D: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
                COMPLEX: tl.constexpr, REVERSE: tl.constexpr, IS_VARLEN: tl.constexpr, HAS_H0: tl.constexpr,
                STORE_HT: tl.constexpr):  # fmt: skip
    """Packed batches (and T = 0). Sequences of unequal length would need a per-sequence tile count prefix in the
    chained kernel's ticket -> tile map; kept sequential. The next tile's loads are issued before the current tile's
    scan (software pipelining by hand)."""
    idt, p = tl.program_id(0), tl.program_id(1)
    bos, n = seq_span(p, cu, T, 1, T, IS_VARLEN)
    cd = idt * BD + tl.arange(0, BD)
    dm = cd < D
    W: tl.constexpr = 2 if COMPLEX else 1  # values per channel
    s_ptr = p.to(tl.int64) * D * W + cd * W
    h = tl.zeros([BD], tl.float32)
    hi = tl.zeros([BD], tl.float32)
    if HAS_H0:
        h, hi = _load_state(h0 + s_ptr, dm, COMPLEX, False)
    cos, sin = _rotation(th, cd, dm, D, COMPLEX)
    cos, sin = cos[None, :], sin[None, :]
    tok, valid = tokens(tl.arange(0, BT), n, bos, REVERSE)
    m = valid[:, None] & dm[None, :]
    gt = _load_real(g, tok, m, cd, D)
    xr, xi = _load_values(x, tok, m, cd, D, COMPLEX)
    for c in range(0, tl.cdiv(n, BT)):
        tok_n, valid_n = tokens((c + 1) * BT + tl.arange(0, BT), n, bos, REVERSE)
        m_n = valid_n[:, None] & dm[None, :]
        gt_n = _load_real(g, tok_n, m_n, cd, D)
        xr_n, xi_n = _load_values(x, tok_n, m_n, cd, D, COMPLEX)
        a = tl.exp(gt)
        if COMPLEX:
            ar = tl.where(m, a * cos, 1.0)  # rows past the end must not rotate the carried state
            ai = tl.where(m, a * sin, 0.0)
            Ar, Ai, Br, Bi = tl.associative_scan((ar, ai, xr, xi), 0, _affine_complex)
            out_r = Ar * h[None, :] - Ai * hi[None, :] + Br
            out_i = Ar * hi[None, :] + Ai * h[None, :] + Bi
            _store_values(o, out_r, out_i, tok, m, cd, D, COMPLEX)
            h, hi = _last_row(out_r, BT), _last_row(out_i, BT)
        else:
            A, B = tl.associative_scan((a, xr), 0, affine)
            out = A * h[None, :] + B
            _store_values(o, out, out, tok, m, cd, D, COMPLEX)
            h = _last_row(out, BT)
        tok, m, gt, xr, xi = tok_n, m_n, gt_n, xr_n, xi_n
    if STORE_HT:
        _store_state(ht + s_ptr, h, hi, dm, COMPLEX)


@triton.jit
def _cmul(ar, ai, br, bi, COMPLEX: tl.constexpr):
    """(ar + i ai)(br + i bi); real states carry ai = bi = 0 and skip the cross terms."""
    if COMPLEX:
        return ar * br - ai * bi, ar * bi + ai * br
    else:
        return ar * br, ai


@triton.jit
def _release(flag, state):
    """Set a flag after the values it guards: the barrier orders every thread's stores before the one thread that
    performs a scalar atomic, and the release makes them visible to whoever acquires the flag."""
    tl.debug_barrier()
    tl.atomic_xchg(flag, state, sem="release")


@triton.jit
def _bound(lb, cd, dm, HAS_LB: tl.constexpr):
    """HGRN2's lower bound of channels cd [BD] in fp32 (lb [D], HAS_LB), or 0."""
    if HAS_LB:  # noqa: SIM108 (Triton: constexpr branch)
        lbv = tl.load(lb + cd, mask=dm, other=0.0).to(tl.float32)
    else:
        lbv = 0.0
    return lbv


@triton.jit
def _gate(z, lbv):
    """HGRN2's gate at head size 1 from fp32 gate logits z [.., BD] and the lower bound lbv (_bound): (f, k, df/dz,
    sigmoid(-z)), f = lb + (1 - lb) sigmoid(z), k = 1 - f, df/dz = (1 - lb) s (1 - s)."""
    k, _logf, s, ns, f = lower_bounded_gate(z, lbv)
    return f, k, (1.0 - lbv) * s * ns, ns


@triton.jit
def _ticket(flags, NSEQ, D: tl.constexpr, BD: tl.constexpr):
    """The next ticket of a chained launch and its tile: (ticket, time block, index within the time block, sequence,
    the tile's channels [BD] and which of them exist). Tickets run time-major, so a tile waits only on tiles whose
    programs already hold a ticket: no deadlock whatever order blocks are scheduled in."""
    NCB: tl.constexpr = (D + BD - 1) // BD
    ticket = tl.atomic_add(flags, 1, sem="relaxed")
    per_tb = NSEQ * NCB  # tiles per time block
    tb = ticket // per_tb
    r = ticket - tb * per_tb
    p = r // NCB
    # Two channels per thread and every row of them in its registers: the scan down the tile is serial in-thread.
    cd = (r - p * NCB) * BD + tl.max_contiguous(tl.multiple_of(tl.arange(0, BD), 2), 2)
    return ticket, tb, r, p, cd, cd < D


@triton.jit
def _chain(flags, ws, ticket, tb, r, NSEQ, n_tb, row, dm, la_r, la_i, lb_r, lb_i, base_r, base_i, D: tl.constexpr,
           BD: tl.constexpr, W: tl.constexpr, COMPLEX: tl.constexpr, PUBLISH_PREFIX: tl.constexpr):  # fmt: skip
    """Decoupled look-back of the tile of `ticket` (time block tb, index r within it), whose steps compose to the map
    y -> la y + lb: publish that aggregate, compose the aggregates of the tiles before it in time down to the first
    published inclusive prefix (or base, the state entering time block 0), publish this tile's prefix. Returns the
    states entering and leaving the tile (re, im; real: im = 0).

    flags[1 + tile] says what a tile has published: 0 nothing, 1 its aggregate, 2 its inclusive prefix. ws holds
    three slots (aggregate a, aggregate b, prefix) of [time block, sequence, D, W] fp32 values; row is the offset of
    this tile's channels within a time block. PUBLISH_PREFIX=False publishes aggregates only, so every look-back
    walks to the start (a test of the chaining)."""
    per_tb = NSEQ * ((D + BD - 1) // BD)
    slot = n_tb.to(tl.int64) * NSEQ * D * W  # workspace elements per slot
    own = ws + tb.to(tl.int64) * NSEQ * D * W + row
    flag = flags + 1 + ticket
    if PUBLISH_PREFIX:  # noqa: SIM108 (Triton: constexpr branch)
        need_aggregate = tb > 0  # the first time block publishes its prefix straight away
    else:
        need_aggregate = tb >= 0
    if need_aggregate:
        _store_state(own, la_r, la_i, dm, COMPLEX)
        _store_state(own + slot, lb_r, lb_i, dm, COMPLEX)
        _release(flag, 1)

    # look back: h_in = acc_a * base + acc_b, acc the composed aggregates of time blocks j+1 .. tb-1
    acc_ar, acc_ai = tl.zeros_like(la_r) + 1.0, tl.zeros_like(la_r)
    acc_br, acc_bi = tl.zeros_like(la_r), tl.zeros_like(la_r)
    j = tb - 1
    while j >= 0:
        fj = flags + 1 + j * per_tb + r
        state = tl.atomic_add(fj, 0, sem="acquire")
        while state == 0:
            state = tl.atomic_add(fj, 0, sem="acquire")
        pj = ws + j.to(tl.int64) * NSEQ * D * W + row
        if state == 2:
            base_r, base_i = _load_state(pj + 2 * slot, dm, COMPLEX, True)
            j = -1
        else:
            a_r, a_i = _load_state(pj, dm, COMPLEX, True)
            b_r, b_i = _load_state(pj + slot, dm, COMPLEX, True)
            t_r, t_i = _cmul(acc_ar, acc_ai, b_r, b_i, COMPLEX)
            acc_br, acc_bi = acc_br + t_r, acc_bi + t_i
            acc_ar, acc_ai = _cmul(acc_ar, acc_ai, a_r, a_i, COMPLEX)
            j -= 1
    h_r, h_i = _cmul(acc_ar, acc_ai, base_r, base_i, COMPLEX)
    h_r, h_i = h_r + acc_br, h_i + acc_bi
    e_r, e_i = _cmul(la_r, la_i, h_r, h_i, COMPLEX)  # the state after this tile
    e_r, e_i = e_r + lb_r, e_i + lb_i
    if PUBLISH_PREFIX:
        _store_state(own + 2 * slot, e_r, e_i, dm, COMPLEX)
        _release(flag, 2)
    return h_r, h_i, e_r, e_i


@entry(do_not_specialize=["T", "NSEQ"])
def _fwd_chained_kernel(x, g, th, o, h0, ht, flags, ws, q, lb, hs, scale, T, NSEQ, D: tl.constexpr,
                        BT: tl.constexpr, BD: tl.constexpr, COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
                        HAS_H0: tl.constexpr, STORE_HT: tl.constexpr, PUBLISH_PREFIX: tl.constexpr,
                        EVEN: tl.constexpr, GATED: tl.constexpr, HAS_LB: tl.constexpr,
                        SAVE_H: tl.constexpr):  # fmt: skip
    """One [BT, BD] tile of one sequence per program; tiles chained in time by decoupled look-back (_chain).

    GATED: HGRN2 at head size 1 (real): x holds v, g the gate logits z (lower bound lb if HAS_LB), and the tile
    stores o = scale q h instead of h, and h into hs (SAVE_H, for the backward). flags[0] hands out tickets
    (_ticket), ws is the look-back's workspace.
    """
    W: tl.constexpr = 2 if COMPLEX else 1
    ticket, tb, r, p, cd, dm = _ticket(flags, NSEQ, D, BD)
    n_tb = tl.cdiv(T, BT)
    if EVEN:  # whole tiles: one scalar base row, rows addressed relative to it, no masks
        base = p.to(tl.int64) * T + (T - 1 - tb * BT if REVERSE else tb * BT)
        x, g, o = x + base * D * W, g + base * D, o + base * D * W
        if GATED:
            q, hs = q + base * D, hs + base * D
        tok = (-1 if REVERSE else 1) * tl.arange(0, BT)
        m = tl.full([BT, BD], 1, tl.int1)
    else:
        tok, valid = tokens(tb * BT + tl.arange(0, BT), T, p.to(tl.int64) * T, REVERSE)
        m = valid[:, None] & dm[None, :]
    xr, xi = _load_values(x, tok, m, cd, D, COMPLEX)
    if GATED:
        qt = _load_real(q, tok, m, cd, D)
        f, k, _dfdz, _ns = _gate(_load_real(g, tok, m, cd, D), _bound(lb, cd, dm, HAS_LB))
        a, xr = tl.where(m, f, 1.0), k * xr  # rows past the end: the identity map
    else:
        a = tl.exp2(_load_real(g, tok, m, cd, D) * LOG2E)
    if COMPLEX:
        cos, sin = _rotation(th, cd, dm, D, COMPLEX)
        ar = tl.where(m, a * cos[None, :], 1.0)  # rows past the end: the identity map
        ai = tl.where(m, a * sin[None, :], 0.0)
        Ar, Ai, Br, Bi = tl.associative_scan((ar, ai, xr, xi), 0, _affine_complex)
        la_r, la_i, lb_r, lb_i = _last_row(Ar, BT), _last_row(Ai, BT), _last_row(Br, BT), _last_row(Bi, BT)
    else:
        Ar, Br = tl.associative_scan((a, xr), 0, affine)  # masked rows: a = e^0 = 1, x = 0
        la_r, lb_r = _last_row(Ar, BT), _last_row(Br, BT)
        la_i, lb_i = tl.zeros_like(la_r), tl.zeros_like(lb_r)

    row = p.to(tl.int64) * D * W + cd * W  # offset of this sequence's channels within a time block
    base_r, base_i = tl.zeros([BD], tl.float32), tl.zeros([BD], tl.float32)
    if HAS_H0:
        base_r, base_i = _load_state(h0 + row, dm, COMPLEX, False)
    h_r, h_i, e_r, e_i = _chain(flags, ws, ticket, tb, r, NSEQ, n_tb, row, dm, la_r, la_i, lb_r, lb_i, base_r,
                                base_i, D, BD, W, COMPLEX, PUBLISH_PREFIX)  # fmt: skip

    if COMPLEX:
        out_r = Ar * h_r[None, :] - Ai * h_i[None, :] + Br
        out_i = Ar * h_i[None, :] + Ai * h_r[None, :] + Bi
        _store_values(o, out_r, out_i, tok, m, cd, D, COMPLEX)
    else:
        out = Ar * h_r[None, :] + Br
        if GATED:
            if SAVE_H:
                _store_values(hs, out, out, tok, m, cd, D, COMPLEX)
            out = scale * qt * out
        _store_values(o, out, out, tok, m, cd, D, COMPLEX)
    if STORE_HT:  # noqa: SIM102 (Triton: constexpr branch)
        if tb == n_tb - 1:
            _store_state(ht + row, e_r, e_i, dm, COMPLEX)


@triton.jit
def _bwd_scan(g, do, q, tok, tok_next, m, m_next, cd, lbv, cos, sin, scale, D: tl.constexpr, COMPLEX: tl.constexpr,
              GATED: tl.constexpr):  # fmt: skip
    """One [BT, BD] tile of the backward's recurrence dh_t = conj(a_{t+1}) dh_{t+1} + do_t (GATED: + scale q_t do_t),
    rows in processing order (backwards in time), scanned down the tile: the maps of rows 0..i composed, (C, U) (re,
    im each; real: im unused), and do's real part (GATED needs it for dq). Rows whose following step is absent
    (m_next) multiply by 1."""
    if GATED:
        a_next = _gate(_load_real(g, tok_next, m_next, cd, D), lbv)[0]
    else:
        a_next = tl.exp2(_load_real(g, tok_next, m_next, cd, D) * LOG2E)
    dor, doi = _load_values(do, tok, m, cd, D, COMPLEX)
    if COMPLEX:
        cr = tl.where(m_next, a_next * cos, 1.0)  # conj(a_{t+1})
        ci = tl.where(m_next, -a_next * sin, 0.0)
        Cr, Ci, Ur, Ui = tl.associative_scan((cr, ci, dor, doi), 0, _affine_complex)
    else:
        x = dor
        if GATED:
            x = scale * _load_real(q, tok, m, cd, D) * dor
        Cr, Ur = tl.associative_scan((tl.where(m_next, a_next, 1.0), x), 0, affine)
        Ci, Ui = Cr, Ur
    return Cr, Ci, Ur, Ui, dor


@triton.jit
def _apply(Cr, Ci, Ur, Ui, u, ui, COMPLEX: tl.constexpr):
    """dh (re, im) of every row of a tile: its composed maps (_bwd_scan) applied to u, the dh entering the tile."""
    if COMPLEX:
        return Cr * u[None, :] - Ci * ui[None, :] + Ur, Cr * ui[None, :] + Ci * u[None, :] + Ui
    else:
        dh = Cr * u[None, :] + Ur
        return dh, dh


@triton.jit
def _bwd_grads(g, o, v, dx, dg, dq, dh_r, dh_i, dor, h0r, h0i, tok, tok_prev, m, m_prev, first, cd, lbv, cos, sin,
               scale, D: tl.constexpr, COMPLEX: tl.constexpr, GATED: tl.constexpr):  # fmt: skip
    """Store one tile's gradients from its dh and return the sum over its rows of the per-channel parameter's
    gradient [BD] (dtheta, or the lower bound's for GATED; real: 0). h_{t-1} is the saved o of the preceding step
    (m_prev), h0 at the first step (first).

    GATED (HGRN2 at head size 1, o = scale q h, h_t = f_t h_{t-1} + k_t v_t): o holds the saved h, dx takes dv and dg
    dz. dq = scale do h, dv = dh k, and since dL/df = dh h_{t-1} and dL/dk = dh v, dz = df/dz dh (h_{t-1} - v) and
    dlb = (1 - s) dh (h_{t-1} - v), with no division by f."""
    hr, hi = _load_values(o, tok_prev, m_prev, cd, D, COMPLEX)
    hr += tl.where(first, h0r[None, :], 0.0)
    if COMPLEX:
        hi += tl.where(first, h0i[None, :], 0.0)
        a = tl.exp2(_load_real(g, tok, m, cd, D) * LOG2E)
        ar, ai = a * cos, a * sin
        ah_r, ah_i = ar * hr - ai * hi, ar * hi + ai * hr  # a_t h_{t-1}
        _store_values(dx, dh_r, dh_i, tok, m, cd, D, COMPLEX)
        dgt = dh_r * ah_r + dh_i * ah_i
        part = tl.sum(tl.where(m, dh_i * ah_r - dh_r * ah_i, 0.0), 0)
    elif GATED:
        _f, k, dfdz, ns = _gate(_load_real(g, tok, m, cd, D), lbv)
        gap = dh_r * (hr - _load_real(v, tok, m, cd, D))  # dL/df - dL/dk
        _store_values(dx, dh_r * k, dh_r, tok, m, cd, D, COMPLEX)
        _store_values(dq, scale * dor * _load_real(o, tok, m, cd, D), dh_r, tok, m, cd, D, COMPLEX)
        dgt = dfdz * gap
        part = tl.sum(tl.where(m, ns * gap, 0.0), 0)
    else:
        _store_values(dx, dh_r, dh_r, tok, m, cd, D, COMPLEX)
        dgt = dh_r * tl.exp2(_load_real(g, tok, m, cd, D) * LOG2E) * hr
        part = 0.0
    tl.store(dg + tok[:, None] * D + cd[None, :], dgt.to(dg.dtype.element_ty), mask=m)
    return part


@triton.jit
def _store_dh0(g, tok0, n, dh0, u, ui, cd, dm, lbv, cos, sin, D: tl.constexpr, COMPLEX: tl.constexpr,
               GATED: tl.constexpr):  # fmt: skip
    """dL/dh0 = conj(a_1) dL/dh_1 at dh0, from (u, ui), the gradient reaching the first step (token tok0) of a
    sequence of n steps; an empty sequence passes it through unrotated."""
    g0 = tl.load(g + tok0 * D + cd, mask=dm & (n > 0), other=0.0).to(tl.float32)
    if GATED:  # noqa: SIM108 (Triton: constexpr branch)
        a0 = tl.where(n > 0, _gate(g0, lbv)[0], 1.0)
    else:
        a0 = tl.exp2(g0 * LOG2E)
    if COMPLEX:
        ar = tl.where(n > 0, a0 * cos, 1.0)
        ai = tl.where(n > 0, a0 * sin, 0.0)
        tl.store(dh0, ar * u + ai * ui, mask=dm)
        tl.store(dh0 + 1, ar * ui - ai * u, mask=dm)
    else:
        tl.store(dh0, a0 * u, mask=dm)


@entry(do_not_specialize=["T"])
def _bwd_kernel(g, th, o, h0, do, dht, dx, dg, dth, dh0, cu, q, v, lb, dq, scale, T, D: tl.constexpr,
                BT: tl.constexpr, BD: tl.constexpr, COMPLEX: tl.constexpr, REVERSE: tl.constexpr,
                IS_VARLEN: tl.constexpr, HAS_H0: tl.constexpr, HAS_DHT: tl.constexpr, GATED: tl.constexpr,
                HAS_LB: tl.constexpr):  # fmt: skip
    """Packed batches: one program walks BD channels of one sequence backwards in time, tile by tile (rows r: r = 0
    is the forward pass's last step, r + 1 its previous one), carrying dh. Stores the gradients (_bwd_grads), per
    sequence the sums of the per-channel parameter's gradient into dth, and dh0."""
    idt, p = tl.program_id(0), tl.program_id(1)
    bos, n = seq_span(p, cu, T, 1, T, IS_VARLEN)
    cd = idt * BD + tl.arange(0, BD)
    dm = cd < D
    W: tl.constexpr = 2 if COMPLEX else 1
    s_ptr = p.to(tl.int64) * D * W + cd * W
    u = tl.zeros([BD], tl.float32)  # dL/dh of the row before (carried)
    ui = tl.zeros([BD], tl.float32)
    h0r = tl.zeros([BD], tl.float32)
    h0i = tl.zeros([BD], tl.float32)
    if HAS_DHT:
        u, ui = _load_state(dht + s_ptr, dm, COMPLEX, False)
    if HAS_H0:
        h0r, h0i = _load_state(h0 + s_ptr, dm, COMPLEX, False)
    cos, sin = _rotation(th, cd, dm, D, COMPLEX)
    lbv = _bound(lb, cd, dm, HAS_LB)
    dth_acc = tl.zeros([BD], tl.float32)
    for c in range(0, tl.cdiv(n, BT)):
        r = c * BT + tl.arange(0, BT)
        tok, valid = tokens(r, n, bos, not REVERSE)
        tok_next, valid_next = tokens(r - 1, n, bos, not REVERSE)  # the following time step (its a multiplies dh)
        tok_prev, valid_prev = tokens(r + 1, n, bos, not REVERSE)  # the preceding time step (its h is h_{t-1})
        m = valid[:, None] & dm[None, :]
        m_next = (valid & valid_next)[:, None] & dm[None, :]
        m_prev = valid_prev[:, None] & dm[None, :]
        first = (r == n - 1)[:, None]  # the first time step: h_{t-1} is the initial state
        Cr, Ci, Ur, Ui, dor = _bwd_scan(g, do, q, tok, tok_next, m, m_next, cd, lbv, cos[None, :],
                                        sin[None, :], scale, D, COMPLEX, GATED)  # fmt: skip
        dh_r, dh_i = _apply(Cr, Ci, Ur, Ui, u, ui, COMPLEX)
        dth_acc += _bwd_grads(g, o, v, dx, dg, dq, dh_r, dh_i, dor, h0r, h0i, tok, tok_prev, m, m_prev, first, cd,
                              lbv, cos[None, :], sin[None, :], scale, D, COMPLEX, GATED)  # fmt: skip
        u, ui = _last_row(dh_r, BT), _last_row(dh_i, BT)
    if HAS_H0:
        _store_dh0(g, bos + (n - 1 if REVERSE else 0), n, dh0 + s_ptr, u, ui, cd, dm, lbv, cos, sin, D, COMPLEX, GATED)
    if COMPLEX or GATED:
        tl.store(dth + p.to(tl.int64) * D + cd, dth_acc, mask=dm)


@entry(do_not_specialize=["T", "NSEQ"])
def _bwd_chained_kernel(g, th, o, h0, do, dht, dx, dg, dth, dh0, flags, ws, q, v, lb, dq, scale, T, NSEQ,
                        D: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, COMPLEX: tl.constexpr,
                        REVERSE: tl.constexpr, HAS_H0: tl.constexpr, HAS_DHT: tl.constexpr,
                        PUBLISH_PREFIX: tl.constexpr, EVEN: tl.constexpr, GATED: tl.constexpr,
                        HAS_LB: tl.constexpr):  # fmt: skip
    """Dense batches: the backward as one chained scan, the forward's tiles and look-back (_ticket, _chain) run
    backwards in time: time block 0 holds the last steps (REVERSE: the first), the state carried is dh, entering
    as dht. Each tile stores its gradients (_bwd_grads) and its rows' sums of the per-channel parameter's gradient
    into dth [time block, sequence, D]; the tile holding the first step stores dh0."""
    W: tl.constexpr = 2 if COMPLEX else 1
    ticket, tb, r, p, cd, dm = _ticket(flags, NSEQ, D, BD)
    n_tb = tl.cdiv(T, BT)
    rows = tb * BT + tl.arange(0, BT)  # processing order: row 0 is the last time step (REVERSE: the first)
    bos = p.to(tl.int64) * T
    gate = g
    if EVEN:  # whole tiles: one scalar base row, rows addressed relative to it, masks only at the ends
        base = bos + (tb * BT if REVERSE else T - 1 - tb * BT)
        g, o, do, dx, dg = g + base * D, o + base * D * W, do + base * D * W, dx + base * D * W, dg + base * D
        if GATED:
            q, v, dq = q + base * D, v + base * D, dq + base * D
        tok = (1 if REVERSE else -1) * tl.arange(0, BT)
        tok_next = tok - (1 if REVERSE else -1)
        tok_prev = tok + (1 if REVERSE else -1)
        m = tl.full([BT, BD], 1, tl.int1)
        m_next = (rows >= 1)[:, None] & m
        m_prev = (rows + 1 < T)[:, None] & m
    else:
        tok, valid = tokens(rows, T, bos, not REVERSE)
        tok_next, valid_next = tokens(rows - 1, T, bos, not REVERSE)
        tok_prev, valid_prev = tokens(rows + 1, T, bos, not REVERSE)
        m = valid[:, None] & dm[None, :]
        m_next = (valid & valid_next)[:, None] & dm[None, :]
        m_prev = valid_prev[:, None] & dm[None, :]
    first = (rows == T - 1)[:, None]
    cos, sin = _rotation(th, cd, dm, D, COMPLEX)
    lbv = _bound(lb, cd, dm, HAS_LB)
    Cr, Ci, Ur, Ui, dor = _bwd_scan(g, do, q, tok, tok_next, m, m_next, cd, lbv, cos[None, :], sin[None, :],
                                    scale, D, COMPLEX, GATED)  # fmt: skip
    la_r, lb_r = _last_row(Cr, BT), _last_row(Ur, BT)
    if COMPLEX:
        la_i, lb_i = _last_row(Ci, BT), _last_row(Ui, BT)
    else:
        la_i, lb_i = tl.zeros_like(la_r), tl.zeros_like(lb_r)

    row = p.to(tl.int64) * D * W + cd * W
    u, ui = tl.zeros([BD], tl.float32), tl.zeros([BD], tl.float32)
    if HAS_DHT:
        u, ui = _load_state(dht + row, dm, COMPLEX, False)
    u, ui, e_r, e_i = _chain(flags, ws, ticket, tb, r, NSEQ, n_tb, row, dm, la_r, la_i, lb_r, lb_i, u, ui, D, BD, W,
                             COMPLEX, PUBLISH_PREFIX)  # fmt: skip

    dh_r, dh_i = _apply(Cr, Ci, Ur, Ui, u, ui, COMPLEX)
    h0r, h0i = tl.zeros([BD], tl.float32), tl.zeros([BD], tl.float32)
    if HAS_H0:
        h0r, h0i = _load_state(h0 + row, dm, COMPLEX, False)
    part = _bwd_grads(g, o, v, dx, dg, dq, dh_r, dh_i, dor, h0r, h0i, tok, tok_prev, m, m_prev, first, cd, lbv,
                      cos[None, :], sin[None, :], scale, D, COMPLEX, GATED)  # fmt: skip
    if COMPLEX or GATED:
        tl.store(dth + (tb.to(tl.int64) * NSEQ + p) * D + cd, part, mask=dm)
    if HAS_H0:  # noqa: SIM102 (Triton: constexpr branch)
        if tb == n_tb - 1:  # e: dh after the tile's last row, the first step (rows past it are the identity)
            tok0 = bos + (T - 1 if REVERSE else 0)
            _store_dh0(gate, tok0, T, dh0 + row, e_r, e_i, cd, dm, lbv, cos, sin, D, COMPLEX, GATED)


# HGRN_SCAN_TILES="BT=64,BD=32,warps=4" (tile experiments, tile_overrides) sets the tiles of the chained kernels
# and of the sequential ones alike (bBT, bBD, bwarps: the chained backward's alone); prefix=0 makes the chained
# kernels publish aggregates only; bwd=0 runs dense batches' backward on the sequential kernel (an A/B switch).
TILES = "HGRN_SCAN_TILES"


def _tiles(x: Tensor, D: int, n_seqs: int, complex_valued: bool) -> tuple[int, int, int]:
    """(BT, BD, warps) of the sequential kernels: channel slabs narrow enough for about four programs per
    multiprocessor. Complex tiles take 8 steps: at 32 x 64 the backward needs 255 registers and spills (sm_90,
    Triton 3.6). Its kernel on an H200 (2026-12-05) at BT 8 / 16 / 32: the ViTs' scan (B 256, T 256, D 384; BD 64)
    0.277 / 0.362 / 0.641 ms; B 8, T 2048, D 2048 (BD 16) 0.471 / 0.482 / 0.818."""
    tiles = tile_overrides(TILES)
    BT = 8 if complex_valued else 64
    BD = 16 if INTERPRET else 64
    while BD > 16 and n_seqs * cdiv(D, BD) < 2 * target_programs(x.device):
        BD //= 2
    return tiles.get("BT", BT), tiles.get("BD", BD), tiles.get("warps", 4)


def _chained_tiles(
    D: int, complex_valued: bool, backward: bool = False, gated: bool = False
) -> tuple[int, int, int, bool]:
    """(BT, BD, warps, publish prefixes) of the chained forward (backward: of the chained backward; gated: HGRN2 at
    head size 1): one-warp tiles, two channels per thread, so the in-tile scan never leaves a thread's registers.
    Forward kernel times on an H200 (B8 T2048 D2048 bf16, 2026-11-29, profiler): real 32 x 64 0.070 ms (16 x 64: 0.086;
    8 x 64: 0.127; 16 x 128: 0.075; 32 x 128 over 2 warps: 0.068, but its op timings were bimodal, 0.080 or 0.182 ms;
    64 x 64 over 2 warps: 0.077; 16 x 256 over 4 warps: 0.075; before the register layout, 16 x 64: 0.094); complex
    8 x 32 0.312 ms (16 x 32: 0.390; 8 x 64: 0.389; 4 x 64: 0.357). Not kept (measured slower): polling 2-32 earlier
    tiles per look-back step, persistent programs that prefetch their next tile, register caps (more programs per
    multiprocessor), spreading the ticket atomics over 4-128 counters. Backward kernel times, same shape (2026-12-05,
    against the sequential kernel's 0.196 / 0.653 / 0.338 ms): real 32 x 64 0.108 (16 x 64: 0.116; 8 x 128: 0.130;
    8 x 64: 0.157; 16 x 32: 0.164); complex 8 x 64 0.537 (8 x 32: 0.583; 4 x 32: 0.615; 16 x 32: 0.703; 8 x 16:
    0.785); HGRN2 at head size 1 8 x 64 0.243 (16 x 64: 0.296; 16 x 32: 0.342). With the cos / sin table (`_cos_sin`)
    the complex forward's best tile moved: on an H100 (2026-12-05, same shape) 8 x 64 0.248 ms, 8 x 32 0.331, 4 x 32
    0.479, 4 x 64 0.460."""
    tiles = tile_overrides(TILES)
    BT, BD = (8, 64) if complex_valued or (backward and gated) else (32, 64)
    BT, BD, warps = tiles.get("BT", BT), tiles.get("BD", min(BD, max(pow2(D), 16))), tiles.get("warps", 1)
    if backward:
        BT, BD, warps = tiles.get("bBT", BT), tiles.get("bBD", BD), tiles.get("bwarps", warps)
    return BT, BD, warps, bool(tiles.get("prefix", 1))


def _cos_sin(theta: Tensor | None) -> Tensor | None:
    """The kernels' table of the channels' rotations, [2, D] fp32 (cos theta; sin theta), or None (real). Formed once
    per call here instead of per tile by libdevice's cos and sin (whose range reduction also kept a 32-byte stack):
    offline sm_90 SASS of the chained complex tiles, forward 8 x 32 1,432 -> 1,280 and 8 x 64 1,352 -> 1,016
    instructions, backward 8 x 32 2,104 -> 1,920 and 8 x 64 3,472 -> 3,152. Complex forward + backward kernels on an
    H100 (2026-12-05, B8 T2048 D2048 bf16): 0.777 ms at the tiles `_chained_tiles` picks."""
    return None if theta is None else torch.stack((theta.float().cos(), theta.float().sin()))


def _workspace(n: int, device: torch.device) -> Tensor:
    """Aggregates and prefixes: never read before written (tests poison it with NaN through this hook)."""
    return torch.empty(n, dtype=torch.float32, device=device)


def _chain_buffers(B: int, T: int, D: int, BT: int, BD: int, complex_valued: bool, device: torch.device):
    """(tiles, flags, workspace) of a chained launch over [B, T, D] in [BT, BD] tiles: one zeroed int32 buffer (the
    ticket counter and one flag per tile) and the look-back's uninitialised fp32 slots (_workspace)."""
    n_tiles = cdiv(T, BT) * cdiv(D, BD) * B
    flags = torch.zeros(1 + n_tiles, dtype=torch.int32, device=device)
    return n_tiles, flags, _workspace(3 * cdiv(T, BT) * B * D * (2 if complex_valued else 1), device)


def _chained_forward(x, log_f, cs, h0, o, ht, reverse: bool, gated: tuple | None = None) -> None:
    """Dense batches: the single-pass chained scan (its buffers: _chain_buffers). gated: (q, lb or None, hs or None,
    scale) of HGRN2 at head size 1 (x is then v, log_f the gate logits); cs: the rotations (_cos_sin) of a complex
    scan, or None."""
    B, T, D = log_f.shape
    BT, BD, warps, publish_prefix = _chained_tiles(D, cs is not None)
    n_tiles, flags, ws = _chain_buffers(B, T, D, BT, BD, cs is not None, x.device)
    q, lb, hs, scale = gated or (None, None, None, 1.0)
    _fwd_chained_kernel[(n_tiles,)](
        *or_like((x, log_f, cs, o, h0, ht, flags, ws, q, lb, hs), x), scale, T, B, D=D, BT=BT, BD=BD,
        COMPLEX=cs is not None, REVERSE=reverse, HAS_H0=h0 is not None, STORE_HT=ht is not None,
        PUBLISH_PREFIX=publish_prefix, EVEN=T % BT == 0 and D % BD == 0, GATED=gated is not None,
        HAS_LB=lb is not None, SAVE_H=hs is not None, num_warps=warps,
    )  # fmt: skip


def _forward(x, log_f, theta, h0, reverse: bool, cu, want_final: bool) -> tuple[Tensor, Tensor | None]:
    """(h, final state or None): the chained scan for dense batches, the sequential kernel for packed ones."""
    B, T, D = log_f.shape
    cs = _cos_sin(theta)
    n_seqs = B if cu is None else cu.numel() - 1
    o = torch.empty_like(x)
    ht = x.new_empty(n_seqs, *x.shape[2:], dtype=torch.float32) if want_final else None
    if cu is None and T > 0:
        _chained_forward(x, log_f, cs, h0, o, ht, reverse)
    else:
        BT, BD, warps = _tiles(x, D, n_seqs, cs is not None)
        _fwd_kernel[(cdiv(D, BD), n_seqs)](
            *or_like((x, log_f, cs, o, h0, ht, cu), x), T, D=D, BT=BT, BD=BD, COMPLEX=cs is not None,
            REVERSE=reverse, IS_VARLEN=cu is not None, HAS_H0=h0 is not None, STORE_HT=want_final, num_warps=warps,
        )  # fmt: skip
    return o, ht


def _backward_kernels(g, theta, o, h0, do, dht, dx, dg, dh0, cu, reverse: bool, gated: tuple | None = None):
    """Launch the backward into dx, dg and dh0 (or None): dense batches as one chained scan, packed ones (and T = 0)
    on the sequential kernel. gated: (q, v, lb or None, dq, scale) of HGRN2 at head size 1 (g the gate logits, o the
    saved h, dx takes dv, dg dz). Returns the gradient of the per-channel parameter (theta, or gated's lower bound)
    as fp32 partial sums [parts, D], for the caller to sum over parts; None for a real, ungated scan."""
    B, T, D = g.shape
    n_seqs = B if cu is None else cu.numel() - 1
    complex_valued = theta is not None
    chained = cu is None and T > 0 and tile_overrides(TILES).get("bwd", 1) == 1
    if chained:
        BT, BD, warps, publish_prefix = _chained_tiles(D, complex_valued, backward=True, gated=gated is not None)
        parts = cdiv(T, BT) * B
    else:
        BT, BD, warps = _tiles(o, D, n_seqs, complex_valued)
        parts = n_seqs
    dth = o.new_empty(parts, D, dtype=torch.float32) if complex_valued or gated is not None else None
    q, v, lb, dq, scale = gated or (None, None, None, None, 1.0)
    tensors = (g, _cos_sin(theta), o, h0, do, dht, dx, dg, dth, dh0)
    after = (q, v, lb, dq)
    options = {"D": D, "BT": BT, "BD": BD, "COMPLEX": complex_valued, "REVERSE": reverse, "HAS_H0": h0 is not None,
               "HAS_DHT": dht is not None, "GATED": gated is not None, "HAS_LB": lb is not None,
               "num_warps": warps}  # fmt: skip
    if chained:
        n_tiles, flags, ws = _chain_buffers(B, T, D, BT, BD, complex_valued, o.device)
        _bwd_chained_kernel[(n_tiles,)](
            *or_like((*tensors, flags, ws, *after), o), scale, T, B, PUBLISH_PREFIX=publish_prefix,
            EVEN=T % BT == 0 and D % BD == 0, **options,
        )  # fmt: skip
    else:
        _bwd_kernel[(cdiv(D, BD), n_seqs)](*or_like((*tensors, cu, *after), o), scale, T,
                                                  IS_VARLEN=cu is not None, **options)  # fmt: skip
    return dth


# The scan as torch.library custom ops (opaque nodes that torch.compile keeps in its graph), paired by the autograd
# formula; an absent final state or gradient is an empty tensor (custom ops return no None).
FORWARD_SCHEMA = (
    "(Tensor x, Tensor log_f, Tensor? theta, Tensor? h0, Tensor? cu, bool reverse, bool want_final) "
    "-> (Tensor o, Tensor ht)"
)
BACKWARD_SCHEMA = (
    "(Tensor do, Tensor? dht, Tensor log_f, Tensor? theta, Tensor o, Tensor? h0, Tensor? cu, bool reverse) "
    "-> (Tensor dx, Tensor dlog_f, Tensor dtheta, Tensor dh0)"
)


@torch.library.custom_op("hgrn::hgrn1_scan_forward", mutates_args=(), schema=FORWARD_SCHEMA)
def scan_forward(x, log_f, theta, h0, cu, reverse, want_final):
    """(h, the final state or an empty tensor); tensors contiguous."""
    together(scan_forward, (x, log_f, theta, h0, cu, reverse, want_final))
    o, ht = _forward(x, log_f, theta, h0, reverse, cu, want_final)
    return o, *or_empty((ht,), x)


@scan_forward.register_fake
def _(x, log_f, theta, h0, cu, reverse, want_final):
    ahead(scan_forward, (x, log_f, theta, h0, cu, reverse, want_final))
    n_seqs = x.shape[0] if cu is None else cu.shape[0] - 1
    ht = x.new_empty(n_seqs, *x.shape[2:], dtype=torch.float32) if want_final else x.new_empty(0)
    return torch.empty_like(x), ht


@torch.library.custom_op("hgrn::hgrn1_scan_backward", mutates_args=(), schema=BACKWARD_SCHEMA)
def scan_backward(do, dht, log_f, theta, o, h0, cu, reverse):
    """The gradients of x, log f, theta and h0 (empty tensors for absent inputs)."""
    together(scan_backward, (do, dht, log_f, theta, o, h0, cu, reverse))
    n_seqs = log_f.shape[0] if cu is None else cu.numel() - 1
    dx, dg = torch.empty_like(o), torch.empty_like(log_f)
    dh0 = o.new_empty(n_seqs, *o.shape[2:], dtype=torch.float32) if h0 is not None else None
    dth = _backward_kernels(log_f, theta, o, h0, do, dht, dx, dg, dh0, cu, reverse)
    dtheta = None if theta is None else dth.sum(0).to(theta.dtype)
    return or_empty((dx, dg, dtheta, None if h0 is None else dh0.to(h0.dtype)), o)


@scan_backward.register_fake
def _(do, dht, log_f, theta, o, h0, cu, reverse):
    ahead(scan_backward, (do, dht, log_f, theta, o, h0, cu, reverse))
    return empty_grads((o, log_f, theta, h0), o)


def _save_for_backward(ctx, inputs: tuple, output: tuple) -> None:
    _, log_f, theta, h0, cu, reverse, want_final = inputs
    ctx.save_for_backward(log_f, theta, output[0], h0, cu)
    ctx.options = (reverse, want_final)
    ctx.set_materialize_grads(False)


def _backward(ctx, do: Tensor, dfinal: Tensor | None) -> tuple[Tensor | None, ...]:
    log_f, theta, o, h0, cu = ctx.saved_tensors
    reverse, want_final = ctx.options
    dht = dfinal.contiguous() if want_final and dfinal is not None else None
    grads = torch.ops.hgrn.hgrn1_scan_backward(do.contiguous(), dht, log_f, theta, o, h0, cu, reverse)
    return *present_grads((o, log_f, theta, h0), grads), None, None, None


scan_forward.register_autograd(_backward, setup_context=_save_for_backward)


def scan(
    x: Tensor,
    log_f: Tensor,
    theta: Tensor | None,
    *,
    initial_state: Tensor | None,
    output_final_state: bool,
    reverse: bool,
    cu_seqlens: Tensor | None,
) -> tuple[Tensor, Tensor | None]:
    """Run the scan kernels (arguments already checked)."""
    x, log_f, theta, h0 = (None if t is None else t.contiguous() for t in (x, log_f, theta, initial_state))
    o, ht = torch.ops.hgrn.hgrn1_scan_forward(x, log_f, theta, h0, cu_seqlens, reverse, output_final_state)
    return o, ht if output_final_state else None


# HGRN2 at head size 1 (expand ratio 1): each head's state is one number, h_t = f_t h_{t-1} + k_t v_t, o_t = scale q_t
# h_t, so it is this scan with x = k v, the gate formed from its logits inside the kernels and o = scale q h stored
# instead of h (which is saved for the backward). Dense batches (the chained forward); [B, T, D] tensors, D = heads.
GATED_FORWARD_SCHEMA = (
    "(Tensor q, Tensor v, Tensor z, Tensor? lb, Tensor? h0, float scale, bool reverse, bool want_final, bool save) "
    "-> (Tensor o, Tensor ht, Tensor h)"
)
GATED_BACKWARD_SCHEMA = (
    "(Tensor do, Tensor? dht, Tensor q, Tensor v, Tensor z, Tensor? lb, Tensor h, Tensor? h0, float scale, "
    "bool reverse) -> (Tensor dq, Tensor dv, Tensor dz, Tensor dlb, Tensor dh0)"
)


@torch.library.custom_op("hgrn::hgrn2_scalar_forward", mutates_args=(), schema=GATED_FORWARD_SCHEMA)
def gated_forward(q, v, z, lb, h0, scale, reverse, want_final, save):
    """(o, the final state or an empty tensor, h (save) or an empty tensor); tensors contiguous."""
    together(gated_forward, (q, v, z, lb, h0, scale, reverse, want_final, save))
    B, _, D = v.shape
    o = torch.empty_like(v)
    ht = v.new_empty(B, D, dtype=torch.float32) if want_final else None
    h = torch.empty_like(v) if save else None
    _chained_forward(v, z, None, h0, o, ht, reverse, gated=(q, lb, h, scale))
    return o, *or_empty((ht, h), v)


@gated_forward.register_fake
def _(q, v, z, lb, h0, scale, reverse, want_final, save):
    ahead(gated_forward, (q, v, z, lb, h0, scale, reverse, want_final, save))
    ht = v.new_empty(v.shape[0], v.shape[2], dtype=torch.float32) if want_final else v.new_empty(0)
    return torch.empty_like(v), ht, torch.empty_like(v) if save else v.new_empty(0)


@torch.library.custom_op("hgrn::hgrn2_scalar_backward", mutates_args=(), schema=GATED_BACKWARD_SCHEMA)
def gated_backward(do, dht, q, v, z, lb, h, h0, scale, reverse):
    """The gradients of q, v, z, lb and h0 (empty tensors for absent inputs)."""
    together(gated_backward, (do, dht, q, v, z, lb, h, h0, scale, reverse))
    dq, dv, dz = torch.empty_like(q), torch.empty_like(v), torch.empty_like(z)
    dh0 = v.new_empty(v.shape[0], v.shape[2], dtype=torch.float32) if h0 is not None else None
    plb = _backward_kernels(z, None, h, h0, do, dht, dv, dz, dh0, None, reverse, gated=(q, v, lb, dq, scale))
    dlb = None if lb is None else plb.sum(0).to(lb.dtype)
    return or_empty((dq, dv, dz, dlb, None if h0 is None else dh0.to(h0.dtype)), v)


@gated_backward.register_fake
def _(do, dht, q, v, z, lb, h, h0, scale, reverse):
    ahead(gated_backward, (do, dht, q, v, z, lb, h, h0, scale, reverse))
    return empty_grads((q, v, z, lb, h0), v)


def _save_gated(ctx, inputs: tuple, output: tuple) -> None:
    q, v, z, lb, h0, scale, reverse, want_final, _ = inputs
    ctx.save_for_backward(q, v, z, lb, output[2], h0)
    ctx.options = (scale, reverse, want_final)
    ctx.set_materialize_grads(False)


def _gated_backward(ctx, do: Tensor, dfinal: Tensor | None, *_: Tensor | None) -> tuple[Tensor | None, ...]:
    q, v, z, lb, h, h0 = ctx.saved_tensors
    scale, reverse, want_final = ctx.options
    dht = dfinal.contiguous() if want_final and dfinal is not None else None
    grads = torch.ops.hgrn.hgrn2_scalar_backward(do.contiguous(), dht, q, v, z, lb, h, h0, scale, reverse)
    return *present_grads((q, v, z, lb, h0), grads), None, None, None, None


gated_forward.register_autograd(_gated_backward, setup_context=_save_gated)


def hgrn2_head_size_one(
    q: Tensor,
    v: Tensor,
    f_logits: Tensor,
    lower_bound: Tensor | None,
    *,
    scale: float,
    initial_state: Tensor | None,
    output_final_state: bool,
    reverse: bool,
) -> tuple[Tensor, Tensor | None]:
    """hgrn.ops.hgrn2_recurrence at K = V = 1 on a dense batch (arguments already checked): q, v, f_logits
    [B, T, H, 1], lower_bound [H, 1] or None, initial_state [B, H, 1, 1] or None."""
    B, T, H, _ = q.shape
    q, v, z = (t.reshape(B, T, H).contiguous() for t in (q, v, f_logits))
    lb = None if lower_bound is None else lower_bound.reshape(H).contiguous()
    h0 = None if initial_state is None else initial_state.reshape(B, H).contiguous()
    save = needs_grad((q, v, z, lb, h0))
    o, ht, _ = torch.ops.hgrn.hgrn2_scalar_forward(q, v, z, lb, h0, scale, reverse, output_final_state, save)
    return o.view(B, T, H, 1), ht.view(B, H, 1, 1) if output_final_state else None
