"""Compiling the kernels all at once and early (hgrn.ops.triton.precompile).

On CPU: the compile-only launch, the layout round trip through a recording op, and the eager compile-only pass
through the interpreter (which compiles nothing); with a GPU (-m gpu): after the fakes of a compiled forward and
backward the real calls compile no kernel, and an eager first call compiles on the compile threads.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from hgrn.ops.triton import precompile
from tests.helpers import on_backend, rel_err


class RecordingKernel:
    """Stands in for a @triton.jit kernel: records launches and warm-ups; a warm-up hands back a compilation in
    flight (as Triton's FutureKernel) when `in_flight`."""

    def __init__(self, in_flight: bool = False) -> None:
        self.calls: list[tuple] = []
        self.in_flight = in_flight

    def __getitem__(self, grid: tuple):
        return lambda *args, **options: self.calls.append(("launch", grid, args, options))

    def run(self, *args, grid, warmup, **options):
        self.calls.append(("run", grid, warmup, args, options))
        return Compiling(self.calls) if self.in_flight else None


class Compiling:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def result(self, ignore_errors: bool = False) -> None:
        self.calls.append(("result", ignore_errors))


@pytest.fixture
def on_cpu(monkeypatch):
    """The mechanism on, for CPU tensors, with nothing seen before."""
    monkeypatch.setattr(precompile, "ENABLED", True)
    monkeypatch.setattr(precompile, "DEVICES", ("cpu",))
    monkeypatch.setattr(precompile, "_seen", set())
    yield
    precompile.wait_all()


def test_entry_launch_only_compiles_inside_compile_only():
    kernel = RecordingKernel()
    launched = precompile.Entry(kernel)
    launched[(2,)](1, X=3)
    with precompile.compile_only():
        launched[(4, 1)](5, X=6)
    launched[(7,)](8)
    assert kernel.calls == [
        ("launch", (2,), (1,), {"X": 3}),
        ("run", (4, 1), True, (5,), {"X": 6}),
        ("launch", (7,), (8,), {}),
    ]
    assert launched.calls is kernel.calls  # other attributes are the kernel's


def test_entry_launch_finishes_the_compilations_in_flight_first():
    kernel = RecordingKernel(in_flight=True)
    launched = precompile.Entry(kernel)
    with precompile.compile_only():
        launched[(1,)](1)
        launched[(1,)](2)
    launched[(1,)](3)
    launched[(1,)](4)  # nothing left in flight
    assert [call[0] for call in kernel.calls] == ["run", "run", "result", "result", "launch", "launch"]
    assert kernel.calls[2] == ("result", True)


def test_ahead_runs_the_op_once_per_layout_on_real_tensors(on_cpu):
    with FakeTensorMode():
        view = torch.empty(4, 6)[:, 1:4]  # strides (6, 1), storage offset 1
        half = torch.empty(3, dtype=torch.float16)
        other = torch.empty(5, 3)
    seen = []

    def op(a, b, n, items, absent):
        seen.append((a.shape, a.stride(), a.storage_offset(), b.dtype, n, [t.shape for t in items], absent))
        assert not isinstance(a, FakeTensor) and precompile._local.compile_only
        assert not torch.is_grad_enabled()

    precompile.ahead(op, (view, half, 5, [half], None))
    precompile.ahead(op, (view, half, 5, [half], None))  # the same layout: not again
    precompile.ahead(op, (other, half, 5, [half], None))
    precompile.wait_all()
    assert seen == [
        ((4, 3), (6, 1), 1, torch.float16, 5, [(3,)], None),
        ((5, 3), (3, 1), 0, torch.float16, 5, [(3,)], None),
    ]


def test_symbolic_sizes_have_no_layout(on_cpu):
    """A fake tensor of symbolic sizes (torch.compile with dynamic shapes) cannot be laid out again: no layout, so
    `ahead` leaves its kernels to the real call; a real tensor of the same sizes has one."""
    layouts = []

    @torch.library.custom_op("hgrn_test::layout_probe", mutates_args=())
    def probe(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @probe.register_fake
    def _(x: torch.Tensor) -> torch.Tensor:
        layouts.append(precompile._layout(x))
        return torch.empty_like(x)

    torch.compile(lambda x: probe(x) * 2, dynamic=True, backend="eager")(torch.randn(5, 3))
    assert layouts and all(layout is None for layout in layouts)
    assert precompile._layout(torch.empty(5, 3))[:3] == ("tensor", (5, 3), (3, 1))


def test_in_background_runs_a_launch_compile_only_on_the_launch_thread_whatever_its_tensors(on_cpu):
    """Integer tensors too (the loss kernel's labels), which `ahead` skips: the caller vouches that no value plans
    the launch. Off (HGRN_PRECOMPILE=0, the interpreter) it runs nothing."""
    seen = []

    def launch(logits, labels, flag):
        seen.append((logits.shape, labels.dtype, flag, precompile._local.compile_only, torch.is_grad_enabled()))

    precompile.in_background(launch, (torch.empty(2, 5), torch.zeros(2, dtype=torch.long), True))
    precompile.wait_all()
    assert seen == [((2, 5), torch.long, True, True, False)]
    precompile.ENABLED = False  # restored by the fixture's monkeypatch
    precompile.in_background(launch, (torch.empty(2, 5), torch.zeros(2, dtype=torch.long), True))
    precompile.wait_all()
    assert len(seen) == 1


def test_ahead_skips_other_devices_and_packed_sequences_and_reports_a_failure_in_one_line(on_cpu, caplog):
    calls = []
    precompile.ahead(lambda t: calls.append(t), (torch.empty(2, device="meta"),))
    precompile.ahead(lambda t, cu: calls.append(t), (torch.empty(2), torch.tensor([0, 2])))  # cu_seqlens: values

    def broken(t):
        raise RuntimeError("out of registers")

    with caplog.at_level(logging.WARNING, logger=precompile.__name__):
        precompile.ahead(broken, (torch.empty(2),))
        precompile.wait_all()
    assert calls == []
    assert [r.getMessage().count("\n") for r in caplog.records] == [0]
    assert "out of registers" in caplog.text and "compile at their first launch" in caplog.text


@pytest.mark.parametrize("head", [16, 4])  # the chunked kernels; the small-head ones
def test_eager_calls_compile_their_kernels_together_first_and_compute_the_same(on_cpu, monkeypatch, caplog, head):
    """Through the interpreter (whose warm-up compiles nothing): the compile-only pass of each op's first call, the
    op called again from inside itself, leaves the results as they were."""
    triton_ops = on_backend("triton")
    g = torch.Generator().manual_seed(0)
    q, z, v = (torch.randn(2, 40, 2, head, generator=g, requires_grad=True) for _ in range(3))

    def run() -> tuple:
        o, _ = triton_ops.hgrn2_recurrence(q, v, z, None, scale=0.5)
        return (o, *torch.autograd.grad(o.square().sum(), (q, z, v)))

    monkeypatch.setattr(precompile, "ENABLED", False)
    expected = run()
    monkeypatch.setattr(precompile, "ENABLED", True)
    actual = run()
    assert len(precompile._seen) == 2  # the forward's and the backward's first calls, once each
    assert not caplog.records  # no compile-only pass failed
    for a, e in zip(actual, expected, strict=True):
        assert torch.equal(a, e)


@pytest.mark.gpu
@pytest.mark.skipif(not precompile.ENABLED, reason="this Triton has no asynchronous compilation")
@pytest.mark.parametrize("save", [True, False], ids=["training", "inference"])
def test_fake_calls_compile_the_kernels_the_real_calls_launch(save):
    """The chunked HGRN2 forward and backward at a shape no other test uses (inference: the fused forward alone):
    after their fakes (as torch.compile traces them) the real calls find every kernel compiled."""
    from triton import knobs

    from hgrn.ops.triton.chunk import GATE_HGRN2, chunk_backward, chunk_forward

    B, T, H, K, V = 2, 333, 3, 80 if save else 48, 48

    def calls(q, kz, v, do):
        options = (1.0, GATE_HGRN2, False, False, None, None)
        o, _, starts, qi, ks, A, gl = chunk_forward(q, kz, None, None, v, None, None, *options, save)
        if save:
            chunk_backward(do(o), None, q, kz, None, None, v, None, starts, qi, ks, A, gl, None, *options[:3],
                           *options[4:])  # fmt: skip

    real = [torch.randn(B, T, H, n, device="cuda", dtype=torch.bfloat16) for n in (K, K, V)]
    with FakeTensorMode(allow_non_fake_inputs=True):
        calls(*(torch.empty_like(t) for t in real), torch.empty_like)
    precompile.wait_all()
    compiled = []
    previous = knobs.compilation.listener
    knobs.compilation.listener = lambda *, src, **_: compiled.append(getattr(src, "name", "?"))
    try:
        calls(*real, torch.randn_like)
        torch.cuda.synchronize()
    finally:
        knobs.compilation.listener = previous
    assert compiled == []


@pytest.mark.gpu
@pytest.mark.skipif(not precompile.ENABLED, reason="this Triton has no asynchronous compilation")
def test_an_eager_first_call_compiles_its_kernels_on_the_compile_threads():
    """A shape no other test uses, called eagerly: every kernel it launches compiles on the compile threads (all at
    once), none at its launch on the calling thread; the results are those of the reference."""
    import threading

    from triton import knobs

    from hgrn import ops

    g = torch.Generator().manual_seed(1)
    q, z, v = (torch.randn(3, 277, 2, 72, generator=g).cuda().requires_grad_() for _ in range(3))
    threads = []
    previous = knobs.compilation.listener
    knobs.compilation.listener = lambda **_: threads.append(threading.current_thread().name)
    try:
        o, _ = ops.hgrn2_recurrence(q, v, z)
        grads = torch.autograd.grad(o.square().sum(), (q, z, v))
        torch.cuda.synchronize()
    finally:
        knobs.compilation.listener = previous
    assert threads and all(name.startswith(precompile.COMPILE_THREAD_NAME) for name in threads), threads
    with ops.use_backend("reference"):
        o_ref, _ = ops.hgrn2_recurrence(q.double(), v.double(), z.double())
        grads_ref = torch.autograd.grad(o_ref.square().sum(), (q, z, v))
    for actual, expected in zip((o, *grads), (o_ref, *grads_ref), strict=True):
        assert rel_err(actual, expected) < 1e-3
