"""Shared test utilities: random inputs for the recurrences, a relative-error comparison, one backend's ops."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor

from hgrn import ops

OPS = (
    "gla_recurrence",
    "hgrn2_recurrence",
    "hgrn2_directions",
    "hgrn1_recurrence",
    "gla_step",
    "hgrn2_step",
    "hgrn1_step",
)


def on_backend(name: str) -> SimpleNamespace:
    """The public ops pinned to one backend ("naive", "reference", "triton"): on_backend("naive").gla_recurrence is
    hgrn.ops.gla_recurrence (its signature and argument checks) run by the step loops, whatever the tensors."""
    return SimpleNamespace(**{op: ops.use_backend(name)(getattr(ops, op)) for op in OPS})


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


def record_launches(monkeypatch, module, names) -> list[str]:
    """A log to which each launch of module.<name> (name in names) appends that name; the kernels still run."""
    log: list[str] = []

    class Recorded:
        def __init__(self, kernel, name: str) -> None:
            self.kernel, self.name = kernel, name

        def __getitem__(self, grid):
            log.append(self.name)
            return self.kernel[grid]

    for name in names:
        monkeypatch.setattr(module, name, Recorded(getattr(module, name), name))
    return log
