"""One dispatch for every op: check the arguments, pick a backend, run the backend's implementation.

An op is declared once, in hgrn.ops: its signature, its docstring, and a body that hands its arguments by name, in
the signature's order (defaults filled in), to `run` with the op's check from hgrn.ops.checks:

    return dispatch.run(gla_recurrence, dict(q=q, k=k, v=v, log_f=log_f, ...), check_gla_args)

(a dict written out rather than locals(), and the forced backend in a plain dict rather than a ContextVar: Dynamo
traces both, in the torch versions this suite runs on).

`run` checks them, then calls the function of the op's name in the chosen backend module with the same arguments,
by name. Backends implement, and re-declare nothing (the layouts are in the op docstrings):

    triton     hgrn.ops.triton     the kernels: CUDA, or the CPU interpreter when TRITON_INTERPRET=1 (tests)
    reference  hgrn.ops.reference  the chunked PyTorch forms: any device and dtype (float64 in the tests)
    naive      hgrn.ops.naive      step-by-step loops: the recurrences as written, the tests' ground truth

Automatic choice: the kernels when triton is importable, HGRN_OPS is not `reference`, every tensor argument
(cu_seqlens aside) is on CUDA and the first is fp32/fp16/bf16; not for a sequence of no time steps, nor for a
decoding step that needs a gradient (the kernel steps update the state in place). The reference otherwise.
`use_backend` forces one, whatever the tensors (tests: the naive loops, the reference, the Triton interpreter).

Under torch.compile Dynamo traces `run`: the checks and the choice become guards, and the recurrences' kernels are
torch.library custom ops (hgrn::chunk_*, hgrn::small_head_*, hgrn::small_head_directions_*, hgrn::hgrn1_scan_*),
opaque nodes inside the graph, so a block compiles as one graph. The decoding steps update a state in place: they are
hidden from Dynamo in hgrn.ops.triton, as are the reference and naive backends here; the graph breaks there, and
they run as they do eagerly. A backend module is imported on its first use, which Dynamo cannot trace: code about to
be compiled calls `load_kernels` first (Backbone.compile_blocks does), or the graph breaks where the first op runs.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

BACKENDS = {"triton": "hgrn.ops.triton", "reference": "hgrn.ops.reference", "naive": "hgrn.ops.naive"}
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
HAS_TRITON = importlib.util.find_spec("triton") is not None
OPS_BACKENDS = ("auto", "reference")  # the values of HGRN_OPS
if os.environ.get("HGRN_OPS", "auto") not in OPS_BACKENDS:
    raise ValueError(f"HGRN_OPS={os.environ['HGRN_OPS']!r} is not known; choose one of {OPS_BACKENDS}")
USE_KERNELS = HAS_TRITON and os.environ.get("HGRN_OPS", "auto") == "auto"

_forced: dict[str, str | None] = {"backend": None}  # use_backend's, process-wide


def run(op: Callable[..., Any], arguments: dict[str, Any], check: Callable[..., None], *, step: bool = False) -> Any:
    """Run `op` (a declaration in hgrn.ops) on its `arguments` by name: check them, choose the backend,
    call the backend's function of the op's name with them, by name. `step` marks a decoding step."""
    check(**arguments)
    backend = _forced["backend"] or _choose(arguments, step)
    implementation = getattr(_module(backend), op.__name__)
    return implementation(**arguments) if backend == "triton" else _eagerly(implementation, arguments)


@torch.compiler.disable
def _eagerly(implementation: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """The PyTorch backends, hidden from Dynamo: under torch.compile they run as they do eagerly (their chunk rules
    branch on values)."""
    return implementation(**arguments)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run every op called inside on backend `name` ("triton", "reference" or "naive"), whatever its tensors.

    The argument checks run as always. Also a decorator: `use_backend("naive")(hgrn.ops.gla_recurrence)` is the
    naive GLA recurrence, with the public signature. The choice holds for the whole process (every thread) until the
    block ends; compiled code is guarded on it and recompiles for another backend.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend {name!r} is not known; choose one of {tuple(BACKENDS)}")
    previous, _forced["backend"] = _forced["backend"], name
    try:
        yield
    finally:
        _forced["backend"] = previous


def _choose(arguments: dict[str, Any], step: bool) -> str:
    """The kernels or the reference for these arguments (the rules in the module docstring)."""
    tensors = [t for name, t in arguments.items() if isinstance(t, Tensor) and name != "cu_seqlens"]
    if not USE_KERNELS or not all(t.is_cuda for t in tensors) or tensors[0].dtype not in KERNEL_DTYPES:
        return "reference"
    if step:
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        return "reference" if needs_grad else "triton"
    return "reference" if tensors[0].shape[1] == 0 else "triton"


_loaded: dict[str, ModuleType] = {}


def _module(backend: str) -> ModuleType:
    """The backend's module, imported on first use: importing hgrn.ops imports neither hgrn.ops.triton nor triton.
    A lookup in a dict once loaded, which Dynamo traces (it cannot trace an import)."""
    module = _loaded.get(backend)
    return module if module is not None else _load(backend)


def load_kernels() -> None:
    """Import the kernels' module now if the ops may choose it (triton importable, HGRN_OPS not `reference`), so that
    compiled code finds it loaded: its import would break the graph where the first op is traced (measured: 7 graph
    breaks in the compiled LM anchor step, results/bench/lm-step-nvidia-h200-2026-12-03.md)."""
    if USE_KERNELS:
        _module("triton")


def start_compile_workers() -> None:
    """Start Inductor's compile worker processes now, where a model is set to compile. Inductor starts them when its
    backend is first called, after Dynamo has traced the first graph, and compiles its kernels on the main thread
    until they answer. Also sends the pool's readiness probe, which Inductor otherwise sends with its first kernel,
    so that kernel always compiles on the main thread. Measured at the LM anchor's first step (H200, one machine):
    Inductor's kernels compiled on the main thread 3.4, 2.8 and 5.2 s with this, 5.8 s without
    (`async_compile.precompile` in `lm_step`'s compile split). Only where CUDA is (the pool compiles Inductor's
    Triton kernels; a model set to compile may not be on its device yet); nothing where this torch lacks the hooks."""
    if not torch.cuda.is_available():
        return
    try:
        from torch._inductor.async_compile import AsyncCompile, maybe_warm_pool
    except ImportError:
        return
    maybe_warm_pool()
    AsyncCompile.use_process_pool()


@torch.compiler.disable
def _load(backend: str) -> ModuleType:
    _loaded[backend] = importlib.import_module(BACKENDS[backend])
    return _loaded[backend]
