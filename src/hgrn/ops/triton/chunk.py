"""Chunked GLA / HGRN2: S_t = diag(f_t) S_{t-1} + k_t^T v_t, o_t = scale q_t S_t, in chunks of C tokens. The launch
plan (tiles, segments, fusions) and the custom ops hgrn::chunk_forward / chunk_backward with their autograd; the kernels
and what each computes are in hgrn.ops.triton.chunk_kernels, the intra-chunk pair math in chunk_pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hgrn.ops.triton._common import (
    INTERPRET,
    cdiv,
    dot_mode,
    empty_grads,
    needs_grad,
    or_empty,
    or_like,
    pow2,
    present_grads,
    register_cap,
    target_programs,
    tile_overrides,
)
from hgrn.ops.triton.chunk_kernels import (
    infer_kernel,
    intra_bwd_kernel,
    pairs_kernel,
    prep_kernel,
    segment_combine_kernel,
    walk_fwd_kernel,
    walk_rev_kernel,
)
from hgrn.ops.triton.precompile import ahead, together

GATE_GLA, GATE_HGRN2, GATE_HGRN2_LB = 0, 1, 2


@dataclass(frozen=True)
class Plan:
    """Tiles and pseudo-sequences for one call; chosen by rule (no autotuning, so the first call only compiles)."""

    n_seqs: int  # sequences (B, or packed sequences)
    NS: int  # segments per sequence
    L: int  # segment length (tokens)
    NCH: int  # chunks per pseudo-sequence (at most)
    KP: int
    VP: int
    C: int  # chunk length
    even: bool  # every chunk full (dense batch, T a multiple of C): kernels hold only the unmasked chunk body
    BLK: int  # rows per block of the blocked path (steep chunks): a power of 2 dividing C
    BK: int  # K columns per program of the chunk-parallel backward and of the yq walk
    BV: int  # V columns per program of the forward walk
    BV_REV: int  # V columns per program of the reverse walk (xk is summed over its tiles)
    warps: int  # of the forward walks
    rwarps: int  # of the reverse walk
    maxnreg: int | None  # register cap of the walks (None: the compiler's choice)
    pwarps: int  # of the chunk-parallel kernels but the prep
    prep_warps: int  # of the prep kernel
    pmaxnreg: int | None  # of the prep kernel (168 on 4 warps: 0.36 -> 0.29 ms at B8 T2048 H16 D128 on an H200)
    fuse_infer: bool  # a forward that saves nothing runs prep and walk as one kernel (infer_kernel)
    IBV: int  # V columns per program of infer_kernel
    iwarps: int  # of infer_kernel
    istages: int  # software-pipeline stages of infer_kernel's chunk loop (Triton's default: 3)
    inline_da: bool  # the intra-chunk backward forms do v^T itself (each K tile), no pairs_kernel and no da in memory

    @property
    def P(self) -> int:
        return self.n_seqs * self.NS


def make_plan(
    q: Tensor,
    v: Tensor,
    cu_seqlens: Tensor | None,
    *,
    chunk_size: int | None = None,
    segments: int | None = None,
) -> Plan:
    """The rule. HGRN_CHUNK_TILES="C=64,BV=128,maxnreg=128" overrides its choices (tile experiments,
    python -m hgrn.bench.sweep; FUSE=0/1 and INLINE_DA=0/1 switch the two fusions, EVEN=0 plans as if some chunk
    were partial)."""
    T, H, K = q.shape[1:]
    V = v.shape[-1]
    tiles = tile_overrides("HGRN_CHUNK_TILES")
    n_seqs = q.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
    KP, VP = max(pow2(K), 16), max(pow2(V), 16)
    # 32-row chunks up to head size 128, 16 beyond. (64-row chunks at head size 16 were faster on an H200, fwd+bwd
    # 2.63 -> 2.17 ms at 8 x 2048 x 128 heads x 16, but their bf16 lower-bound gradient misses the tests' tolerance
    # on mixed gates over long sequences: 5.0e-2 against 3e-2, 2026-12-05, at 2, 4 or 8 warps, with or without
    # the pairs kernel; 32-row chunks pass.)
    C = tiles.get("C", chunk_size or (32 if max(KP, VP) <= 128 else 16))
    BLK = min(tiles.get("BLK", 4), C)
    BK, BV, BV_REV = tiles.get("BK", min(KP, 64)), tiles.get("BV", min(VP, 64)), tiles.get("BV_REV", min(VP, 128))
    if segments is None:
        programs = n_seqs * H * (VP // BV)
        target = target_programs(q.device)
        segments = 1 if cu_seqlens is not None or 2 * programs >= target else min(cdiv(target, programs), 64)
    segments = max(1, min(tiles.get("NS", segments), cdiv(T, 4 * C)))
    L = cdiv(cdiv(T, segments), C) * C
    NS = cdiv(T, L) if T else 1
    longest = L if cu_seqlens is None else int(cu_seqlens.diff().max()) if n_seqs else 0
    # Triton 3.6 miscompiles the bf16 intra-chunk backward at 64-row chunks on 4 warps (H200: wrong dq and gate
    # gradients, or an illegal address; 2026-12-04 with 32-wide K tiles, 2026-12-05 with 16-wide ones and do v^T formed
    # inside (inline_da); 8 warps are exact), so the chunk-parallel kernels (pairs, that backward and, above K 64, the
    # prep) run there on 8. At K 16 and 32 they run on 2 (H100, 2026-12-05, 8 x 2048 x 64 heads x 32, kernel sums of a
    # forward + backward: 1.55 against 1.97 ms at random gates, 2.02 against 2.60 with every chunk steep; at K 16, 128
    # heads, with the walks on 2 warps: 1.58 against 2.19 ms, steep 2.00 against 2.80; at K 64 2 warps took 2.87x their
    # random-gate time on steep chunks; the GPU suite passed with every chunk-parallel kernel on 2 warps, H200,
    # 2026-12-05)
    pwarps = 4 if INTERPRET else tiles.get("pwarps", 8 if C == 64 else 2 if KP <= 32 else 4)
    # The prep kernel's warps apart: 1 at K 16 and 32, 2 at K 64 at every chunk size (64-row chunks too, where pwarps
    # is 8: the miscompile above is the intra-chunk backward's), its registers capped at 168 only on 2 or more warps.
    # At K 64 on 2 warps it took 0.141 ms against 0.202 at random gates and 0.238 against 0.451 with every chunk steep
    # (log f -8 per step; H200, 2026-12-06, 8 x 2048 x 32 heads x 64, every chunk-parallel kernel on 2 warps, kernel
    # times), while the intra-chunk backward on 2 warps took 0.533 and 2.480 ms against 0.577 and 0.774, so only the
    # prep goes to 2. H100, 2026-12-07, the same shape, before -> after: kernel sums of a forward + backward 1.283 ->
    # 1.245 ms at random gates, 1.701 -> 1.533 steep (1.33x -> 1.23x); uncapped there 1.265 and 1.525. K 16 on 1 warp
    # (H100, 2026-12-07, 8 x 2048 x 128 heads x 16): the prep 0.248 -> 0.213 ms at random gates, 0.444 -> 0.282 steep;
    # kernel sums 1.494 -> 1.470 and 1.867 -> 1.727 (1.25x -> 1.17x); it needs 168 registers capped or not (offline,
    # Triton 3.6). K 32 on 1 warp (H100, 2026-12-07, 8 x 2048 x 64 heads x 32): capped, 0.244 -> 0.193 ms at random
    # gates but 0.420 -> 0.430 steep (offline: a 528-byte stack, 384 spill instructions); uncapped (255 registers, no
    # spills) 0.228 and 0.366, kernel sums 1.331 -> 1.317 and 1.794 -> 1.721 (1.35x -> 1.31x). The GPU tests of
    # test_triton_chunk.py passed with the prep on 1 and 2 warps at every head size (results/bench/NOTES.md, sessions
    # 56-58).
    prep_warps = pwarps if INTERPRET else tiles.get("prep_warps", 1 if KP <= 32 else 2 if KP <= 64 else pwarps)
    # The walks (forward and reverse) on fewer warps at small heads: more programs resident per SM, the 1,024 programs
    # of K 16 in one round instead of 2 (forward, 4 warps) and 4 (reverse, 8 warps; offline sm_90 occupancy). H100,
    # 2026-12-05, 8 x 2048, d 2048, kernel sums of a forward + backward: K 16 2.02 -> 1.71 ms on 2 and 2 warps (1 and
    # 1: 1.73), K 32 1.57 -> 1.43, K 64 1.40 -> 1.31 with the reverse walk on 4; K 128 keeps 4 and 8 (reverse on 4
    # with 64-wide V tiles 1.91 against 1.36).
    walk_warps = (2, 2) if KP <= 32 else (4, 4) if KP == 64 else (4, 8)
    warps, rwarps = (4, 4) if INTERPRET else (tiles.get("warps", walk_warps[0]), tiles.get("rwarps", walk_warps[1]))
    maxnreg = tiles.get("maxnreg") or None
    pmaxnreg = None if INTERPRET else tiles.get("pmaxnreg", 168 if prep_warps > 1 else 0) or None
    # Two fusions that save memory traffic (see the Plan fields), kept by default only where they measured faster. The
    # inference forward in one kernel at K 16 and 32, on 1 warp per 16 V columns: twice the programs at K 32, each
    # repeating the gate work (H100, 2026-12-07, 8 x 2048, d 2048, bf16, forward kernels at random gates / log f -8: K
    # 16 0.275 / 0.441 ms against prep + walk's 0.375 / 0.442; K 32 0.289 / 0.504 against 0.317 / 0.637 on 2 warps and
    # one 32-wide tile, and prep + walk's 0.367 / 0.501; the fused kernel's walk carries each chunk's steep path, so its
    # steep chunks cost more than the prep's parallel ones). Not at K 64, where it took 0.579 / 1.025 (1 warp, 32-wide
    # tiles) or 0.678 / 0.980 (2 warps) against prep + walk's 0.276 / 0.373. Do v^T inside the intra-chunk backward at K
    # 16 and 32 (at first at K 64 too, H200: fwd+bwd 1.40 against 1.61, then 1.40 against 1.49 ms; with the
    # chunk-parallel kernels and walks on 2 warps at K 16 / 32, H100, 2026-12-05, session 36, fwd+bwd kernel sums: K 16
    # 1.50 against 1.57 ms, steep 1.87 against 1.99; K 32 1.32 against 1.41, steep 1.76 against 1.89;
    # results/bench/expand-ratio-*-2026-12-05-2.md; before those warps the H200 had K 16 2.66 against 2.62 and K 32 2.15
    # against 2.07). Not at K 64 since the blocked path's changes of session 61 (its intra-chunk backward spills more
    # there; H100, 2026-12-07, 8 x 2048 x 32 heads x 64, fwd+bwd kernel sums: 1.232 against 1.283 ms at random gates,
    # 1.499 against 1.524 with every chunk steep). FUSE=1 / INLINE_DA=1 take them wherever they apply: one segment, V <=
    # 64 and K <= 64 for the first, V <= 64 for the second (by default only where K is one tile; with several, each K
    # tile's program forms do v^T again: at K 32 on 16-wide tiles 1.494 ms against 1.317 on one, H100, 2026-12-07).
    fuse_infer = NS == 1 and VP <= 64 and KP <= 64 and bool(tiles.get("FUSE", KP <= 32))
    IBV = min(tiles.get("IBV", 16 if KP <= 32 else VP), VP)
    iwarps = 4 if INTERPRET else tiles.get("iwarps", 1 if KP <= 32 else warps)
    # Its loads 1 chunk ahead instead of 2 at K 32 (H100, 2026-12-07, 8 x 2048 x 64 heads x 32, the kernel's time at
    # random gates / log f -8: 0.275 / 0.476 ms against 0.291 / 0.494-0.509 on 3 stages, 0.292 / 0.513 on 1); at
    # K 16 2, 3 and 4 stages took 0.277-0.278 ms at random gates, 1 stage 0.290.
    istages = tiles.get("istages", 2 if KP == 32 else 3)
    inline_da = VP <= 64 and bool(tiles.get("INLINE_DA", KP == BK and KP <= 32))
    # Each chunk-parallel kernel is one launch, each chunk taking its own path (fast, blocked or exact). A split into
    # a fast pass over every chunk and a second launch over the steep ones it listed was faster at random gates at
    # K 64 and 128 (H100, 2026-12-05: 1.21 / 1.33 against 1.29 / 1.37 ms), but 1.59x / 1.47x under steep gates against
    # one launch's 1.33x / 1.22x (issue 13 bounds that at 1.3x), and slower at K 16 and 32; it was removed after
    # sessions 31-34 (results/bench/NOTES.md).
    # Whole chunks (EVEN): every kernel's rows unmasked, as prep's since session 3 (tiles from one scalar first row
    # everywhere now; the same arithmetic, bitwise equal in the interpreter). H200, 2026-12-05: forward + backward
    # kernels 2.49 against 2.60 ms masked at K 16, 1.30 against 1.35 at K 128. Offline, instructions before -> after
    # at K 16 / 128: forward walk 408 -> 384 / 920 -> 664, yq walk 440 -> 400 / 1,160 -> 952, reverse walk 504 -> 480 /
    # 1,144 + 48 B of stack -> 984, intra-chunk backward (with its 1/f by rcp) 3,552 -> 3,440 / 6,816 -> 6,504.
    even = cu_seqlens is None and T % C == 0 and bool(tiles.get("EVEN", 1))
    return Plan(n_seqs, NS, L, max(cdiv(longest, C), 1), KP, VP, C, even, BLK, BK, BV, BV_REV, warps, rwarps,
                maxnreg, pwarps, prep_warps, pmaxnreg, fuse_infer, IBV, iwarps, istages, inline_da)  # fmt: skip


def _parallel(plan: Plan, flags: dict, prep: bool = False) -> dict:
    """Launch options of the chunk-parallel kernels (prep: the prep kernel's warps and register cap, more programs
    resident)."""
    warps = plan.prep_warps if prep else plan.pwarps
    return {**flags, "num_warps": warps, **register_cap(plan.pmaxnreg if prep else None)}


def _per_chunk(q: Tensor, plan: Plan, cu: Tensor | None) -> Tensor:
    """A [P, NCH, H, K] fp32 buffer with one row per chunk. Zeroed where some rows belong to no chunk (packed or
    segmented sequences shorter than NCH chunks), since those are summed; dense batches fill every row."""
    shape = (plan.P, plan.NCH, *q.shape[2:])
    dense = cu is None and plan.NS == 1 and q.shape[1] > 0
    return q.new_empty(shape, dtype=torch.float32) if dense else q.new_zeros(shape, dtype=torch.float32)


def segment_combine(
    local: Tensor, logdec: Tensor, init: Tensor | None, n_seqs: int, NS: int, descending: bool, final: bool
) -> tuple[Tensor, Tensor | None]:
    """Join the segments' own states local [P = n_seqs * NS, H, K, V] (log decays logdec [P, H, K]): the states
    before each segment [P, H, K, V] and after the last one [N, H, K, V] (None unless `final`)."""
    _, H, K, V = local.shape
    before = torch.empty_like(local)
    after = local.new_empty(n_seqs, H, K, V) if final else None
    block = 1024
    segment_combine_kernel[(cdiv(H * K * V, block), n_seqs)](
        *or_like((local, logdec, init, before, after), local),
        NS, H * K * V, V, BLOCK=block, DESCENDING=descending, HAS_INIT=init is not None, STORE_FINAL=final,
    )  # fmt: skip
    return before, after


# The two halves are torch.library custom ops, so torch.compile keeps a recurrence inside its graph as one opaque node
# (its fake implementation gives the output shapes), and the autograd formula pairs them. Custom ops return no None
# and alias no input: an absent final state or segment start is an empty tensor, and the state before each chunk of a
# one-segment walk is h0 itself, taken again in the backward.
FORWARD_SCHEMA = (
    "(Tensor q, Tensor kz, Tensor? lg, Tensor? lb, Tensor v, Tensor? h0, Tensor? cu, float scale, int gate, "
    "bool reverse, bool want_final, int? chunk_size, int? segments, bool save) "
    "-> (Tensor o, Tensor final, Tensor starts, Tensor qi, Tensor ks, Tensor A, Tensor gl)"
)
BACKWARD_SCHEMA = (
    "(Tensor do, Tensor? dht, Tensor q, Tensor kz, Tensor? lg, Tensor? lb, Tensor v, Tensor? h0, Tensor starts, "
    "Tensor qi, Tensor ks, Tensor A, Tensor gl, Tensor? cu, float scale, int gate, bool reverse, int? chunk_size, "
    "int? segments) -> (Tensor dq, Tensor dkz, Tensor dlg, Tensor dlb, Tensor dv, Tensor dh0)"
)


@torch.library.custom_op("hgrn::chunk_forward", mutates_args=(), schema=FORWARD_SCHEMA)
def chunk_forward(q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, chunk_size, segments, save):
    """GLA (gate=GATE_GLA: kz = k, lg = log f) or HGRN2 (kz = gate logits, lb = lower bound or None); tensors
    contiguous. Returns o, the final state (empty unless want_final), the state before each segment (empty for one
    segment) and what the backward reads: q e^g, k e^{g_C - g}, tril(A), the chunks' log decays gl (empty tensors,
    all four, for a forward that saves nothing (save False) where the plan fuses it)."""
    args = (q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, chunk_size, segments, save)
    together(chunk_forward, args)
    plan = make_plan(q, v, cu, chunk_size=chunk_size, segments=segments)
    T, H, K = q.shape[1:]
    V = v.shape[-1]
    flags = _flags(q, plan, reverse, cu)
    if _fused(plan, save):
        o, final = torch.empty_like(v), _final_state(q, v, plan, want_final)
        infer_kernel[(plan.VP // plan.IBV, H, plan.P)](
            *or_like((q, kz, lg, lb, v, o, h0, final if want_final else None, cu), q), T, plan.NS, plan.L,
            float(scale), H=H, K=K, V=V, KP=plan.KP, BVW=plan.IBV, BLK=plan.BLK, GATE=gate, HAS_H0=h0 is not None,
            STORE_HT=want_final, **{**flags, "num_warps": plan.iwarps, "num_stages": plan.istages},
            **register_cap(plan.maxnreg),
        )  # fmt: skip
        return o, final, *(q.new_empty(0) for _ in range(5))
    seq = (q if cu is None else cu, T, plan.NS, plan.L, plan.NCH)
    o, final, qi, ks, A, gl = _forward_outputs(q, v, plan, cu, want_final and plan.NS == 1)  # segments: combined
    gates = or_like((q, kz, lg, lb), q)
    prep = dict(H=H, K=K, KP=plan.KP, BLK=plan.BLK, GATE=gate, **_parallel(plan, flags, prep=True))
    prep_kernel[(plan.NCH, H, plan.P)](*gates, qi, ks, A, gl, *seq, **prep)
    walk = (qi, ks, A, v, v, gl)
    grid = (plan.VP // plan.BV, H, plan.P)
    shape = dict(H=H, K=K, V=V, BKW=plan.KP, BVW=plan.BV, **flags, **register_cap(plan.maxnreg))
    if plan.NS > 1:
        local = q.new_empty(plan.P, H, K, V, dtype=torch.float32)
        walk_fwd_kernel[grid](*walk, o, q, local, q, q, *seq, scale, MODE=2, HAS_H0=False, STORE_HT=True, **shape)
        starts, after = segment_combine(local, gl.sum(1), h0, plan.n_seqs, plan.NS, reverse, want_final)
        final = final if after is None else after
    else:
        starts = q.new_empty(0)
    first = starts if plan.NS > 1 else h0
    walk_fwd_kernel[grid](*walk, o, q if first is None else first, final if plan.NS == 1 and want_final else q,
                           q, q, *seq, scale, MODE=0, HAS_H0=first is not None,
                           STORE_HT=plan.NS == 1 and want_final, **shape)  # fmt: skip
    return o, final, starts, qi, ks, A, gl


@chunk_forward.register_fake
def _(q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, chunk_size, segments, save):
    if cu is not None:
        raise NotImplementedError("cu_seqlens under torch.compile: the chunk count is read from it; run it eagerly")
    ahead(chunk_forward, (q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, chunk_size, segments, save))
    plan = make_plan(q, v, cu, chunk_size=chunk_size, segments=segments)
    if _fused(plan, save):
        return torch.empty_like(v), _final_state(q, v, plan, want_final), *(q.new_empty(0) for _ in range(5))
    o, final, qi, ks, A, gl = _forward_outputs(q, v, plan, cu, want_final)
    starts = q.new_empty(plan.P, *q.shape[2:], v.shape[-1], dtype=torch.float32) if plan.NS > 1 else q.new_empty(0)
    return o, final, starts, qi, ks, A, gl


def _fused(plan: Plan, save: bool) -> bool:
    """Whether this forward runs as the one infer_kernel (nothing saved, one segment, the plan allows)."""
    return not save and plan.fuse_infer


def _final_state(q: Tensor, v: Tensor, plan: Plan, want_final: bool) -> Tensor:
    """The final state [N, H, K, V] in fp32, allocated; empty unless want_final."""
    return q.new_empty(plan.n_seqs, *q.shape[2:], v.shape[-1], dtype=torch.float32) if want_final else q.new_empty(0)


def _forward_outputs(q: Tensor, v: Tensor, plan: Plan, cu: Tensor | None, want_final: bool) -> tuple[Tensor, ...]:
    """o, the final state (empty unless want_final), qi, ks, A and gl, allocated."""
    store = torch.bfloat16 if dot_mode(q.dtype) == 0 else torch.float32
    A = q.new_empty(*q.shape[:3], plan.C, dtype=store)
    qi, ks = torch.empty_like(q, dtype=store), torch.empty_like(q, dtype=store)
    return torch.empty_like(v), _final_state(q, v, plan, want_final), qi, ks, A, _per_chunk(q, plan, cu)


def _flags(q: Tensor, plan: Plan, reverse: bool, cu: Tensor | None) -> dict:
    return dict(
        C=plan.C, REVERSE=reverse, IS_VARLEN=cu is not None, DOT=dot_mode(q.dtype), EVEN=plan.even, num_warps=plan.warps
    )


@torch.library.custom_op("hgrn::chunk_backward", mutates_args=(), schema=BACKWARD_SCHEMA)
def chunk_backward(do, dht, q, kz, lg, lb, v, h0, starts, qi, ks, A, gl, cu, scale, gate, reverse, chunk_size,
                   segments):  # fmt: skip
    """The gradients of chunk_forward's inputs q, kz, lg, lb, v, h0 from do (and dht, the final state's); those of
    absent inputs are empty tensors."""
    together(chunk_backward, (do, dht, q, kz, lg, lb, v, h0, starts, qi, ks, A, gl, cu, scale, gate, reverse,
                              chunk_size, segments))  # fmt: skip
    plan = make_plan(q, v, cu, chunk_size=chunk_size, segments=segments)
    T, H, K = q.shape[1:]
    V = v.shape[-1]
    flags = _flags(q, plan, reverse, cu)
    starts = starts if plan.NS > 1 else h0
    seq = (q if cu is None else cu, T, plan.NS, plan.L, plan.NCH)
    walk = (qi, ks, A, v, do, gl)
    rev = dict(H=H, K=K, V=V, KP=plan.KP, BVW=plan.BV_REV, **{**flags, "num_warps": plan.rwarps},
               **register_cap(plan.maxnreg))  # fmt: skip
    grid_rev = (plan.VP // plan.BV_REV, H, plan.P)
    dh0 = None
    if plan.NS > 1:  # the gradient reaching each segment's end from the later segments
        local = q.new_empty(plan.P, H, K, V, dtype=torch.float32)
        walk_rev_kernel[grid_rev](*walk, v, q, q, q, local, *seq, scale, MODE=2, HAS_DHT=False,
                                   STORE_DH0=True, ATOMIC=False, **rev)  # fmt: skip
        terminal, dh0 = segment_combine(local, gl.sum(1), dht, plan.n_seqs, plan.NS, not reverse, h0 is not None)
    else:
        terminal = dht
    atomic = grid_rev[0] > 1
    # xk and yq enter dq, dk once, so they are kept at the operands' precision (bf16 for bf16 inputs), as the
    # walks' other outputs; xk summed over V tiles (atomics) stays fp32
    xk = torch.zeros(q.shape, device=q.device) if atomic else torch.empty_like(q, dtype=qi.dtype)
    dv = torch.empty_like(v)
    x0 = q.new_empty(plan.n_seqs, H, K, V, dtype=torch.float32) if plan.NS == 1 and h0 is not None else None
    dstates = q.new_empty(plan.P, plan.NCH, H, K, V, dtype=qi.dtype)
    walk_rev_kernel[grid_rev](*walk, dv, xk, dstates, q if terminal is None else terminal,
                               q if x0 is None else x0, *seq, scale, MODE=0, HAS_DHT=terminal is not None,
                               STORE_DH0=x0 is not None, ATOMIC=atomic, **rev)  # fmt: skip
    dh0 = x0 if plan.NS == 1 else dh0
    yq = torch.empty_like(q, dtype=qi.dtype)
    chunk_starts = _per_chunk(q, plan, cu)  # dlog f at each chunk's first step
    walk_fwd_kernel[(plan.KP // plan.BK, H, plan.P)](
        *walk, yq, q if starts is None else starts, q, dstates, chunk_starts, *seq, scale, H=H, K=K, V=V,
        BKW=plan.BK, BVW=plan.VP,
        MODE=1, HAS_H0=starts is not None, STORE_HT=False, **flags, **register_cap(plan.maxnreg),
    )  # fmt: skip
    da = q if plan.inline_da else q.new_empty(*q.shape[:3], plan.C, dtype=torch.float32)
    if not plan.inline_da:
        pairs_kernel[(plan.NCH, H, plan.P)](v, do, da, *seq[:-1], H=H, V=V, VP=plan.VP, **_parallel(plan, flags))
    dq, dkz = torch.empty_like(q), torch.empty_like(kz)
    dlg = None if lg is None else torch.empty_like(lg)
    plb = _per_chunk(q, plan, cu) if lb is not None else None
    grid_chunks = (plan.NCH * (plan.KP // plan.BK), H, plan.P)
    gates = or_like((q, kz, lg, lb), q)
    grads = or_like((dq, dkz, dlg, plb), q)
    intra_bwd_kernel[grid_chunks](*gates, gl, da, v, do, xk, yq, chunk_starts, *grads, *seq, scale, H=H, K=K,
                                  BK=plan.BK, V=V, VP=plan.VP, BLK=plan.BLK, GATE=gate, INLINE_DA=plan.inline_da,
                                  **_parallel(plan, flags))  # fmt: skip
    dlb = None if lb is None else plb.sum((0, 1)).to(lb.dtype)
    dh0 = None if h0 is None else dh0.to(h0.dtype)
    return or_empty((dq, dkz, dlg, dlb, dv, dh0), q)


@chunk_backward.register_fake
def _(do, dht, q, kz, lg, lb, v, h0, starts, qi, ks, A, gl, cu, scale, gate, reverse, chunk_size, segments):
    ahead(chunk_backward, (do, dht, q, kz, lg, lb, v, h0, starts, qi, ks, A, gl, cu, scale, gate, reverse, chunk_size,
                           segments))  # fmt: skip
    return empty_grads((q, kz, lg, lb, v, h0), q)


def _save_for_backward(ctx, inputs: tuple, output: tuple) -> None:
    q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, chunk_size, segments, _save = inputs
    _, _, starts, qi, ks, A, gl = output
    ctx.save_for_backward(q, kz, lg, lb, v, h0, cu, starts, qi, ks, A, gl)
    ctx.options = (scale, gate, reverse, want_final, chunk_size, segments)
    ctx.mark_non_differentiable(starts, qi, ks, A, gl)  # saved for the backward, never differentiated
    ctx.set_materialize_grads(False)


def _backward(ctx, do: Tensor, dfinal: Tensor | None, *_: Tensor | None) -> tuple[Tensor | None, ...]:
    q, kz, lg, lb, v, h0, cu, starts, qi, ks, A, gl = ctx.saved_tensors
    scale, gate, reverse, want_final, chunk_size, segments = ctx.options
    dht = dfinal.contiguous() if want_final and dfinal is not None else None
    grads = torch.ops.hgrn.chunk_backward(do.contiguous(), dht, q, kz, lg, lb, v, h0, starts, qi, ks, A, gl, cu,
                                          scale, gate, reverse, chunk_size, segments)  # fmt: skip
    return *present_grads((q, kz, lg, lb, v, h0), grads), None, None, None, None, None, None, None, None


chunk_forward.register_autograd(_backward, setup_context=_save_for_backward)


def chunk_recurrence(
    q: Tensor,
    kz: Tensor,
    lg: Tensor | None,
    lb: Tensor | None,
    v: Tensor,
    *,
    gate: int,
    scale: float = 1.0,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int | None = None,
    segments: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Run the chunked kernels (arguments already checked); chunk_size / segments override the plan (tests)."""
    q, kz, lg, lb, v, h0 = (None if t is None else t.contiguous() for t in (q, kz, lg, lb, v, initial_state))
    save = needs_grad((q, kz, lg, lb, v, h0))
    o, final, *_ = torch.ops.hgrn.chunk_forward(q, kz, lg, lb, v, h0, cu_seqlens, float(scale), gate, reverse,
                                                output_final_state, chunk_size, segments, save)  # fmt: skip
    return o, final if output_final_state else None
