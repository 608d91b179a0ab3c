"""Chunked GLA / HGRN2 kernels against the float64 reference: outputs, final states and every gradient.

On CPU the kernels run through the Triton interpreter in fp32 at small shapes (chunk 16 so that short sequences span
several chunks and segments); with a GPU (-m gpu) through hgrn.ops in bf16 / fp32 at benchmark shapes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from hgrn import ops
from hgrn.ops.triton import chunk, chunk_pairs
from hgrn.ops.triton._common import cdiv, pow2
from hgrn.ops.triton.chunk import GATE_GLA, GATE_HGRN2, GATE_HGRN2_LB, chunk_recurrence
from tests.helpers import assert_close, on_backend, record_launches

reference = on_backend("reference")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # interpreter: inf in masked (unused) entries

GATES = {  # gate logits z: log f = logsigmoid(z) (without a lower bound)
    "normal": lambda z: z,
    "steep": lambda z: z - 8.0,  # log f ~ -8 per step: chunks too steep for one midpoint, blocks of 4 are not
    "forget": lambda z: z - 20.0,  # log f ~ -20: the blocked path in every chunk
    "remember": lambda z: z * 0.1 + 13.8,  # f ~ 1 - 1e-6
    "mixed": lambda z: torch.cat([z[..., ::2] - 20.0, z[..., 1::2] * 0.1 + 13.8], -1),
    # each channel its own steepness, from f ~ 1 to log f ~ -40 per step (a block of 4 spans up to 120)
    "ramp": lambda z: z * 0.5 - torch.linspace(-10.0, 40.0, z.shape[-1], dtype=z.dtype),
    # one channel at log f ~ -60 per step: a block of 4 rows spans 180 there, beyond the blocked path
    "abyss": lambda z: torch.cat([z[..., :1] * 0.1 - 60.0, z[..., 1:]], -1),
}


def make_inputs(kind, B, T, H, K, V, *, gates="normal", h0=True, n_seqs=None, device="cpu", seed=0):
    """Random inputs in float64 (converted by the caller); n_seqs packs that many sequences into B = 1."""
    g = torch.Generator().manual_seed(seed)
    q, z = torch.randn(B, T, H, K, generator=g, dtype=torch.float64), torch.randn(B, T, H, K, generator=g)
    z = GATES[gates](z.double())
    v = torch.randn(B, T, H, V, generator=g, dtype=torch.float64)
    x = {"q": q, "v": v}
    if kind == "gla":
        x["k"] = torch.randn(B, T, H, K, generator=g, dtype=torch.float64)
        x["log_f"] = F.logsigmoid(z)
    else:
        x["f_logits"] = z
        if kind == "hgrn2_lb":
            x["lower_bound"] = torch.rand(H, K, generator=g, dtype=torch.float64) * 0.9
    if h0:
        x["initial_state"] = torch.randn(n_seqs or B, H, K, V, generator=g, dtype=torch.float64)
    return {name: t.to(device) for name, t in x.items()}


def run(fn, kind, inputs, dtype, exact=False, **kwargs):
    """(output, final state, gradients of a fixed random projection of both w.r.t. every input).

    Inputs are rounded to `dtype` (the lower bound to fp32, as a parameter-derived bound is); exact=True then runs
    in float64 on those rounded values, so only the computation differs between the two runs."""

    def leaf(name, t):
        t = t.to(torch.float32 if name == "lower_bound" else dtype)
        return (t.double() if exact else t).requires_grad_()

    leaves = {name: leaf(name, t) for name, t in inputs.items()}
    args = [leaves[n] for n in (("q", "k", "v", "log_f") if kind == "gla" else ("q", "v", "f_logits"))]
    if kind == "hgrn2_lb":
        args.append(leaves["lower_bound"])
    o, s = fn(*args, initial_state=leaves.get("initial_state"), output_final_state=True, **kwargs)
    g = torch.Generator(device=o.device).manual_seed(1)
    loss = (o.double() * torch.randn(o.shape, generator=g, device=o.device, dtype=torch.float64)).sum()
    loss = loss + (s.double() * torch.randn(s.shape, generator=g, device=o.device, dtype=torch.float64)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return o, s, dict(zip([f"d{n}" for n in leaves], grads, strict=True))


def interpreted(kind, chunk_size=16, segments=None):
    """The Triton path with a forced plan (the interpreter runs it on CPU tensors)."""
    gate = {"gla": GATE_GLA, "hgrn2": GATE_HGRN2, "hgrn2_lb": GATE_HGRN2_LB}[kind]

    def fn(*args, scale=1.0, **kwargs):
        if kind == "gla":
            q, k, v, lf = args
            return chunk_recurrence(q, k, lf, None, v, gate=gate, scale=scale, chunk_size=chunk_size,
                                    segments=segments, **kwargs)  # fmt: skip
        q, v, z, *lb = args
        return chunk_recurrence(q, z, None, lb[0] if lb else None, v, gate=gate, scale=scale,
                                chunk_size=chunk_size, segments=segments, **kwargs)  # fmt: skip

    return fn


def reference_fn(kind):
    return reference.gla_recurrence if kind == "gla" else reference.hgrn2_recurrence


def check(kind, inputs, fn, dtype, tol, gate_tol=None, **kwargs):
    o, s, grads = run(fn, kind, inputs, dtype, **kwargs)
    o_ref, s_ref, grads_ref = run(reference_fn(kind), kind, inputs, dtype, exact=True, **kwargs)
    assert_close("o", o, o_ref, tol)
    assert_close("final_state", s, s_ref, tol)
    for name, grad in grads.items():
        gate_grad = name in ("dlog_f", "df_logits", "dlower_bound")
        assert_close(name, grad, grads_ref[name], (gate_tol or tol) if gate_grad else tol)


cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests; the GPU runs the gpu ones")


@cpu_only
@pytest.mark.parametrize("kind", ["gla", "hgrn2", "hgrn2_lb"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_interpreted_matches_reference(kind, reverse):
    inputs = make_inputs(kind, 2, 37, 2, 16, 32, seed=3)
    check(kind, inputs, interpreted(kind), torch.float32, 2e-5, scale=0.7, reverse=reverse)


@cpu_only
@pytest.mark.parametrize("gates", ["forget", "remember", "mixed"])
def test_interpreted_extreme_gates(gates):
    """log f ~ -20 takes the blocked path; f = 1 - 1e-6 the factorised one; mixed chunks the blocked one."""
    inputs = make_inputs("hgrn2", 1, 40, 2, 16, 16, gates=gates, seed=5)
    check("hgrn2", inputs, interpreted("hgrn2"), torch.float32, 2e-5, gate_tol=1e-4)


@triton.jit
def _poison(W, a, k, g, C: tl.constexpr, MODE: tl.constexpr):
    """Stands in for the exact log-space path: NaN everywhere, so a result that used it fails the comparison."""
    if MODE == 0:
        return tl.full([C, C], float("nan"), tl.float32)
    else:
        return tl.full(g.shape, float("nan"), tl.float32)


def _poison_exact_path(monkeypatch) -> None:
    """The exact path returns NaN wherever it is called (the scores and the intra-chunk backward, both in
    chunk_pairs)."""
    monkeypatch.setattr(chunk_pairs, "pairwise", _poison)


@cpu_only
@pytest.mark.parametrize(
    ("kind", "gates", "blk"),
    [
        ("hgrn2", "steep", 4),
        ("hgrn2_lb", "forget", 4),
        ("hgrn2", "steep", 8),
        ("hgrn2", "mixed", 4),
        ("hgrn2_lb", "ramp", 4),
        ("gla", "forget", 2),
        ("gla", "ramp", 4),
        ("hgrn2", "abyss", 2),
        ("hgrn2_lb", "ramp", 1),
    ],
)
def test_interpreted_steep_chunks_take_the_blocked_path(kind, gates, blk, monkeypatch):
    """Chunks too steep for one midpoint are exact through blocks of rows: with the log-space path poisoned they
    still match the float64 reference (outputs, states, every gradient), at several block sizes (at 2 rows even
    log f ~ -60 per step; at 1 row every pair is a cross-block pair, four levels of halving)."""
    _poison_exact_path(monkeypatch)
    monkeypatch.setenv("HGRN_CHUNK_TILES", f"BLK={blk}")
    inputs = make_inputs(kind, 2, 45, 2, 16, 16, gates=gates, seed=29)
    check(kind, inputs, interpreted(kind), torch.float32, 2e-5, gate_tol=1e-4)


@cpu_only
def test_interpreted_chunk_of_32_in_blocks(monkeypatch):
    """The GPU's plan: chunks of 32 in 8 blocks of 4 (three levels of halving), reverse, lower bound."""
    _poison_exact_path(monkeypatch)
    inputs = make_inputs("hgrn2_lb", 1, 70, 2, 16, 16, gates="ramp", seed=31)
    check("hgrn2_lb", inputs, interpreted("hgrn2_lb", chunk_size=32), torch.float32, 2e-5, gate_tol=1e-4, reverse=True)


