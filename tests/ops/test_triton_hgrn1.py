"""HGRN1 scan kernels against the float64 reference: real and complex, both directions, packed, states, gradients.

Dense batches run the chained forward (decoupled look-back); HGRN_SCAN_TILES forces small tiles so the interpreter
walks several time and channel blocks, and prefix=0 forces every look-back through the aggregates."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hgrn import ops
from hgrn.ops.triton import hgrn1_scan, small_head
from tests.helpers import assert_close, on_backend, record_launches, rel_err
from tests.ops import test_triton_chunk as chunk_tests

reference = on_backend("reference")
triton_ops = on_backend("triton")
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests; the GPU runs the gpu ones")


def make_inputs(B, T, D, *, complex_valued, gate_shift=1.0, h0=True, n_seqs=None, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, *((2,) if complex_valued else ()), generator=g, dtype=torch.float64)
    inputs = {"x": x, "log_f": F.logsigmoid(torch.randn(B, T, D, generator=g, dtype=torch.float64) + gate_shift)}
    if complex_valued:
        inputs["theta"] = torch.randn(D, generator=g, dtype=torch.float64)
    if h0:
        inputs["initial_state"] = torch.randn(n_seqs or B, *x.shape[2:], generator=g, dtype=torch.float64)
    return {name: t.to(device) for name, t in inputs.items()}


def run(fn, inputs, dtype, exact=False, **kwargs):
    """Outputs and gradients of a fixed random projection; exact=True: float64 on the dtype-rounded inputs."""
    leaves = {n: (t.to(dtype).double() if exact else t.to(dtype)).requires_grad_() for n, t in inputs.items()}
    o, s = fn(leaves["x"], leaves["log_f"], leaves.get("theta"), initial_state=leaves.get("initial_state"),
              output_final_state=True, **kwargs)  # fmt: skip
    g = torch.Generator(device=o.device).manual_seed(1)
    loss = (o.double() * torch.randn(o.shape, generator=g, device=o.device, dtype=torch.float64)).sum()
    loss = loss + (s.double() * torch.randn(s.shape, generator=g, device=o.device, dtype=torch.float64)).sum()
    return o, s, dict(zip([f"d{n}" for n in leaves], torch.autograd.grad(loss, list(leaves.values())), strict=True))


def check(fn, inputs, dtype, tol, **kwargs):
    o, s, grads = run(fn, inputs, dtype, **kwargs)
    o_ref, s_ref, grads_ref = run(reference.hgrn1_recurrence, inputs, dtype, exact=True, **kwargs)
    assert_close("h", o, o_ref, tol)
    assert_close("final_state", s, s_ref, tol)
    for name, grad in grads.items():
        assert_close(name, grad, grads_ref[name], tol)


def scan(x, log_f, theta, **kwargs):
    return hgrn1_scan.scan(x, log_f, theta, **{"initial_state": None, "reverse": False, "cu_seqlens": None, **kwargs})


@cpu_only
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_interpreted_matches_reference(complex_valued, reverse):
    inputs = make_inputs(2, 45, 24, complex_valued=complex_valued, seed=3)
    check(scan, inputs, torch.float32, 1e-5, reverse=reverse)


@cpu_only
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
def test_interpreted_packed_and_extreme(complex_valued):
    cu = torch.tensor([0, 7, 7, 30, 50])
    inputs = make_inputs(1, 50, 20, complex_valued=complex_valued, n_seqs=4, seed=5)
    check(scan, inputs, torch.float32, 1e-5, reverse=True, cu_seqlens=cu)
    check(scan, make_inputs(1, 40, 20, complex_valued=complex_valued, gate_shift=-20.0, seed=7), torch.float32, 1e-5)


@pytest.fixture
def poisoned_workspace(monkeypatch):
    """Workspace never written reads NaN, so reading a slot before its flag shows up in the output."""
    monkeypatch.setattr(hgrn1_scan, "_workspace", lambda n, device: torch.full((n,), float("nan"), device=device))


@cpu_only
@pytest.mark.usefixtures("poisoned_workspace")
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("h0", [False, True], ids=["zero_h0", "h0"])
def test_interpreted_chained_tiles(monkeypatch, complex_valued, reverse, h0):
    """45 steps = 5 blocks of 8 + 5 padded rows, 20 channels = 2 blocks of 8 + 4 masked; long memory (f ~ 0.98) so a
    wrong carry from any earlier block shows."""
    monkeypatch.setenv("HGRN_SCAN_TILES", "BT=8,BD=8")
    inputs = make_inputs(2, 45, 20, complex_valued=complex_valued, gate_shift=4.0, h0=h0, seed=13)
    check(scan, inputs, torch.float32, 1e-5, reverse=reverse)


@cpu_only
@pytest.mark.usefixtures("poisoned_workspace")
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_interpreted_chained_whole_tiles(monkeypatch, complex_valued, reverse):
    """T and D multiples of the tile: the unmasked path, rows addressed from one base row (backwards when reversed).
    Without gradients the op skips its autograd node; the values must not change."""
    monkeypatch.setenv("HGRN_SCAN_TILES", "BT=8,BD=16")
    inputs = make_inputs(2, 48, 32, complex_valued=complex_valued, gate_shift=4.0, seed=23)
    check(scan, inputs, torch.float32, 1e-5, reverse=reverse)
    args = {n: t.float() for n, t in inputs.items()}
    with torch.no_grad():
        o, s = scan(args["x"], args["log_f"], args.get("theta"), initial_state=args["initial_state"],
                    output_final_state=True, reverse=reverse)  # fmt: skip
    o_grad, s_grad, _ = run(scan, inputs, torch.float32, reverse=reverse)
    assert torch.equal(o, o_grad.detach()) and torch.equal(s, s_grad.detach())


@cpu_only
@pytest.mark.usefixtures("poisoned_workspace")
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_interpreted_chained_aggregates_only(monkeypatch, complex_valued, reverse):
    """The interpreter runs tiles in ticket order, so look-back always meets a prefix at once; prefix=0 makes every
    tile compose all earlier aggregates down to h0, the path a GPU tile takes while its predecessors lag."""
    monkeypatch.setenv("HGRN_SCAN_TILES", "BT=8,BD=16,prefix=0")
    inputs = make_inputs(3, 37, 24, complex_valued=complex_valued, gate_shift=4.0, seed=17)
    check(scan, inputs, torch.float32, 1e-5, reverse=reverse)


@cpu_only
def test_dense_batches_take_the_chained_kernels(monkeypatch):
    """Dense batches run the chained forward and backward, packed ones the sequential kernels; bwd=0 (an A/B switch)
    sends a dense batch's backward to the sequential kernel."""
    names = ("_fwd_kernel", "_fwd_chained_kernel", "_bwd_kernel", "_bwd_chained_kernel")
    log = record_launches(monkeypatch, hgrn1_scan, names)
    inputs = make_inputs(1, 12, 8, complex_valued=False, h0=False, seed=19)
    x, log_f = inputs["x"].float().requires_grad_(), inputs["log_f"].float()
    scan(x, log_f, None, output_final_state=False)[0].sum().backward()
    scan(x, log_f, None, output_final_state=False, cu_seqlens=torch.tensor([0, 12]))[0].sum().backward()
    monkeypatch.setenv("HGRN_SCAN_TILES", "bwd=0")
    scan(x, log_f, None, output_final_state=False)[0].sum().backward()
    assert log == ["_fwd_chained_kernel", "_bwd_chained_kernel", "_fwd_kernel", "_bwd_kernel", "_fwd_chained_kernel",
                   "_bwd_kernel"]  # fmt: skip


