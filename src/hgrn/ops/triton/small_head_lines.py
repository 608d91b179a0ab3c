"""The parallel form of the small-head scan both ways along grid lines of at most LINE tokens (a ViT's), launched by
hgrn.ops.triton.small_head where the plan takes it; below, the math and the fallback for steep lines."""

from __future__ import annotations

import triton
import triton.language as tl

from hgrn.ops.triton._common import LOG2E, mm, tile_tokens
from hgrn.ops.triton.precompile import entry
from hgrn.ops.triton.small_head_scan import (
    SPECIALIZE,
    bwd_walk,
    fwd_walk,
    gate_grads,
    gate_load,
    gate_terms,
    load_tile,
    lower_bound,
    program_line,
    store_heads,
    store_tile,
)

# --- grid lines of at most 16 tokens: the parallel form --------------------------------------------------------------
# A ViT's lines are 16 tokens. Each program takes BH slabs of LINE channels (LINE / K heads each) of one line, both
# ways at once, as decay-weighted scores on the tensor cores: o_t = scale sum_s M_ts v_s with, per head,
# M_ts = sum_k q_tk k_sk e^{C_tk - C_sk} (s <= t, forward) + sum_k q_tk k_sk e^{D_tk - D_sk} (s >= t, reverse; the
# diagonal in both), C_t = sum_{r <= t} log f_r, D_t = sum_{r >= t} log f_r, each factored as
# (q_t e^{C_t - C_m}) . (k_s e^{C_m - C_s}) about the middle token m. Loads, gates and factors run on whole slabs (no
# padding of 8-channel heads to the dots' 16); each head's dots mask the slab's other heads out of k and v. Nothing
# is saved for the backward, which recomputes M. Where some |C_t - C_m| or |D_t - D_m| exceeds STEEP the program
# marks itself in `slots` and appends itself to their list, and a second launch walks the listed lines by the scan,
# one 16-step tile per way (in the same kernel the scan's registers would bound the parallel form's: offline sm_90,
# 255 registers with spills against 160 for one head). STEEP bounds the factors' range far below fp32's (e^88)
# because of bf16 operands: the lower bound's gradient (the gate gradient times 1/f) lost precision with the range
# (H200, 2026-12-05, bf16, the GPU test's mixed gates, 8 x 14 x 14 x 24 x 8 / 8 x 8 x 16 x 32 x 2: relative error
# 8.8e-2 / 4.8e-2 at STEEP 60, 3.0e-2 / 4.8e-2 at 30, 1.9e-2 / 3.6e-2 at 20, 7.0e-3 / 2.9e-2 at 16, 1.7e-3 / 1.2e-2
# at 12, the scan's 1.7e-3 / 1.7e-3; the tolerance is 3e-2), at no cost in the ViT steps measured.
# slots [1 + 2 G P] int32: the list's length, each program's mark [P, G], the list (p G + g).

LINE = 16  # the parallel form's line length and slab width: the tensor cores' smallest tile
STEEP = tl.constexpr(12.0)  # a line's factors within e^{+-12} (bf16 operands; see above)
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
    bos, n, ts, heads, hm, _ck, _cv, _h, _s, _m = program_line(g, p, cu, T, NS, L, H, K, V, LP, LP, BH, False, STRIDED,
                                                               False)  # fmt: skip
    t0, rel, valid = tile_tokens(0, n, bos, ts, LP, False)
    return p, 1 + p * tl.num_programs(0) + g, n, t0, rel, valid, heads, hm, tl.arange(0, LP)


