"""The reference ops: chunked parallel form == step-by-step loop, in float64, outputs, states and gradients."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from hgrn.ops import gla_recurrence, hgrn1_recurrence, hgrn2_recurrence, lower_bounded_gate
from tests.helpers import assert_close, gla_inputs, grads, on_backend, with_grad

naive = on_backend("naive")  # the step loops: the ground truth
SHAPES = [(1, 1, 1, 1, 1), (2, 15, 2, 4, 3), (2, 16, 3, 8, 8), (1, 53, 2, 5, 7)]


def shape_id(shape: tuple[int, ...]) -> str:
    return "B{}-T{}-H{}-K{}-V{}".format(*shape)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("use_h0", [False, True], ids=["zero-h0", "h0"])
def test_gla_chunked_matches_loop(shape, reverse, use_h0):
    B, T, H, K, V = shape
    q, k, v, log_f = gla_inputs(*shape, seed=T)
    h0 = torch.randn(B, H, K, V, dtype=torch.float64) if use_h0 else None
    inputs = with_grad(q, k, v, log_f) + ([h0.requires_grad_()] if use_h0 else [])

    def run(fn):
        kwargs = dict(scale=0.7, initial_state=inputs[4] if use_h0 else None, output_final_state=True, reverse=reverse)
        o, s = fn(*inputs[:4], **kwargs)
        return o, s, grads(o, s, inputs)

    o, s, dx = run(gla_recurrence)
    o_ref, s_ref, dx_ref = run(naive.gla_recurrence)
    assert_close("o", o, o_ref, 1e-10)
    assert_close("final_state", s, s_ref, 1e-10)
    for name, a, b in zip(["dq", "dk", "dv", "dlog_f", "dh0"], dx, dx_ref, strict=False):
        assert_close(name, a, b, 1e-10)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("bounded", [False, True], ids=["no-lb", "lb"])
def test_hgrn2_chunked_matches_loop(reverse, bounded):
    B, T, H, K = 2, 21, 3, 4
    g = torch.Generator().manual_seed(7)
    q, f_logits = (torch.randn(B, T, H, K, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, T, H, 5, generator=g, dtype=torch.float64)
    lb = torch.rand(H, K, generator=g, dtype=torch.float64) * 0.9 if bounded else None
    h0 = torch.randn(B, H, K, 5, generator=g, dtype=torch.float64)
    inputs = with_grad(q, v, f_logits, h0) + (with_grad(lb) if bounded else [])

    def run(fn):
        bound = inputs[4] if bounded else None
        o, s = fn(*inputs[:3], bound, initial_state=inputs[3], output_final_state=True, reverse=reverse)
        return o, s, grads(o, s, inputs)

    o, s, dx = run(hgrn2_recurrence)
    o_ref, s_ref, dx_ref = run(naive.hgrn2_recurrence)
    assert_close("o", o, o_ref, 1e-10)
    assert_close("final_state", s, s_ref, 1e-10)
    for name, a, b in zip(["dq", "dv", "df_logits", "dh0", "dlower_bound"], dx, dx_ref, strict=False):
        assert_close(name, a, b, 1e-10)


@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("T", [1, 16, 45])
def test_hgrn1_chunked_matches_loop(complex_valued, reverse, T):
    B, D = 2, 6
    g = torch.Generator().manual_seed(T)
    x = torch.randn(B, T, D, *((2,) if complex_valued else ()), generator=g, dtype=torch.float64)
    log_f = F.logsigmoid(torch.randn(B, T, D, generator=g, dtype=torch.float64) + 1)
    theta = torch.randn(D, generator=g, dtype=torch.float64) if complex_valued else None
    h0 = torch.randn(B, *x.shape[2:], generator=g, dtype=torch.float64)
    inputs = with_grad(x, log_f, h0) + (with_grad(theta) if complex_valued else [])

    def run(fn):
        th = inputs[3] if complex_valued else None
        o, s = fn(inputs[0], inputs[1], th, initial_state=inputs[2], output_final_state=True, reverse=reverse)
        return o, s, grads(o, s, inputs)

    o, s, dx = run(hgrn1_recurrence)
    o_ref, s_ref, dx_ref = run(naive.hgrn1_recurrence)
    assert_close("h", o, o_ref, 1e-10)
    assert_close("final_state", s, s_ref, 1e-10)
    for name, a, b in zip(["dx", "dlog_f", "dh0", "dtheta"], dx, dx_ref, strict=False):
        assert_close(name, a, b, 1e-10)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("op", ["gla", "hgrn2", "hgrn1"])
def test_low_precision_inputs_match_the_float64_loop(op, dtype, tol):
    """Half-precision inputs are accumulated in float32; states come back in float32, outputs in the input dtype."""
    q, k, v, log_f = gla_inputs(2, 37, 2, 4, 4, seed=13)
    if op == "gla":
        args, ref_fn, fn = (q, k, v, log_f), naive.gla_recurrence, gla_recurrence
    elif op == "hgrn2":
        args, ref_fn, fn = (q, v, k), naive.hgrn2_recurrence, hgrn2_recurrence
    else:
        args, ref_fn, fn = (v.flatten(2), log_f.flatten(2)), naive.hgrn1_recurrence, hgrn1_recurrence
    out, state = fn(*(a.to(dtype) for a in args), output_final_state=True)
    assert out.dtype == dtype and state.dtype == torch.float32
    ref, ref_state = ref_fn(*(a.to(dtype).double() for a in args), output_final_state=True)  # same rounded inputs
    assert_close("o", out, ref, tol)
    assert_close("state", state, ref_state, tol)


def test_gradcheck_chunked_forms():
    q, k, v, log_f = gla_inputs(1, 5, 1, 2, 2, seed=3)
    h0 = torch.randn(1, 1, 2, 2, dtype=torch.float64)

    def gla(q, k, v, log_f, h0):
        o, s = gla_recurrence(q, k, v, log_f, scale=0.5, initial_state=h0, output_final_state=True)
        return o, s

    assert torch.autograd.gradcheck(gla, with_grad(q, k, v, log_f, h0))
    lb = torch.rand(1, 2, dtype=torch.float64) * 0.5

    def hgrn2(q, v, z, lb, h0):
        return hgrn2_recurrence(q, v, z, lb, initial_state=h0, output_final_state=True, reverse=True)

    assert torch.autograd.gradcheck(hgrn2, with_grad(q, v, k, lb, h0))
    x = torch.randn(1, 5, 3, 2, dtype=torch.float64)
    log_lambda = F.logsigmoid(torch.randn(1, 5, 3, dtype=torch.float64))
    theta = torch.randn(3, dtype=torch.float64)
    h1 = torch.randn(1, 3, 2, dtype=torch.float64)

    def hgrn1(x, log_lambda, theta, h1):
        return hgrn1_recurrence(x, log_lambda, theta, initial_state=h1, output_final_state=True)

    assert torch.autograd.gradcheck(hgrn1, with_grad(x, log_lambda, theta, h1))


def test_extreme_gates_and_long_sequence_stay_finite_and_exact():
    """log f down to -20 (forget everything) and f = 1 - 1e-6 (remember everything), T = 1000."""
    B, T, H, K, V = 1, 1000, 2, 4, 4
    q, k, v, _ = gla_inputs(B, T, H, K, V, seed=11)
    log_f = torch.empty(B, T, H, K, dtype=torch.float64)
    log_f[..., :2] = -20.0
    log_f[..., 2:] = torch.log1p(torch.tensor(-1e-6, dtype=torch.float64))
    o, s = gla_recurrence(q, k, v, log_f, output_final_state=True)
    o_ref, s_ref = naive.gla_recurrence(q, k, v, log_f, output_final_state=True)
    assert_close("o", o, o_ref, 1e-10)
    assert_close("state", s, s_ref, 1e-10)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_packed_sequences_equal_separate_runs(reverse):
    q, k, v, log_f = gla_inputs(1, 40, 2, 3, 4, seed=5)
    offsets = [0, 7, 7, 23, 40]  # includes an empty sequence
    h0 = torch.randn(4, 2, 3, 4, dtype=torch.float64)
    cu = torch.tensor(offsets)
    o, s = gla_recurrence(q, k, v, log_f, initial_state=h0, output_final_state=True, reverse=reverse, cu_seqlens=cu)
    for i, (a, b) in enumerate(itertools.pairwise(offsets)):
        o_i, s_i = gla_recurrence(
            *(t[:, a:b] for t in (q, k, v, log_f)),
            initial_state=h0[i : i + 1],
            output_final_state=True,
            reverse=reverse,
        )
        if b > a:
            assert_close(f"o[{i}]", o[:, a:b], o_i, 1e-12)
        assert_close(f"state[{i}]", s[i : i + 1], s_i, 1e-12)


def test_lower_bounded_gate_is_exact_at_both_ends():
    z = torch.tensor([-30.0, -5.0, 0.0, 5.0, 16.0, 30.0], dtype=torch.float64)
    lb = torch.tensor([0.0, 0.3, 0.9, 0.0, 0.5, 0.0], dtype=torch.float64)
    f = lb + (1 - lb) * torch.sigmoid(z)
    log_f, k = lower_bounded_gate(z, lb)
    assert_close("k", k, (1 - lb) * torch.sigmoid(-z), 1e-15)
    assert_close("log_f", log_f, torch.log(f), 1e-14)
    # float32 keeps the relative precision of k = 1 - f when f is within 1e-7 of 1, where 1 - f itself would be 0.
    log_f32, k32 = lower_bounded_gate(z.float(), lb.float())
    assert_close("k32", k32, (1 - lb) * torch.sigmoid(-z), 1e-6)
    assert (log_f32[3:] < 0).all() and torch.isfinite(log_f32).all()


def test_bad_arguments_name_what_is_wrong():
    q, k, v, log_f = gla_inputs(2, 8, 2, 4, 3)
    with pytest.raises(ValueError, match=r"initial_state has shape \(2, 2, 3, 4\); expected \(2, 2, 4, 3\)"):
        gla_recurrence(q, k, v, log_f, initial_state=torch.zeros(2, 2, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="lower_bound"):
        hgrn2_recurrence(q, v, log_f, torch.zeros(8))
    with pytest.raises(ValueError, match="batch size must be 1"):
        gla_recurrence(q, k, v, log_f, cu_seqlens=torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="theta"):
        hgrn1_recurrence(torch.zeros(1, 4, 3, 2), torch.zeros(1, 4, 3), torch.zeros(5))