@cpu_only
@pytest.mark.parametrize(("kind", "gates"), [("hgrn2", "abyss"), ("gla", "rising")])
def test_interpreted_exact_path_where_blocks_cannot(kind, gates, monkeypatch):
    """A block whose own range exceeds 128 (log f ~ -60 per step), or a GLA log gate that rises, takes the exact
    log-space path: it matches the reference, and poisoning that path reaches the result."""
    inputs = make_inputs(kind, 1, 40, 2, 16, 16, gates="abyss" if gates == "abyss" else "forget", seed=37)
    if gates == "rising":  # log f ~ -20 with one step of +1 per chunk: g is not monotone
        inputs["log_f"][:, 5::16] = 1.0
    check(kind, inputs, interpreted(kind), torch.float32, 2e-5, gate_tol=1e-4)
    _poison_exact_path(monkeypatch)
    with pytest.raises(AssertionError, match="non-finite"):
        check(kind, inputs, interpreted(kind), torch.float32, 2e-5, gate_tol=1e-4)


def _half_steep(inputs: dict, kind: str) -> dict:
    """The inputs with log f ~ -20 per step on the second half of the sequence: its chunks take the steep paths,
    the first half's the fast one."""
    T = inputs["q"].shape[1]
    if kind == "gla":
        inputs["log_f"][:, T // 2 :] -= 20.0
    else:
        inputs["f_logits"][:, T // 2 :] -= 20.0
    if kind == "hgrn2_lb":  # a bound below 1e-4: log f ~ -10 per step there, the steep half stays steep
        inputs["lower_bound"] *= 1e-4
    return inputs


@cpu_only
@pytest.mark.parametrize(
    ("kind", "K", "tiles", "options"),
    [
        ("hgrn2_lb", 16, "", {"reverse": True}),
        ("gla", 32, "BK=16", {"reverse": True}),
        ("hgrn2", 16, "BLK=2", {"segments": 3}),
        ("hgrn2_lb", 16, "", {"length": 64}),
    ],
    ids=["hgrn2-lb-reverse", "gla-two-k-tiles-reverse", "hgrn2-segments", "hgrn2-lb-whole-chunks"],
)
def test_interpreted_gentle_and_steep_chunks(kind, K, tiles, options, monkeypatch):
    """Gentle and steep chunks in one launch (each sequence's first half on the fast path, its second on the steep
    ones), with two K tiles, reverse, segments, or whole chunks (64 tokens: only the unmasked body compiled): the
    float64 reference's outputs and gradients."""
    segments, length = options.pop("segments", None), options.pop("length", 70)
    monkeypatch.setenv("HGRN_CHUNK_TILES", tiles)
    inputs = _half_steep(make_inputs(kind, 1, length, 2, K, 16, seed=41), kind)
    check(kind, inputs, interpreted(kind, segments=segments), torch.float32, 2e-5, gate_tol=1e-4, **options)


@cpu_only
@pytest.mark.parametrize("kind", ["hgrn2_lb", "gla"])
def test_interpreted_whole_chunks_equal_masked_rows(kind, monkeypatch):
    """A dense batch whose length is a multiple of the chunk (EVEN: the flag each intra-chunk backward launch got is
    recorded) runs every chunked kernel on unmasked rows; the same sequences packed (cu_seqlens: masked rows) give
    bitwise equal outputs, states and gradients, in both directions."""
    log = []
    launch = chunk.intra_bwd_kernel.__getitem__

    class Recorded:  # the EVEN flag of each intra-chunk backward launch
        def __getitem__(self, grid):
            return lambda *args, **kw: (log.append(kw["EVEN"]), launch(grid)(*args, **kw))

    monkeypatch.setattr(chunk, "intra_bwd_kernel", Recorded())
    inputs = make_inputs(kind, 2, 64, 2, 16, 16, seed=47)
    packed = {n: t.reshape(1, -1, *t.shape[2:]) if t.shape[:2] == (2, 64) else t for n, t in inputs.items()}
    cu = torch.tensor([0, 64, 128])
    for reverse in (False, True):
        dense = run(interpreted(kind, segments=1), kind, inputs, torch.float32, reverse=reverse)
        rows = run(interpreted(kind), kind, packed, torch.float32, reverse=reverse, cu_seqlens=cu)
        assert torch.equal(dense[0].flatten(), rows[0].flatten()) and torch.equal(dense[1], rows[1])
        assert all(torch.equal(dense[2][n].flatten(), rows[2][n].flatten()) for n in dense[2])
    assert log == [True, False, True, False]


@cpu_only
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_interpreted_segments(reverse):
    """A row cut into segments (joined through segment_combine) equals the uncut recurrence."""
    inputs = make_inputs("hgrn2_lb", 2, 70, 1, 16, 16, seed=7)
    check("hgrn2_lb", inputs, interpreted("hgrn2_lb", segments=3), torch.float32, 2e-5, reverse=reverse)


@cpu_only
@pytest.mark.parametrize(("T", "segments"), [(64, None), (80, 3)], ids=["one-segment", "short-last-segment"])
def test_interpreted_whole_chunks(T, segments):
    """T a multiple of the chunk: the prep kernel holds only the full-chunk body (EVEN). Asked for 3 segments, T 80
    is cut into 48 + 32 tokens: the last segment has 2 chunks of the grid's 3, whose extra program must write
    nothing (without that check this test fails)."""
    inputs = make_inputs("hgrn2_lb", 2, T, 2, 16, 16, seed=41)
    check("hgrn2_lb", inputs, interpreted("hgrn2_lb", segments=segments), torch.float32, 2e-5, reverse=T == 80)


@cpu_only
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_interpreted_packed_sequences(reverse):
    cu = torch.tensor([0, 9, 9, 40, 53])  # includes an empty sequence
    inputs = make_inputs("gla", 1, 53, 2, 16, 16, n_seqs=4, seed=9)
    check("gla", inputs, interpreted("gla"), torch.float32, 2e-5, reverse=reverse, cu_seqlens=cu)


@cpu_only
@pytest.mark.parametrize("inline_da", [0, 1], ids=["pairs-kernel", "inline"])
@pytest.mark.parametrize("kind", ["gla", "hgrn2_lb"])
def test_interpreted_split_tiles(kind, inline_da, monkeypatch):
    """K and V split over programs: the reverse walk sums xk and do v^T over its V tiles (atomics), the
    chunk-parallel backward covers K in two tiles, each reading da or forming do v^T itself."""
    monkeypatch.setenv("HGRN_CHUNK_TILES", f"BK=16,BV=16,BV_REV=16,INLINE_DA={inline_da}")
    launched = record_launches(monkeypatch, chunk, ["pairs_kernel"])
    inputs = make_inputs(kind, 2, 37, 2, 32, 32, seed=13)
    check(kind, inputs, interpreted(kind), torch.float32, 2e-5, scale=0.5)
    assert launched == ([] if inline_da else ["pairs_kernel"])


@cpu_only
@pytest.mark.parametrize("inline_da", [0, 1], ids=["pairs-kernel", "inline"])
def test_interpreted_both_ways_to_da(inline_da, monkeypatch):
    """da = do v^T from pairs_kernel through memory, or formed inside the intra-chunk backward (where K is one tile;
    the default at K 64): the same gradients, steep chunks included."""
    monkeypatch.setenv("HGRN_CHUNK_TILES", f"INLINE_DA={inline_da}")
    launched = record_launches(monkeypatch, chunk, ["pairs_kernel"])
    inputs = make_inputs("hgrn2_lb", 2, 37, 2, 16, 24, gates="mixed", seed=17)
    check("hgrn2_lb", inputs, interpreted("hgrn2_lb"), torch.float32, 2e-5, gate_tol=1e-4, reverse=True)
    assert launched == ([] if inline_da else ["pairs_kernel"])


def infer(fn, kind, inputs, dtype, exact=False, **kwargs):
    """(output, final state) of a call without autograd: inputs rounded to dtype (exact: then run in float64)."""
    rounded = {n: t.to(torch.float32 if n == "lower_bound" else dtype) for n, t in inputs.items()}
    rounded = {n: t.double() if exact else t for n, t in rounded.items()}
    args = [rounded[n] for n in (("q", "k", "v", "log_f") if kind == "gla" else ("q", "v", "f_logits"))]
    args += [rounded["lower_bound"]] if kind == "hgrn2_lb" else []
    with torch.no_grad():
        return fn(*args, initial_state=rounded.get("initial_state"), output_final_state=True, **kwargs)


@cpu_only
@pytest.mark.parametrize(
    ("kind", "gates", "shape", "options"),
    [
        ("hgrn2_lb", "normal", (2, 45, 2, 16, 16), {"reverse": True}),
        ("hgrn2", "forget", (1, 40, 2, 12, 12), {}),  # every chunk blocked; a head size that is no power of 2
        ("hgrn2", "abyss", (1, 40, 2, 16, 16), {}),  # the exact path in every chunk
        ("gla", "ramp", (2, 37, 3, 5, 20), {"scale": 0.3}),  # odd K, V wider than K
        ("gla", "normal", (1, 53, 2, 16, 16), {"cu_seqlens": torch.tensor([0, 9, 9, 40, 53])}),
        ("hgrn2_lb", "mixed", (2, 70, 1, 16, 16), {"chunk_size": 32}),  # the GPU's chunk
    ],
    ids=["hgrn2-lb-rev", "hgrn2-forget-odd", "hgrn2-abyss", "gla-ramp-scale", "gla-packed", "hgrn2-lb-chunk32"],
)
def test_interpreted_inference_is_one_fused_kernel(kind, gates, shape, options, monkeypatch):
    """A forward that nothing will differentiate runs infer_kernel alone (no prep kernel, nothing saved): the float64
    reference's output and final state on every gate path, and exactly the saving path's output (FUSE=1: the plan
    fuses by default only at K 16 and 32)."""
    monkeypatch.setenv("HGRN_CHUNK_TILES", "FUSE=1")
    options = dict(options)  # the parameter's dict is shared; chunk_size is the plan's, not the op's
    chunk_size = options.pop("chunk_size", 16)
    n_seqs = options["cu_seqlens"].numel() - 1 if "cu_seqlens" in options else None
    inputs = make_inputs(kind, *shape, gates=gates, n_seqs=n_seqs, seed=43)
    fused, prep = (record_launches(monkeypatch, chunk, [name]) for name in ("infer_kernel", "prep_kernel"))
    o, s = infer(interpreted(kind, chunk_size), kind, inputs, torch.float32, **options)
    assert (len(fused), len(prep)) == (1, 0)
    o_ref, s_ref = infer(reference_fn(kind), kind, inputs, torch.float32, exact=True, **options)
    assert_close("o", o, o_ref, 2e-5)
    assert_close("final_state", s, s_ref, 2e-5)
    o_saving, s_saving, _ = run(interpreted(kind, chunk_size), kind, inputs, torch.float32, **options)
    assert torch.equal(o, o_saving.detach()) and torch.equal(s, s_saving.detach())


@cpu_only
def test_interpreted_inference_half_precision_and_unfused_plans(monkeypatch):
    """fp16 through the fused kernel; FUSE=0, a segmented row even with FUSE=1, and the default plan at K 64 take
    prep + walk, as before the fusion."""
    monkeypatch.setenv("HGRN_CHUNK_TILES", "FUSE=1")
    inputs = make_inputs("hgrn2_lb", 2, 45, 2, 16, 16, seed=47)
    o_ref, s_ref = infer(reference_fn("hgrn2_lb"), "hgrn2_lb", inputs, torch.float16, exact=True)
    o, s = infer(interpreted("hgrn2_lb", chunk_size=None), "hgrn2_lb", inputs, torch.float16)
    assert_close("o", o, o_ref, 1e-2)
    assert_close("final_state", s, s_ref, 1e-2)
    inputs = make_inputs("hgrn2_lb", 2, 70, 1, 16, 16, seed=47)  # long enough for two segments of 16-row chunks
    wide = make_inputs("hgrn2_lb", 1, 40, 1, 64, 64, seed=47)
    for tiles, segments, case in (("FUSE=0", 1, inputs), ("FUSE=1", 2, inputs), ("", 1, wide)):
        monkeypatch.setenv("HGRN_CHUNK_TILES", tiles)
        fused = record_launches(monkeypatch, chunk, ["infer_kernel"])
        o, s = infer(interpreted("hgrn2_lb", segments=segments), "hgrn2_lb", case, torch.float32)
        o_ref, s_ref = infer(reference_fn("hgrn2_lb"), "hgrn2_lb", case, torch.float32, exact=True)
        assert fused == []
        assert_close("o", o, o_ref, 2e-5)
        assert_close("final_state", s, s_ref, 2e-5)


def test_plan_takes_each_fusion_where_it_was_measured_faster(monkeypatch):
    """By default the inference forward is one kernel at K 16 and 32 (16 V columns per program) and do v^T is formed
    inside at K 16 and 32, not at 64 or 128 (timings in make_plan); FUSE=1 / INLINE_DA=1 force them only where
    they apply (one segment, K and V at most 64; one K tile). The inference kernel pipelines 2 stages at K 32."""
    monkeypatch.setenv("HGRN_CHUNK_TILES", "")

    def plan(K: int, segments: int = 1):
        q = torch.zeros(1, 256, 2, K)
        p = chunk.make_plan(q, q, None, segments=segments)
        return p.C, p.fuse_infer, p.inline_da, p.IBV

    assert [plan(K) for K in (16, 32, 64, 128)] == [(32, True, True, 16), (32, True, True, 16), (32, False, False, 64),
                                                    (32, False, False, 128)]  # fmt: skip
    monkeypatch.setenv("HGRN_CHUNK_TILES", "FUSE=1,INLINE_DA=1")
    assert [plan(K) for K in (16, 64, 128)] == [(32, True, True, 16), (32, True, True, 64), (32, False, False, 128)]
    assert plan(16, segments=2)[1:3] == (False, True)
    monkeypatch.setenv("HGRN_CHUNK_TILES", "")  # 2 pipeline stages at K 32, Triton's 3 elsewhere
    assert [chunk.make_plan(torch.zeros(1, 256, 2, K), torch.zeros(1, 256, 2, K), None).istages
            for K in (16, 32, 64, 128)] == [3, 2, 3, 3]  # fmt: skip


def test_the_plans_host_arithmetic_is_tritons():
    """pow2 and cdiv (plain Python, cheaper on the host than Triton's JIT functions) give Triton's values."""
    assert [pow2(n) for n in range(-2, 1100)] == [triton.next_power_of_2(max(n, 1)) for n in range(-2, 1100)]
    pairs = [(a, b) for a in range(0, 200, 3) for b in range(1, 70)]
    assert [cdiv(a, b) for a, b in pairs] == [triton.cdiv(a, b) for a, b in pairs]


@cpu_only
def test_interpreted_half_precision_and_default_plan():
    """fp16 inputs (tf32 dots, exact in the interpreter) with the plan the GPU would use (chunk 32)."""
    inputs = make_inputs("hgrn2_lb", 1, 45, 2, 16, 16, h0=False, seed=11)
    check("hgrn2_lb", inputs, interpreted("hgrn2_lb", chunk_size=None), torch.float16, 1e-2)


@cpu_only
@pytest.mark.parametrize(
    ("gate", "options"),
    [
        (GATE_GLA, {"reverse": True}),
        (GATE_HGRN2_LB, {"h0": True, "want_final": True, "segments": 2}),
        (GATE_HGRN2_LB, {"h0": True, "want_final": True, "save": False}),
    ],
    ids=["gla-reverse", "hgrn2-lb-state-segments", "hgrn2-lb-fused-inference"],
)
def test_interpreted_custom_ops_pass_opcheck(gate, options):
    """torch.library.opcheck on hgrn::chunk_forward (and through its autograd formula, hgrn::chunk_backward): the
    schema, the fake implementation's shapes and dtypes against the real outputs, the autograd registration, and
    AOT dispatch with static and dynamic shapes (what torch.compile does with them). save=False: the fused forward,
    whose saved outputs are empty (no input requires grad there, as when chunk_recurrence passes it)."""
    g = torch.Generator().manual_seed(0)
    B, T, H, K, V = 1, 40, 2, 16, 16
    save = options.get("save", True)
    q, kz, v = (torch.randn(B, T, H, n, generator=g).requires_grad_(save) for n in (K, K, V))
    lg = -torch.rand(B, T, H, K, generator=g).requires_grad_(save) if gate == GATE_GLA else None
    lb = torch.rand(H, K, generator=g).mul(0.9).requires_grad_(save) if gate == GATE_HGRN2_LB else None
    h0 = torch.randn(B, H, K, V, generator=g).requires_grad_(save) if options.get("h0") else None
    args = (q, kz, lg, lb, v, h0, None, 0.25, gate, options.get("reverse", False), options.get("want_final", False),
            16, options.get("segments"), save)  # fmt: skip
    torch.library.opcheck(torch.ops.hgrn.chunk_forward.default, args)


def test_bad_arguments_raise_the_reference_errors():
    kernels = on_backend("triton")
    q = torch.zeros(2, 8, 2, 4)
    with pytest.raises(ValueError, match=r"initial_state has shape \(2, 2, 3, 4\); expected \(2, 2, 4, 3\)"):
        kernels.gla_recurrence(q, q, torch.zeros(2, 8, 2, 3), q, initial_state=torch.zeros(2, 2, 3, 4))
    with pytest.raises(ValueError, match="lower_bound"):
        kernels.hgrn2_recurrence(q, q, q, torch.zeros(8))
    with pytest.raises(ValueError, match="batch size must be 1"):
        kernels.hgrn2_recurrence(q, q, q, cu_seqlens=torch.tensor([0, 8]))


# --- GPU: the dispatched path (hgrn.ops) at benchmark shapes ---------------------------------------------------

BF16_TOL, BF16_GATE_TOL = 1e-2, 3e-2


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(8, 2048, 16, 128), (8, 2048, 32, 64), (1, 8192, 8, 256)], ids=str)
def test_gpu_hgrn2_bf16_benchmark_shapes(shape):
    B, T, H, D = shape
    inputs = make_inputs("hgrn2_lb", B, T, H, D, D, device="cuda", seed=B + T)
    check("hgrn2_lb", inputs, ops.hgrn2_recurrence, torch.bfloat16, BF16_TOL, BF16_GATE_TOL, scale=D**-0.5)


