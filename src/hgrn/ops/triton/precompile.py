"""Compile a recurrence's kernels all at once and early, not one after another at their first launches.

Two moments. (1) Compiled code: Dynamo and AOTAutograd call each custom op's fake implementation (hgrn::chunk_forward,
its backward, ...) with the shapes of the real call, seconds before the compiled graph first runs. There the fake
calls `ahead(op, args)`: a thread runs the op's CUDA implementation on uninitialised tensors laid out as the fake
arguments. (2) Eager code, or a call the fakes did not foresee: the op's implementation calls `together(op, args)`
first, which makes the same pass over the real arguments in the calling thread. (A launch whose layout is known
before any call, the loss kernel's, starts the same pass itself: `in_background`.) In either pass every launch of a
kernel declared with `entry` is Triton's warm-up (compile, run nothing), submitted to a pool of compile threads
(Triton's AsyncCompileMode); the real launch waits for its own kernel and finds the others compiling or compiled.
Triton's passes and ptxas release the GIL (its frontend, a few tenths of a second per kernel, holds it: NOTES.md), so
the compilations run side by side and beside Dynamo and Inductor (measured: 4 kernels in 2 threads on 2 cores,
2.13 s serial, 0.95 s).

At the 341M LM anchor (H200, Triton 3.6, whole blocks compiled) our kernels took 12.9 s of a 30.2 s first step,
compiled one after another at their first launches. Compiled ahead: 16.1 s against 26.0 s without (same GPU session),
then 12.6 s against 18.8 s once the loss compiled one graph (results/bench/lm-step-nvidia-h200-2026-12-04.md). Four
compile threads, so that the first launches' kernels (the prep: 4-6 s alone) compile first; beside seven others the
prep took 9 s. A launch whose arguments specialise differently from the fake's (another alignment, say) compiles as
before, so this never changes what runs. HGRN_PRECOMPILE=0 turns it off; it is off under the interpreter
(TRITON_INTERPRET=1) and on a Triton without AsyncCompileMode. The eager pass (2) is not yet measured on a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import torch
import triton

from hgrn.ops.triton._common import INTERPRET

try:
    from triton.runtime import _async_compile
except ImportError:  # a Triton without asynchronous compilation
    _async_compile = None

ENABLED = os.environ.get("HGRN_PRECOMPILE", "1") != "0" and _async_compile is not None and not INTERPRET
DEVICES = ("cuda",)  # where the kernels run (tests widen it to exercise the mechanism on a CPU)
COMPILE_THREADS = min(4, os.cpu_count() or 1)
COMPILE_THREAD_NAME = "hgrn-compile"  # the compile threads' names start so (benchmarks tell their compilations apart)

log = logging.getLogger(__name__)
_local = threading.local()
_lock = threading.Lock()
_passes = threading.Lock()
_seen: set[tuple] = set()
_pending: list[Future] = []  # launch threads' runs and the compilations they started
ENTRIES: list[Entry] = []  # every kernel declared with `entry` in the modules imported so far (profiles name them)


class Entry:
    """A kernel launched from Python, `kernel[grid](*args, **options)` as any @triton.jit kernel; on a thread inside
    `compile_only()` the launch compiles it (Triton's warm-up) and runs nothing. Other attributes are the kernel's.

    A launch first waits for the compilations started here (Triton's FutureKernel) and finishes them, which puts the
    kernels in Triton's in-memory cache (Triton 3.6 puts them there only then), so it neither compiles a kernel that
    is still compiling nor reads back from disk one that is compiled."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.compiling: list[Any] = []

    def __getitem__(self, grid: tuple) -> Callable[..., Any]:
        if getattr(_local, "compile_only", False):
            return lambda *args, **options: self._compile(grid, args, options)
        if self.compiling:
            compiling, self.compiling = self.compiling, []
            for kernel in compiling:
                kernel.result(ignore_errors=True)  # a failed one compiles again at this launch, and raises there
        return self.kernel[grid]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kernel, name)

    def _compile(self, grid: tuple, args: tuple, options: dict) -> None:
        kernel = self.kernel.run(*args, grid=grid, warmup=True, **options)
        if hasattr(kernel, "result"):  # submitted to the compile threads (not found compiled)
            self.compiling.append(kernel)


def entry(**jit_options: Any) -> Callable[[Callable[..., Any]], Entry]:
    """@triton.jit(**jit_options) for a kernel launched from Python (an `Entry`, listed in ENTRIES)."""

    def declare(fn: Callable[..., Any]) -> Entry:
        ENTRIES.append(Entry(triton.jit(fn, **jit_options)))
        return ENTRIES[-1]

    return declare


@contextlib.contextmanager
def compile_only() -> Iterator[None]:
    """On this thread, launches of `entry` kernels compile and run nothing."""
    _local.compile_only = True
    try:
        yield
    finally:
        _local.compile_only = False


def ahead(op: Callable[..., Any], args: tuple) -> None:
    """From `op`'s fake implementation (args: its arguments, fake tensors): compile, in the background, the kernels
    that `op` launches on real tensors laid out as `args`. Once per op and layout (see `_new_layout`)."""
    layout = _new_layout(op, args)
    if layout is not None:
        _on_launch_thread(_compile_fresh, op, layout)


def in_background(fn: Callable[..., Any], args: tuple) -> None:
    """Compile, on the compile threads, the kernels that `fn(*args)` launches, running none: for a launch known
    before its first call (args: real tensors laid out as that call's; their values do not matter)."""
    if ENABLED:
        _on_launch_thread(_compile_pass, fn, args)


def together(op: Callable[..., Any], args: tuple) -> None:
    """From `op`'s implementation, before its launches (eager code, or a compiled graph's call the fakes did not
    foresee): compile every kernel it is about to launch at once, on the compile threads, instead of one after
    another at each launch, which then waits for its own. A compile-only pass of `op` over `args` in this thread; it
    launches nothing. Once per op and layout (see `_new_layout`); not while a CUDA graph records (the pass's
    allocations and fills would join the graph)."""
    if not ENABLED or getattr(_local, "compile_only", False):  # first: every call of every op passes here
        return
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return
    if _new_layout(op, args) is not None:
        _compile_pass(op, args)


def wait_all() -> None:
    """Block until every compilation started by `ahead` or `together` so far has finished (tests, benchmarks)."""
    while True:
        with _lock:
            pending, _pending[:] = list(_pending), []
        if not pending:
            return
        wait(pending)


def _layout(arg: Any) -> tuple | None:
    """A hashable description of one argument: a tensor's shape, strides, storage offset, dtype and device; a list
    of them; or the value itself. None where it cannot be reproduced (symbolic sizes, a device the kernels skip)."""
    if isinstance(arg, torch.Tensor):  # every call of every op passes here: the C-level symbolic flag, not a scan
        if arg.device.type not in DEVICES or arg._has_symbolic_sizes_strides:
            return None
        return ("tensor", tuple(arg.shape), arg.stride(), arg.storage_offset(), arg.dtype, arg.device)
    if isinstance(arg, list | tuple):
        items = tuple(_layout(a) for a in arg)
        return None if any(item is None for item in items) else ("list", items)
    return ("value", arg)


def _materialise(layout: tuple) -> Any:
    kind, *rest = layout
    if kind == "value":
        return rest[0]
    if kind == "list":
        return [_materialise(item) for item in rest[0]]
    shape, stride, offset, dtype, device = rest
    extent = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True)) + 1 if all(shape) else offset
    return torch.empty(extent, dtype=dtype, device=device).as_strided(shape, stride, offset)