@cpu_only
@pytest.mark.usefixtures("poisoned_workspace")
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize(
    ("tiles", "reverse"), [("BT=8,BD=16,bBT=4,bBD=8", True), ("BT=8,BD=8,bwd=0", False)],
    ids=["backward-tiles", "sequential-backward"],
)  # fmt: skip
def test_interpreted_backward_tiles_and_sequential_switch(monkeypatch, complex_valued, tiles, reverse):
    """The chained backward on tiles of its own (48 steps, 32 channels: whole tiles of 4 x 8 under 8 x 16 forward
    tiles), and a dense batch's backward on the sequential kernel (bwd=0), against the reference."""
    monkeypatch.setenv("HGRN_SCAN_TILES", tiles)
    inputs = make_inputs(2, 48, 32, complex_valued=complex_valued, gate_shift=4.0, seed=29)
    check(scan, inputs, torch.float32, 1e-5, reverse=reverse)


@cpu_only
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
def test_custom_ops_pass_opcheck(complex_valued):
    """torch.library.opcheck on hgrn::hgrn1_scan_forward (and through its autograd formula the backward op): schema,
    fake shapes against the real outputs, autograd registration, AOT dispatch with static and dynamic shapes."""
    g = torch.Generator().manual_seed(0)
    B, T, D = 2, 20, 8
    x = torch.randn(B, T, D, *((2,) if complex_valued else ()), generator=g).requires_grad_()
    log_f = -torch.rand(B, T, D, generator=g).requires_grad_()
    theta = torch.randn(D, generator=g).requires_grad_() if complex_valued else None
    h0 = torch.randn(B, *x.shape[2:], generator=g).requires_grad_()
    torch.library.opcheck(torch.ops.hgrn.hgrn1_scan_forward.default, (x, log_f, theta, h0, None, complex_valued, True))


