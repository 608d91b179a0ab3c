"""Decoding-step kernels: equal to the reference step, state updated in place, dispatch rules."""

from __future__ import annotations

import pytest
import torch

from hgrn import ops
from tests.helpers import assert_close, on_backend

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the interpreter runs the kernels
kernels, reference = on_backend("triton"), on_backend("reference")


def randn(*shape, dtype=torch.float32):
    return torch.randn(*shape, device=DEVICE, dtype=dtype)


@pytest.mark.parametrize("bounded", [False, True], ids=["no-lb", "lb"])
def test_hgrn2_and_gla_steps_update_the_state_in_place(bounded):
    B, H, K, V = 3, 2, 16, 40
    q, z, v, state = randn(B, H, K), randn(B, H, K), randn(B, H, V), randn(B, H, K, V)
    lb = torch.rand(H, K, device=DEVICE) if bounded else None
    carried = state.clone()
    o, new = kernels.hgrn2_step(q, v, z, carried, lb, scale=0.5)
    o_ref, new_ref = reference.hgrn2_step(q, v, z, state, lb, scale=0.5)
    assert new is carried
    assert_close("o", o, o_ref, 1e-5)
    assert_close("state", new, new_ref, 1e-5)
    k, log_f = randn(B, H, K), -torch.rand(B, H, K, device=DEVICE) * 20
    o, new = kernels.gla_step(q, k, v, log_f, carried)
    o_ref, new_ref = reference.gla_step(q, k, v, log_f, new_ref)
    assert_close("gla o", o, o_ref, 1e-5)
    assert_close("gla state", new, new_ref, 1e-5)


@pytest.mark.parametrize("complex_valued", [False, True], ids=["real", "complex"])
def test_hgrn1_step(complex_valued):
    B, D = 4, 50
    x = randn(B, D, 2) if complex_valued else randn(B, D)
    log_f, theta = -torch.rand(B, D, device=DEVICE), randn(D) if complex_valued else None
    state = randn(*x.shape)
    carried = state.clone()
    h, new = kernels.hgrn1_step(x, log_f, carried, theta)
    h_ref, new_ref = reference.hgrn1_step(x, log_f, state, theta)
    assert new is carried
    assert_close("h", h, h_ref, 1e-6)
    assert_close("state", new, new_ref, 1e-6)


def test_dispatch_keeps_cpu_and_gradients_on_the_reference():
    q = torch.randn(2, 1, 4, requires_grad=True)
    state = torch.zeros(2, 1, 4, 4)
    o, new = ops.hgrn2_step(q, torch.randn(2, 1, 4), torch.randn(2, 1, 4), state)
    assert new is not state and o.requires_grad  # reference: a new state, differentiable
    with pytest.raises(ValueError, match="state has shape"):
        kernels.hgrn2_step(q, torch.randn(2, 1, 4), torch.randn(2, 1, 4), torch.zeros(2, 1, 4, 5))
