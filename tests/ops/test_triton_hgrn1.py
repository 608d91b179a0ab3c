"""HGRN1 scan kernels against the float64 reference: real and complex, both directions, packed, states, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hgrn import ops
from hgrn.ops import reference
from hgrn.ops.triton import hgrn1_scan
from tests.helpers import assert_close

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
