"""Small heads: GLA / HGRN2 with K, V <= SMALL_HEAD_MAX, each head's K x V state as element-wise channels.

The kernels: small_head_scan (each head's state scanned in registers, tile by tile) and, for grid lines of at most
16 tokens of 16-bit inputs, small_head_lines (both ways as decay-weighted score matrices on the tensor cores; the rule
since 2026-12-05, line_plans). Here: the launch plans (tiles by rule, segments, lines), the launches, and the torch
custom ops with their autograd formulas.

Long sequences with few state channels are cut into segments walked in parallel and joined as the chunked
kernels' are (`segment_combine`): a first walk finds each segment's own final state (backward: the gradient
reaching its start), the combine chains them, the second walk starts each segment from its true state.

Both ways (`directions`, hgrn.ops.hgrn2_directions): a line's program walks it forward, then backward; a grid's
rows are segments of the grid's width, its columns lines read in place with the width as token step (STRIDED),
added to the rows'. Inputs are read through their token strides, so the views chunk(3, -1) makes of a projection
are never copied.
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
from hgrn.ops.triton.chunk import segment_combine
from hgrn.ops.triton.precompile import ahead, together
from hgrn.ops.triton.small_head_lines import (
    FALLBACK_PROGRAMS,
    LINE,
    line_bwd_kernel,
    line_fallback_bwd_kernel,
    line_fallback_fwd_kernel,
    line_fwd_kernel,
)
from hgrn.ops.triton.small_head_scan import bwd_kernel, fwd_kernel

SMALL_HEAD_MAX = 8  # the largest K (and V) taken here; from 16 the chunked kernels are faster (results/bench/)
TILES = "HGRN_SMALL_TILES"  # the tile experiment's overrides (Plan)
REGISTERS_PER_SM = 65536  # sm_80 / sm_90: the most registers one program may hold
ONE_WAY_MAXNREG = 128  # one-way scans' register cap from head size 2 (make_plan)
PARALLEL_MAXNREG = 168  # the parallel form's register cap (rows' backward: 254 uncapped; H200: 2.18 -> 1.95 ms)


def fits(k: Tensor, v: Tensor) -> bool:
    """Whether heads of these sizes (k [.., K], v [.., V]) take the small-head path."""
    return k.shape[-1] <= SMALL_HEAD_MAX and v.shape[-1] <= SMALL_HEAD_MAX


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
    parallel: bool = False  # grid lines of at most LINE tokens in the parallel form (line_fwd_kernel)

    @property
    def P(self) -> int:
        return self.n_seqs * self.NS


def _tiles(H: int, K: int, V: int, tiles: dict[str, int], bt: int, maxnreg: int | None = None) -> dict[str, int | None]:
    """One warp per program holding about 32 state channels (BH heads, one channel per thread, a tile's BT steps in
    its registers, so the scan down the tile stays in-thread). Chosen by tile sweeps on an H200 (B8 T2048 d2048
    bf16, fwd+bwd ms, 2026-12-02). Before the loads were issued a tile ahead: head size 8 2.55 at (BH 1, BT 16, 1
    warp), 3.26 at (2, 8, 4 warps), 4.92 at (4, 8, 4); head size 2 1.10 at (8, 16, 1), 1.49 at (32, 8, 4), 1.74 at
    (128, 8, 4); larger tiles spill registers (up to 66 ms). With them, at (BT 16 / 8 / 32, 1 warp): head size 8
    1.92 / 1.88 / 2.46, 4 1.39 / 1.20 / 1.41, 2 0.90 / 0.78 / 1.57, 1 0.94 / 0.74 / 1.62; BT 8 again on 2026-12-03
    (GPU tests pass at both): 8 1.90, 4 1.23, 2 0.85, 1 1.05, so one-way scans kept BT 16 until the register cap
    made 8 faster (make_plan, 2026-12-05). Scans along a grid's lines take BT 8 (bt): with the V-major backward
    (2026-12-04, head size 8, 256 images of 16 x 16 tokens, 24 / 48 heads, fwd+bwd) 2.37 / 4.69 ms at BT 16 against
    1.86 / 3.66 at BT 8, while one-way at head size 4 / 8 it was 1.28 / 1.41 against 1.32 / 1.37. bt, maxnreg: the
    caller's rule (maxnreg None: uncapped); tiles: the experiment's overrides (HGRN_SMALL_TILES, maxnreg=0
    uncaps)."""
    KP, VP = pow2(K), pow2(V)
    cap = None if INTERPRET else tiles.get("maxnreg", maxnreg) or None
    return dict(KP=KP, VP=VP, BH=tiles.get("BH", min(pow2(H), max(32 // (KP * VP), 1))), BT=tiles.get("BT", bt),
                warps=4 if INTERPRET else tiles.get("warps", 1), maxnreg=cap, NS=tiles.get("NS", 0))  # fmt: skip


def make_plan(q: Tensor, v: Tensor, cu_seqlens: Tensor | None, segments: int | None = None) -> Plan:
    """The plan of a one-way scan: segments while the programs would not fill the GPU four times over. From head
    size 2 (K V >= 4) 8-step tiles with registers capped at ONE_WAY_MAXNREG: the backward then fits 16 one-warp
    programs per SM without stack (offline sm_90: 210-247 registers uncapped at 16 steps, 8-9 per SM). On an H100
    (2026-12-05, B 8, T 2048, d 2048, bf16, kernel sums of a forward + backward) at head size 8 / 4 / 2: 16 steps
    1.41 / 1.26 / 0.95 ms, 8 steps 1.32 / 0.96 / 0.76, 8 capped at 128 1.12 / 0.95 / 0.74 (at 96 1.22 / 0.95 /
    0.89; 16 capped at 128 1.73 / 1.31 / 1.21). The forward without a backward took 8 steps before (H200,
    2026-12-04: 0.23-0.32 ms against 0.33-0.44 at 16); at head size 1 16 steps stay (0.31-0.33 against 0.34-0.38)."""
    T, H, K = q.shape[1:]
    V = v.shape[-1]
    small = K * V < 4
    tiles = _tiles(H, K, V, tile_overrides(TILES), bt=16 if small else 8, maxnreg=None if small else ONE_WAY_MAXNREG)
    BT = tiles["BT"]
    n_seqs = q.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
    if segments is None:
        programs = n_seqs * cdiv(H, tiles["BH"])
        target = 2 * target_programs(q.device)
        segments = 1 if cu_seqlens is not None or programs >= target else cdiv(target, programs)
    segments = max(1, min(tiles.pop("NS") or segments, cdiv(T, 4 * BT)))
    L = cdiv(cdiv(max(T, 1), segments), BT) * BT
    NS = cdiv(T, L) if T else 1
    longest = L if cu_seqlens is None else int(cu_seqlens.diff().max()) if n_seqs else 0
    return Plan(n_seqs, T, NS, L, max(cdiv(longest, BT), 1), **tiles)


def line_plans(q: Tensor, v: Tensor, grid: tuple[int, int] | None) -> list[Plan] | None:
    """The launches of a scan both ways along each line: the sequences (grid None), or the rows (segments of the
    grid's width) and then the columns (strided) of a (height, width) grid. None where a one-way plan would cut
    the sequences into segments (too few lines to fill the GPU: each direction then runs on its own). Grids of lines
    of at most LINE tokens with 16-bit inputs take the parallel form where K = V divides LINE and H K is a multiple
    of LINE (BH slabs of LINE channels per program, one warp each, registers capped at PARALLEL_MAXNREG);
    HGRN_SMALL_TILES=PAR=0 keeps the scan, PAR=1 takes the form for fp32 too (exact fp32 dots: they spill). On an
    H200 (2026-12-05, bf16, 256 x 256 x 48 x 8, kernel time of a forward + backward): the scan 3.65 ms, the form
    2.18, capped at 168 registers 1.95 (sweep with factors up to e^60); hgrn2-tiny / small training steps 9,871 /
    5,171 images/s against DeiT's 17,712 / 8,906 (0.56x / 0.58x; results/bench/vit-step-*-par-*)."""
    if grid is None:
        plan = make_plan(q, v, None)
        return [plan] if plan.NS == 1 else None
    B, T, H, K = q.shape
    V = v.shape[-1]
    overrides = tile_overrides(TILES)
    tiles = _tiles(H, K, V, overrides, bt=8)
    tiles.pop("NS")
    height, width = grid
    in_slabs = max(grid) <= LINE and K == V and LINE % K == 0 and H * K % LINE == 0
    parallel = in_slabs and bool(overrides.get("PAR", q.dtype in (torch.bfloat16, torch.float16)))
    if parallel:  # BH slabs of LINE channels per program (the plan counts heads), one warp each
        slabs = overrides.get("BH", 1)
        warps = tiles["warps"] if INTERPRET else overrides.get("warps", slabs)
        maxnreg = None if INTERPRET else overrides.get("maxnreg", PARALLEL_MAXNREG) or None
        tiles.update(BH=slabs * LINE // K, BT=LINE, warps=warps, maxnreg=maxnreg)
    BT = tiles["BT"]
    rows = Plan(B, T, height, width, cdiv(width, BT), **tiles, parallel=parallel)
    return [rows, Plan(B, T, width, height, cdiv(height, BT), **tiles, strided=True, parallel=parallel)]


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
        fwd_kernel[grid](*inputs, o, q, local, q, logdec, *seq, MODE=1, HAS_H0=False, STORE_HT=True, SAVE=False,
                         **shape)  # fmt: skip
        starts, final = segment_combine(local, logdec, h0, plan.n_seqs, plan.NS, reverse, want_final)
    else:
        starts = h0
        final = q.new_empty(plan.n_seqs, H, K, V, dtype=torch.float32) if want_final else None
    fwd_kernel[grid](*inputs, o, q if starts is None else starts, q if plan.NS > 1 or final is None else final,
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
    plan = make_plan(q, v, cu, segments)
    o, final, saved, starts, logdec = _forward(q, kz, lg, lb, v, h0, scale, gate, reverse, cu, plan, want_final, save)
    return o, *or_empty((final, saved, starts if plan.NS > 1 else None, logdec), q)


@recurrence_forward.register_fake
def _(q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, segments, save):
    if cu is not None:
        raise NotImplementedError("cu_seqlens under torch.compile: the tile count is read from it; run it eagerly")
    ahead(recurrence_forward, (q, kz, lg, lb, v, h0, cu, scale, gate, reverse, want_final, segments, save))
    plan = make_plan(q, v, cu, segments)
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
        bwd_kernel[grid](*inputs, do, q, q, q, q, q, q, q, local, q, *seq, MODE=1, HAS_S0=False, HAS_DHT=False,
                         STORE_DH0=True, **shape)  # fmt: skip
        terminal, dh0 = segment_combine(local, logdec, dht, plan.n_seqs, plan.NS, not reverse, h0 is not None)
    else:
        terminal = dht
        dh0 = q.new_empty(plan.n_seqs, H, K, V, dtype=torch.float32) if h0 is not None else None
    dq, dkz, dlg, dv = _gradients(q, kz, lg, v)
    plb = _bound_sums(q, lb, plan)
    bwd_kernel[grid](*inputs, do, saved, q if starts is None else starts, q if terminal is None else terminal,
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
            grads = or_like((do, dq, dkz, dlg, dv, plb, tiles), q)
            line_bwd_kernel[launch](*inputs, *grads, *seq, **_slabs(shape, q.dtype))
            line_fallback_bwd_kernel[_fallback_grid(plan)](*inputs, *grads, *seq, plan.P, **_fallback(shape))
        else:
            bwd_kernel[launch](*inputs, do, q if plan.NTS == 1 else tiles, q, q, dq, dkz, q if dlg is None else dlg,
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
            line_fwd_kernel[grid](*inputs, o, tiles, *seq, **_slabs(shape, q.dtype))
            line_fallback_fwd_kernel[_fallback_grid(plan)](*inputs, o, tiles, *seq, plan.P, **_fallback(shape))
            tiles = tiles if save else None
        else:
            fwd_kernel[grid](*inputs, o, q, q, q if tiles is None else tiles, q, *seq, MODE=0, HAS_H0=False,
                             STORE_HT=False, SAVE=tiles is not None, **shape)  # fmt: skip
        saved.append(tiles)
    return o, saved


def _both_ways_saved(q: Tensor, v: Tensor, plan: Plan) -> Tensor | None:
    """What a launch both ways saves: the tile states [2, P, NTS - 1, H, K, V] (None for lines of one tile), or for
    the parallel form its slots [1 + 2 G P] int32 (G head groups; line_fwd_kernel)."""
    if plan.parallel:
        return q.new_empty(1 + 2 * cdiv(q.shape[2], plan.BH) * plan.P, dtype=torch.int32)
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
    """The second launch's (the scan of the steep lines): the plan's, one warp per head, its register cap lowered
    so that BH warps fit one multiprocessor's 64K registers (the parallel form's 16 heads of size 2 on 16 warps at
    its 168-register cap asked for 512 threads where 384 fit: H100, 2026-12-05)."""
    if INTERPRET:
        return shape
    fallback = dict(shape, num_warps=shape["BH"])
    if "maxnreg" in fallback:
        fallback["maxnreg"] = min(fallback["maxnreg"], REGISTERS_PER_SM // (32 * shape["BH"]))
    return fallback


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
    inputs = or_like((q, kz, lg, lb, v), q)
    seq = (q if cu is None else cu, plan.T, plan.NS, plan.L, plan.NTS, q.stride(-3), v.stride(-3), scale)
    shape = dict(H=H, K=K, V=v.shape[-1], KP=plan.KP, VP=plan.VP, BH=plan.BH, BT=plan.BT, GATE=gate,
                 STRIDED=plan.strided, ACC=acc, num_warps=plan.warps, **register_cap(plan.maxnreg))  # fmt: skip
    if not plan.parallel:  # (the parallel form's: _slabs)
        shape.update(REVERSE=reverse, IS_VARLEN=cu is not None, BOTH=both)
    return inputs, seq, shape, (cdiv(H, plan.BH), plan.P)


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