# --- HGRN2 at head size 1 (expand ratio 1): this scan with the gate formed inside and o = scale q h -------------


def hgrn2_inputs(kind, B, T, H, *, gates="normal", h0=True, device="cpu", seed=0):
    return chunk_tests.make_inputs(kind, B, T, H, 1, 1, gates=gates, h0=h0, device=device, seed=seed)


@cpu_only
@pytest.mark.usefixtures("poisoned_workspace")
@pytest.mark.parametrize(
    ("kind", "tiles", "reverse", "h0"),
    [("hgrn2_lb", "BT=8,BD=8", False, True), ("hgrn2_lb", "BT=8,BD=16", True, False),
     ("hgrn2", "BT=8,BD=8,prefix=0", True, True), ("hgrn2_lb", "", False, True),
     ("hgrn2_lb", "BT=8,BD=16,bBT=4,bBD=8", False, True), ("hgrn2_lb", "BT=8,BD=8,bwd=0", True, True)],
    ids=["partial-tiles", "whole-tiles-rev", "aggregates-only", "rule", "backward-tiles", "sequential-backward"],
)  # fmt: skip
def test_interpreted_hgrn2_head_size_one(monkeypatch, kind, tiles, reverse, h0):
    """hgrn.ops.hgrn2_recurrence at K = V = 1 takes the chained scan (the small-head kernels are never called):
    outputs, final state and every gradient against the float64 reference, 45 or 48 steps over 20 or 32 heads (partial
    and whole tiles), long memory, both directions, with and without an initial state."""
    monkeypatch.setenv("HGRN_SCAN_TILES", tiles)
    monkeypatch.setattr(small_head, "recurrence", None)
    T, H = (48, 32) if "BD=16" in tiles else (45, 20)
    inputs = hgrn2_inputs(kind, 2, T, H, gates="remember" if tiles else "mixed", h0=h0, seed=T + H)
    chunk_tests.check(kind, inputs, triton_ops.hgrn2_recurrence, torch.float32, 2e-5, gate_tol=1e-4, scale=0.7,
                      reverse=reverse)  # fmt: skip


@cpu_only
def test_interpreted_hgrn2_head_size_one_half_precision_and_packed():
    """fp16 inputs; packed sequences keep the small-head kernels (the chained forward serves dense batches)."""
    inputs = hgrn2_inputs("hgrn2_lb", 2, 45, 3, seed=5)
    chunk_tests.check("hgrn2_lb", inputs, triton_ops.hgrn2_recurrence, torch.float16, 1e-2, gate_tol=3e-2)
    cu = torch.tensor([0, 9, 9, 40, 53])
    packed = chunk_tests.make_inputs("hgrn2_lb", 1, 53, 2, 1, 1, n_seqs=4, seed=9)
    chunk_tests.check("hgrn2_lb", packed, triton_ops.hgrn2_recurrence, torch.float32, 2e-5, cu_seqlens=cu)


@cpu_only
def test_hgrn2_head_size_one_custom_ops_pass_opcheck():
    """torch.library.opcheck on hgrn::hgrn2_scalar_forward (and through its autograd formula the backward op)."""
    g = torch.Generator().manual_seed(0)
    B, T, D = 2, 20, 8
    q, v, z = (torch.randn(B, T, D, generator=g).requires_grad_() for _ in range(3))
    lb = torch.rand(D, generator=g).mul(0.9).requires_grad_()
    h0 = torch.randn(B, D, generator=g).requires_grad_()
    torch.library.opcheck(torch.ops.hgrn.hgrn2_scalar_forward.default, (q, v, z, lb, h0, 0.7, True, True, True))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("gates", ["normal", "mixed"])