@entry(**SPECIALIZE)
def line_fwd_kernel(q, kz, lg, lb, v, o, slots, cu, T, NS, L, NTS, SK, SV, scale, H: tl.constexpr, K: tl.constexpr,
                    V: tl.constexpr, HK: tl.constexpr, BH: tl.constexpr, BT: tl.constexpr, GATE: tl.constexpr,
                    STRIDED: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr):  # fmt: skip
    """o of BH slabs of line p (at most BT = LINE tokens), both ways summed (ACC: added to o), or the program's mark
    and place in the list of steep ones. A slab is K = V = LINE channels, LINE / HK heads of size HK: loads, gates
    and factors run on whole slabs, each head's scores mask the other heads' channels out of k (and of v)."""
    _p, mark, n, t0, rel, valid, heads, hm, cw = _line_program(cu, T, NS, L, H, K, V, BH, BT, STRIDED)
    zt, lt = gate_load(kz, lg, t0, rel, valid, heads, hm, cw, SK, K, GATE)
    k, logf, _s, _ns, _f = gate_terms(zt, lt, lower_bound(lb, heads, hm, cw, K, GATE), valid, hm, cw, K, GATE)
    C, D, steep = _line_exponents(logf, n, BT)
    tl.store(slots + mark, steep.to(tl.int32))
    if steep:
        programs = tl.num_programs(0) * tl.num_programs(1)
        tl.store(slots + 1 + programs + tl.atomic_add(slots, 1), mark - 1)
    else:
        qt = load_tile(q, t0, rel, valid, heads, hm, cw, SK, K)
        vt = load_tile(v, t0, rel, valid, heads, hm, cw, SV, V)
        a, b, c, d = _line_factors(C, D)
        qf, kf, qr, kr = qt * a, k * b, qt * c, k * d
        out = tl.zeros([BH, BT, V], tl.float32)
        for j in tl.static_range(K // HK):
            mine = (cw // HK == j)[None, None, :]
            M = _line_scores(qf, tl.where(mine, kf, 0.0), qr, tl.where(mine, kr, 0.0), BT, DOT)
            out += mm(M, _heads_first(tl.where(mine, vt, 0.0)), DOT)
        store_tile(o, _heads_first(scale * out), t0, rel, valid, heads, hm, cw, V, H, ACC)


@entry(**SPECIALIZE)
def line_bwd_kernel(q, kz, lg, lb, v, do, dq, dkz, dlg, dv, plb, slots, cu, T, NS, L, NTS, SK, SV, scale,
                    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, HK: tl.constexpr, BH: tl.constexpr,
                    BT: tl.constexpr, GATE: tl.constexpr, STRIDED: tl.constexpr, ACC: tl.constexpr,
                    DOT: tl.constexpr):  # fmt: skip
    """The gradients of line_fwd_kernel (ACC: added), the lower bound's per-program sums into plb [P, H, K]; the
    programs the forward marked steep are left to the second launch. Per head, with dM_ts = scale do_t . v_s split by
    way (dMf where s <= t, dMr where s >= t), the factors a, b = e^{+-(C - C_m)}, c, d = e^{+-(D - D_m)} and the
    operands qf = q a, kf = k b, qr = q c, kr = k d: dv = scale M^T do, dq = a dMf kf + c dMr kr,
    dk = b dMf^T qf + d dMr^T qr, and dlog f_r = sum_{t >= r} dC_t + sum_{t <= r} dD_t with
    dC = qf (dMf kf) - kf (dMf^T qf), dD alike (the reference token's share cancels: M does not depend on it)."""
    p, mark, n, t0, rel, valid, heads, hm, cw = _line_program(cu, T, NS, L, H, K, V, BH, BT, STRIDED)
    if tl.load(slots + mark) == 0:
        zt, lt = gate_load(kz, lg, t0, rel, valid, heads, hm, cw, SK, K, GATE)
        k, logf, s, ns, f = gate_terms(zt, lt, lower_bound(lb, heads, hm, cw, K, GATE), valid, hm, cw, K, GATE)
        C, D, _steep = _line_exponents(logf, n, BT)
        qt = load_tile(q, t0, rel, valid, heads, hm, cw, SK, K)
        vt = load_tile(v, t0, rel, valid, heads, hm, cw, SV, V)
        dot = load_tile(do, t0, rel, valid, heads, hm, cw, H * V, V)
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
        store_tile(dq, a * Af + c * Ar, t0, rel, valid, heads, hm, cw, K, H, ACC)
        store_tile(dv, _heads_first(scale * dvt), t0, rel, valid, heads, hm, cw, V, H, ACC)
        lb_sum = gate_grads(dkz, dlg, b * Bf + d * Br, dlogf, k, s, ns, f, tl.zeros([BH, K], tl.float32), t0, rel,
                            valid, heads, hm, cw, K, H, GATE, ACC)  # fmt: skip
        if GATE == 2:
            store_heads(plb, lb_sum, p, heads, hm, cw, H, K)


@triton.jit
def _listed(slots, i, NP, lb, cu, T, NS, L, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr,
            VP: tl.constexpr, BH: tl.constexpr, GATE: tl.constexpr, STRIDED: tl.constexpr,
            VK: tl.constexpr):  # fmt: skip
    """The i-th listed steep program of a launch of NP lines: its line p, program_line's (but the state offsets
    within [P, H, K, V]) and the lower bound [1, BH, KP]."""
    G: tl.constexpr = (H + BH - 1) // BH
    e = tl.load(slots + 1 + NP * G + i)
    p = e // G
    bos, n, ts, heads, hm, ck, cv, h_off, _s_off, s_mask = program_line(
        e % G, p, cu, T, NS, L, H, K, V, KP, VP, BH, False, STRIDED, VK
    )
    return p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, lower_bound(lb, heads, hm, ck, K, GATE)


@entry(**SPECIALIZE)
def line_fallback_fwd_kernel(q, kz, lg, lb, v, o, slots, cu, T, NS, L, NTS, SK, SV, scale, NP,
                             H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr,
                             VP: tl.constexpr, BH: tl.constexpr, BT: tl.constexpr, GATE: tl.constexpr,
                             STRIDED: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """line_fwd_kernel's steep programs (NP lines), each walked both ways by the scan in [BT, BH, KP, VP] tiles."""
    for i in range(tl.program_id(0), tl.load(slots), tl.num_programs(0)):
        p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, lbv = _listed(slots, i, NP, lb, cu, T, NS, L, H, K, V, KP,
                                                                         VP, BH, GATE, STRIDED, False)  # fmt: skip
        S = tl.zeros([BH, KP, VP], tl.float32)
        fwd_walk(q, kz, lg, v, o, q, S, lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, 1, SK, SV, scale, H, K,
                 V, KP, VP, BH, BT, 0, GATE, False, False, ACC)  # fmt: skip
        tl.debug_barrier()  # this program's stores of o are visible to its loads
        fwd_walk(q, kz, lg, v, o, q, S, lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, 1, SK, SV, scale, H, K,
                 V, KP, VP, BH, BT, 0, GATE, True, False, True)  # fmt: skip


@entry(**SPECIALIZE)
def line_fallback_bwd_kernel(q, kz, lg, lb, v, do, dq, dkz, dlg, dv, plb, slots, cu, T, NS, L, NTS, SK, SV, scale, NP,
                             H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, KP: tl.constexpr,
                             VP: tl.constexpr, BH: tl.constexpr, BT: tl.constexpr, GATE: tl.constexpr,
                             STRIDED: tl.constexpr, ACC: tl.constexpr):  # fmt: skip
    """The gradients of line_fallback_fwd_kernel (ACC: added), the lower bound's sums into plb [P, H, K]."""
    for i in range(tl.program_id(0), tl.load(slots), tl.num_programs(0)):
        p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, lbv = _listed(slots, i, NP, lb, cu, T, NS, L, H, K, V, KP,
                                                                         VP, BH, GATE, STRIDED, True)  # fmt: skip
        zeros = tl.zeros([BH, VP, KP], tl.float32)
        _u, lb_sum = bwd_walk(q, kz, lg, v, do, q, zeros, dq, dkz, dlg, dv, zeros, tl.zeros([BH, KP], tl.float32),
                              lbv, p, bos, n, ts, heads, hm, ck, cv, h_off, s_mask, 1, SK, SV, scale, H, K, V, KP, VP,
                              BH, BT, 0, GATE, False, ACC)  # fmt: skip
        tl.debug_barrier()  # this program's stores of the gradients are visible to its loads
        _u, lb_sum = bwd_walk(q, kz, lg, v, do, q, zeros, dq, dkz, dlg, dv, zeros, lb_sum, lbv, p, bos, n, ts, heads,
                              hm, ck, cv, h_off, s_mask, 1, SK, SV, scale, H, K, V, KP, VP, BH, BT, 0, GATE, True,
                              True)  # fmt: skip
        if GATE == 2:
            store_heads(plb, lb_sum, p, heads, hm, ck, H, K)