def _new_layout(op: Callable[..., Any], args: tuple) -> tuple | None:
    """The layout of `args` (`_layout`) where its kernels are still to compile: not seen with `op` before, no symbolic
    size, and no integer tensor (cu_seqlens: its values may plan the launch, and copies hold none). Marks it seen."""
    if not ENABLED:
        return None
    layout = tuple(_layout(a) for a in args)
    tensors = [item for item in layout if item is not None and item[0] == "tensor"]
    if not tensors or None in layout or any(not item[4].is_floating_point for item in tensors):
        return None
    with _lock:
        if (op, layout) in _seen:
            return None
        _seen.add((op, layout))
    return layout


def _compile_fresh(op: Callable[..., Any], layout: tuple) -> None:
    _compile_pass(op, tuple(_materialise(item) for item in layout))


def _compile_pass(op: Callable[..., Any], args: tuple) -> None:
    """Run `op` on `args` with its launches compile-only, their compilations submitted to the compile threads. One
    pass at a time (they share the compile threads' bookkeeping)."""
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    mode = _workers()[1]
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with _passes:
        token = _async_compile.active_mode.set(mode)
        try:
            with on_device, torch.no_grad(), compile_only():
                op(*args)
        except Exception as error:  # the real launch compiles instead: nothing is lost but time
            log.warning("compiling the kernels of %s ahead failed (%s); they compile at their first launch", op, error)
        finally:
            _async_compile.active_mode.reset(token)
            with _lock:
                _pending.extend(mode.raw_futures)
                mode.raw_futures = []


def _on_launch_thread(task: Callable[..., None], *args: Any) -> None:
    """Run task(*args) on the launch thread, among the work `wait_all` waits for."""
    with _lock:
        _pending.append(_workers()[0].submit(task, *args))


@functools.cache
def _workers() -> tuple[ThreadPoolExecutor, Any]:
    """The launch thread, and the compile threads as Triton's AsyncCompileMode; made on first use."""
    launch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hgrn-precompile")
    compile_threads = ThreadPoolExecutor(max_workers=COMPILE_THREADS, thread_name_prefix=COMPILE_THREAD_NAME)
    return launch, _async_compile.AsyncCompileMode(compile_threads)


os.register_at_fork(after_in_child=_workers.cache_clear)  # a forked child (a data loader's worker) has no threads