def test_gpu_hgrn2_head_size_one(dtype, gates):
    inputs = hgrn2_inputs("hgrn2_lb", 2, 3000, 512, gates=gates, device="cuda", seed=7)
    tol = chunk_tests.BF16_TOL if dtype == torch.bfloat16 else 1e-4
    chunk_tests.check("hgrn2_lb", inputs, ops.hgrn2_recurrence, dtype, tol, 3 * tol, reverse=gates == "mixed")


@pytest.mark.gpu
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_gpu_benchmark_shape(complex_valued, dtype):
    inputs = make_inputs(8, 2048, 2048, complex_valued=complex_valued, device="cuda", seed=11)
    check(ops.hgrn1_recurrence, inputs, dtype, 1e-2 if dtype == torch.bfloat16 else 1e-5, reverse=True)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
def test_gpu_long_packed_extreme(complex_valued):
    cu = torch.tensor([0, 1, 40000, 65536], device="cuda")
    inputs = make_inputs(1, 65536, 256, complex_valued=complex_valued, gate_shift=14.0, n_seqs=3, device="cuda")
    # f = 1 - 1e-6 is stored to within 6e-8 in fp32, and over 65536 steps the decay a^t inherits that: 1e-3, not 1e-5
    check(ops.hgrn1_recurrence, inputs, torch.float32, 1e-3, cu_seqlens=cu)


@pytest.mark.gpu
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
def test_gpu_chained_benchmark_shape_bf16(complex_valued):
    """The benchmark shape in the forward direction (the test above runs it reversed)."""
    inputs = make_inputs(8, 2048, 2048, complex_valued=complex_valued, device="cuda", seed=29)
    check(ops.hgrn1_recurrence, inputs, torch.bfloat16, 1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize(("dtype", "gate_shift", "tol"), [(torch.float32, 14.0, 2e-3), (torch.bfloat16, 1.0, 1e-2)],
                         ids=["fp32_long_memory", "bf16"])  # fmt: skip
def test_gpu_chained_65536(complex_valued, dtype, gate_shift, tol):
    """4096 time blocks in a row; with f = 1 - 1e-6 the first token still counts at the last. fp32 tolerance 2e-3:
    dtheta sums 65536 products of size ~1e5 per channel in fp32 (measured 1.1e-3 on an H200, backward unchanged)."""
    inputs = make_inputs(2, 65536, 256, complex_valued=complex_valued, gate_shift=gate_shift, device="cuda", seed=31)
    check(ops.hgrn1_recurrence, inputs, dtype, tol, reverse=complex_valued)


@pytest.mark.gpu
@pytest.mark.usefixtures("poisoned_workspace")
@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("tiles", ["", "prefix=0"], ids=["default", "aggregates_only"])
def test_gpu_chained_stress(monkeypatch, complex_valued, tiles):
    """50 forwards of one input into NaN-poisoned workspaces: a slot read before its flag, or a stale line, gives
    NaN or a different answer. Not bit-for-bit: whether a tile meets a predecessor's aggregate or its prefix depends
    on timing and changes the fp32 rounding (about 1e-7), so runs must agree to 1e-6 and the reference to 1e-5."""
    monkeypatch.setenv("HGRN_SCAN_TILES", tiles)
    T = 2048 if tiles == "" else 1024  # aggregates only: look-back walks all earlier blocks
    inputs = make_inputs(8, T, 2048, complex_valued=complex_valued, device="cuda", seed=37)
    args = {n: t.float() for n, t in inputs.items()}
    with torch.no_grad():
        h0 = inputs["initial_state"]
        ref, ref_s = reference.hgrn1_recurrence(inputs["x"], inputs["log_f"], inputs.get("theta"), initial_state=h0,
                                                output_final_state=True)  # fmt: skip
        first, first_s = scan(args["x"], args["log_f"], args.get("theta"), initial_state=args["initial_state"],
                              output_final_state=True)  # fmt: skip
        assert_close("h", first, ref, 1e-5)
        assert_close("final_state", first_s, ref_s, 1e-5)
        for i in range(50):
            o, s = scan(args["x"], args["log_f"], args.get("theta"), initial_state=args["initial_state"],
                        output_final_state=True)  # fmt: skip
            assert torch.isfinite(o).all() and torch.isfinite(s).all(), f"run {i}: non-finite values"
            assert rel_err(o, first) <= 1e-6 and rel_err(s, first_s) <= 1e-6, f"run {i} differs from the first"
