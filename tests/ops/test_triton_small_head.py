"""The small-head path (hgrn.ops.triton.small_head: heads of <= SMALL_HEAD_MAX channels through the HGRN1 scan)
against the float64 reference: outputs, final states and every gradient, through the public ops on the Triton
backend (the interpreter on CPU, -m gpu in bf16 / fp32 at benchmark shapes)."""

from __future__ import annotations

import pytest
import torch

from hgrn import ops
from hgrn.ops.triton import small_head
from tests.helpers import on_backend
from tests.ops.test_triton_chunk import BF16_GATE_TOL, BF16_TOL, check, cpu_only, make_inputs

kernels = on_backend("triton")
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def public(kind):
    return kernels.gla_recurrence if kind == "gla" else kernels.hgrn2_recurrence


@cpu_only
@pytest.mark.parametrize("kind", ["gla", "hgrn2", "hgrn2_lb"])
@pytest.mark.parametrize("head", [1, 2, 3, 4])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_interpreted_heads_around_the_threshold(kind, head, reverse):
    """Head sizes 1 .. 4: the small-head path up to SMALL_HEAD_MAX, the chunked kernels above it."""
    inputs = make_inputs(kind, 2, 45, 3, head, head, seed=head)
    check(kind, inputs, public(kind), torch.float32, 2e-5, scale=0.7, reverse=reverse)


@cpu_only
@pytest.mark.parametrize("gates", ["forget", "remember", "mixed"])
def test_interpreted_small_heads_extreme_gates(gates):
    inputs = make_inputs("hgrn2_lb", 1, 70, 2, 2, 2, gates=gates, seed=5)
    check("hgrn2_lb", inputs, public("hgrn2_lb"), torch.float32, 2e-5, gate_tol=1e-4)


@cpu_only
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_interpreted_small_heads_packed_sequences(reverse):
    cu = torch.tensor([0, 9, 9, 40, 53])  # includes an empty sequence
    inputs = make_inputs("hgrn2_lb", 1, 53, 2, 2, 1, n_seqs=4, seed=9)
    check("hgrn2_lb", inputs, public("hgrn2_lb"), torch.float32, 2e-5, reverse=reverse, cu_seqlens=cu)


def test_path_choice_by_head_size(monkeypatch):
    """Heads of <= SMALL_HEAD_MAX channels (K and V) take the small-head path, wider ones the chunked kernels."""
    taken = []
    monkeypatch.setattr(small_head, "recurrence", lambda *a, **k: taken.append(a[0].shape[-1]) or (None, None))
    for size in (1, small_head.SMALL_HEAD_MAX, small_head.SMALL_HEAD_MAX + 1):
        x = torch.zeros(1, 4, 2, size)
        assert small_head.fits(x, x) == (size <= small_head.SMALL_HEAD_MAX)
    x, wide = torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 16)
    assert not small_head.fits(x, wide)
    kernels.hgrn2_recurrence(x, x, x)
    assert taken == [2]


@pytest.mark.gpu
@pytest.mark.parametrize("head", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_gpu_small_heads(head, dtype):
    tol = BF16_TOL if dtype == torch.bfloat16 else 1e-4
    inputs = make_inputs("hgrn2_lb", 2, 3000, 64 // head, head, head, gates="mixed", device="cuda", seed=head)
    check("hgrn2_lb", inputs, ops.hgrn2_recurrence, dtype, tol, BF16_GATE_TOL, scale=head**-0.5, reverse=head % 2 == 1)