@pytest.mark.gpu
@pytest.mark.parametrize("chunk_size", [16, 32, 64])
@pytest.mark.parametrize("K", [16, 32, 64])
def test_gpu_chunk_sizes_bf16(chunk_size, K):
    """Every chunk size at the K tiles the rule picks (bf16 at C 64, BK 32 was miscompiled on 4 warps)."""
    inputs = make_inputs("hgrn2", 2, 300, 2, K, 32, device="cuda", seed=K + chunk_size)
    check("hgrn2", inputs, interpreted("hgrn2", chunk_size), torch.bfloat16, BF16_TOL, BF16_GATE_TOL)


@pytest.mark.gpu
@pytest.mark.parametrize("gates", ["normal", "forget", "abyss"])
@pytest.mark.parametrize(("H", "K", "chunk_size"), [(128, 16, None), (64, 32, None), (32, 64, None), (32, 64, 64)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_gpu_inference(H, K, chunk_size, gates, dtype, monkeypatch):
    """The fused forward (no autograd; FUSE=1 wherever it applies) at the expand-ratio benchmark's heads (16, 32, 64
    channels; the plan's chunk, and 64 rows at K 64), every gate path: the float64 reference's output and final
    state."""
    monkeypatch.setenv("HGRN_CHUNK_TILES", "FUSE=1")
    tol = BF16_TOL if dtype == torch.bfloat16 else 1e-4
    inputs = make_inputs("hgrn2_lb", 2, 1000, H, K, K, gates=gates, device="cuda", seed=H + K)
    o, s = infer(interpreted("hgrn2_lb", chunk_size), "hgrn2_lb", inputs, dtype, reverse=True)
    o_ref, s_ref = infer(reference_fn("hgrn2_lb"), "hgrn2_lb", inputs, dtype, exact=True, reverse=True)
    assert_close("o", o, o_ref, tol)
    assert_close("final_state", s, s_ref, tol)


@pytest.mark.gpu
@pytest.mark.parametrize("gates", ["steep", "forget", "remember", "mixed", "ramp", "abyss"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_gpu_extreme_gates(gates, dtype):
    inputs = make_inputs("hgrn2", 2, 1000, 4, 128, 128, gates=gates, device="cuda", seed=13)
    tol = BF16_TOL if dtype == torch.bfloat16 else 1e-4
    check("hgrn2", inputs, ops.hgrn2_recurrence, dtype, tol, 3 * tol, reverse=True)


@pytest.mark.gpu
@pytest.mark.parametrize("tiles", ["", "INLINE_DA=1", "prep_warps=2"], ids=["rule", "inline-da", "prep-2-warps"])
@pytest.mark.parametrize(("H", "K"), [(128, 16), (64, 32), (32, 64), (16, 128)])
def test_gpu_gentle_and_steep_halves(tiles, H, K, monkeypatch):
    """The rule (at K 16 and 32 every chunk-parallel kernel and walk on 2 warps, the prep on 1), INLINE_DA=1
    (do v^T formed inside the intra-chunk backward where K is one tile: K 16 to 64 here) and the prep kernel on 2
    warps (the rule's own only at K 64), in bf16, gentle and steep halves (no lower bound: at _half_steep's bounds
    below 1e-4 the bound's bf16 gradient misses the tolerance on any path, 3.3e-2, H200)."""
    monkeypatch.setenv("HGRN_CHUNK_TILES", tiles)
    inputs = _half_steep(make_inputs("hgrn2", 2, 1024, H, K, K, device="cuda", seed=59), "hgrn2")
    check("hgrn2", inputs, ops.hgrn2_recurrence, torch.bfloat16, BF16_TOL, 3 * BF16_TOL, reverse=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_gpu_gla_packed_and_segmented(dtype):
    tol = BF16_TOL if dtype == torch.bfloat16 else 1e-4
    cu = torch.tensor([0, 100, 1000, 1001, 3000], device="cuda")
    inputs = make_inputs("gla", 1, 3000, 4, 64, 128, n_seqs=4, device="cuda", seed=17)
    check("gla", inputs, ops.gla_recurrence, dtype, tol, 3 * tol, cu_seqlens=cu)
    inputs = make_inputs("gla", 1, 20000, 2, 64, 64, device="cuda", seed=19)  # few programs: segments
    check("gla", inputs, ops.gla_recurrence, dtype, tol, 3 * tol, reverse=True)


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_long_sequence_65536():
    inputs = make_inputs("hgrn2", 1, 65536, 2, 64, 64, gates="mixed", device="cuda", seed=23)
    check("hgrn2", inputs, ops.hgrn2_recurrence, torch.float32, 1e-4, 3e-4)
    check("hgrn2", inputs, ops.hgrn2_recurrence, torch.bfloat16, BF16_TOL, BF16_GATE_TOL)
