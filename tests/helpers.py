"""Shared test utilities: random inputs for the recurrences and a relative-error comparison."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64 (0 when both are zero)."""
    actual, expected = actual.double(), expected.double()
    denom = expected.norm().item()
    diff = (actual - expected).norm().item()
    return diff / denom if denom > 0 else diff


def assert_close(name: str, actual: Tensor, expected: Tensor, tol: float) -> None:
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    err = rel_err(actual, expected)
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.1e}"


def gla_inputs(B: int, T: int, H: int, K: int, V: int, dtype=torch.float64, gate_scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g, dtype=dtype)
    k = torch.randn(B, T, H, K, generator=g, dtype=dtype)
    v = torch.randn(B, T, H, V, generator=g, dtype=dtype)
    log_f = F.logsigmoid(torch.randn(B, T, H, K, generator=g, dtype=dtype) * gate_scale + 2)
    return q, k, v, log_f


def with_grad(*tensors: Tensor) -> list[Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def grads(output: Tensor, state: Tensor | None, inputs: list[Tensor], seed: int = 1) -> list[Tensor]:
    """Gradients of a random projection of (output, final state) with respect to inputs (None -> zeros)."""
    g = torch.Generator().manual_seed(seed)
    loss = (output * torch.randn(output.shape, generator=g, dtype=output.dtype)).sum()
    if state is not None:
        loss = loss + (state * torch.randn(state.shape, generator=g, dtype=state.dtype)).sum()
    result = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(x) if r is None else r for x, r in zip(inputs, result, strict=True)]
