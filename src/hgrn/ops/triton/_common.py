"""Pieces shared by the Triton kernels: sequence addressing, gate numerics, dot precision, launch rules.

Addressing. Every kernel walks "pseudo-sequences": a packed sequence (cu_seqlens), or a segment of length L of a
batch row (a long row is cut into NS segments so that short batches still fill the GPU; the segments' states are
joined by `segment_combine`). Rows are visited in processing order; with REVERSE the processing order runs from a
sequence's end to its start, so nothing is ever flipped in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import cache

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
PTX = tl.constexpr(not INTERPRET)  # inline PTX available (the interpreter runs none)
LOG2E = tl.constexpr(1.4426950408889634)  # e^x = 2^(x log2 e): exp2 is one MUFU op, tl.exp adds range fix-ups

# Dot precision: bf16 operands for bf16 inputs; fp32 operands otherwise (tf32 for fp16 inputs, whose 10-bit mantissa
# tf32 keeps exactly while the exponent range holds the e^{+-64} decay factors; exact fp32 for fp32 inputs).
DOT_BF16, DOT_TF32, DOT_IEEE = 0, 1, 2


def dot_mode(dtype: torch.dtype) -> int:
    return {torch.bfloat16: DOT_BF16, torch.float16: DOT_TF32}.get(dtype, DOT_IEEE)


@torch.compiler.assume_constant_result  # fixed for the process: Dynamo tracing a launch plan takes its value
def sm_count(device_index: int) -> int:
    return _sm_count(device_index)


@cache  # under the constant marker: Dynamo would trace through a cache wrapper that carried the marker itself
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def target_programs(device: torch.device) -> int:
    """About two resident programs per multiprocessor hide a sequential walk's latency."""
    if device.type != "cuda":
        return 1
    return 2 * sm_count(device.index if device.index is not None else torch.cuda.current_device())


def or_empty(tensors: Iterable[torch.Tensor | None], like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor, or an empty one (like's device and dtype) where it is None: torch.library custom ops return no
    None, so an absent result travels as an empty tensor."""
    return tuple(like.new_empty(0) if t is None else t for t in tensors)


def or_like(tensors: Iterable[torch.Tensor | None], like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A kernel's tensor arguments, `like` standing in for the absent ones (None): the kernel's constexpr flags keep
    those unread."""
    return tuple(like if t is None else t for t in tensors)


def empty_grads(inputs: Iterable[torch.Tensor | None], like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A backward custom op's fake results: a tensor shaped as each input, an empty one for an absent input."""
    return or_empty((None if t is None else torch.empty_like(t) for t in inputs), like)


def present_grads(inputs: Iterable[torch.Tensor | None], grads: Iterable[torch.Tensor]) -> tuple:
    """The gradients an autograd formula returns: None where the input was absent (an empty tensor came back)."""
    return tuple(None if t is None else g for t, g in zip(inputs, grads, strict=True))


def needs_grad(tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether autograd would record a call on these tensors (None entries allowed): otherwise the kernels run
    without an autograd node and save nothing for a backward."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def tile_overrides(variable: str) -> dict[str, int]:
    """A tile experiment's overrides of a launch plan, the environment variable's "BT=64,BD=32,..." as a dict (read
    at every call, so a sweep sets them per run)."""
    return {k: int(x) for k, x in (i.split("=") for i in os.environ.get(variable, "").split(",") if i)}


def register_cap(maxnreg: int | None) -> dict[str, int]:
    """The launch option that caps a kernel's registers per thread (more programs resident per multiprocessor), or
    none (None: the compiler's choice)."""
    return {} if maxnreg is None else {"maxnreg": maxnreg}


def pow2(n: int) -> int:
    """The least power of 2 >= n (>= 1). Here, not triton.next_power_of_2, which like triton.cdiv is a JIT function:
    about 1.6 us per host call (25 times a plain division), a dozen of them per forward + backward."""
    return 1 << (max(int(n), 1) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the launch plans (see pow2)."""
    return -(-a // b)


@triton.jit
def affine(a1, b1, a2, b2):
    """Scan combine of affine maps: y -> a1 y + b1, then y -> a2 y + b2 (element-wise linear recurrences)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def mm(a, b, DOT: tl.constexpr, acc=None):
    """a @ b with fp32 accumulation at the chosen operand precision (a, b in fp32 registers); acc + a @ b where acc
    is given (the tensor cores accumulate in place: no separate addition)."""
    if DOT == 0:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif DOT == 1:
        return tl.dot(a, b, acc, input_precision="tf32")
    else:
        return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def operand(x, DOT: tl.constexpr):
    """x as a dot operand: bf16 for bf16 inputs, fp32 otherwise."""
    if DOT == 0:
        return x.to(tl.bfloat16)
    else:
        return x.to(tl.float32)


@triton.jit
def seq_span(p, cu, T, NS, L, IS_VARLEN: tl.constexpr):
    """(first token, length) of pseudo-sequence p."""
    if IS_VARLEN:
        bos = tl.load(cu + p).to(tl.int64)
        n = (tl.load(cu + p + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        b = p // NS
        s = p - b * NS
        bos = b.to(tl.int64) * T + s * L
        n = tl.minimum(L, T - s * L)
    return bos, n


@triton.jit
def tokens(r, n, bos, REVERSE: tl.constexpr):
    """Token indices (int64) of processing-order rows r of a sequence of n tokens, and which of them exist."""
    valid = (r >= 0) & (r < n)
    if REVERSE:  # noqa: SIM108 (Triton: constexpr branch)
        pos = n - 1 - r
    else:
        pos = r
    return bos + tl.where(valid, pos, 0), valid


@triton.jit
def tile_tokens(r0, n, bos, ts, BT: tl.constexpr, REVERSE: tl.constexpr):
    """Processing-order rows r0 .. r0 + BT - 1 of a line of n tokens `ts` apart from token bos: (the first row's
    token (int64), each row's token counted from it (int32), which rows exist). Offsets within a tile fit in 32 bits
    where a long sequence's do not (offline sm_90 SASS, head size 8, 2-D backward: 3,898 -> 3,750 instructions per
    line and head against 64-bit offsets per element)."""
    r = r0 + tl.arange(0, BT)
    valid = (r >= 0) & (r < n)
    if REVERSE:
        return bos + (n - 1 - r0) * ts, -tl.arange(0, BT) * ts, valid
    return bos + r0 * ts, tl.arange(0, BT) * ts, valid


@triton.jit
def load_block(ptr, tok, valid, stride, cols, ncols):
    """[rows, cols] tile of a token-major tensor in its own dtype; zeros outside."""
    mask = valid[:, None] & (cols < ncols)[None, :]
    return tl.load(ptr + tok[:, None] * stride + cols[None, :], mask=mask, other=0.0)


@triton.jit
def load_tile(ptr, tok, valid, stride, cols, ncols):
    """load_block as fp32."""
    return load_block(ptr, tok, valid, stride, cols, ncols).to(tl.float32)


@triton.jit
def store_tile(ptr, value, tok, valid, stride, cols, ncols):
    mask = valid[:, None] & (cols < ncols)[None, :]
    tl.store(ptr + tok[:, None] * stride + cols[None, :], value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def rcp(x):
    """1/x by rcp.approx.ftz (1 ulp, one MUFU op) for normal x, without the range fix-ups of tl.fdiv (div.full)."""
    if PTX:
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], tl.float32, True, 1)
    else:
        return 1.0 / x


@triton.jit
def log1m(k, f):
    """log f for f = 1 - k, both given (k without cancellation), to about 1 ulp in half the instructions of tl.log:
    f = 2^e m with m in [2/3, 4/3) and log f = e log 2 + log1p(m - 1) by libdevice logf's polynomial, with m - 1 = -k
    exactly where e = 0, so f near 1 keeps the relative accuracy of k. Normal f only: f = 0 gives -88, not -inf."""
    i = f.to(tl.int32, bitcast=True)
    e = (i - 0x3F2AAAAB) & -8388608  # e << 23
    u = tl.where(e == 0, -k, (i - e).to(tl.float32, bitcast=True) - 1.0)
    p = -0.13018856942653656
    p = p * u + 0.14084610342979431
    p = p * u - 0.12148627638816834
    p = p * u + 0.13980610668659210
    p = p * u - 0.16684235632419586
    p = p * u + 0.20012299716472626
    p = p * u - 0.24999669194221497
    p = p * u + 0.33333182334899902
    p = p * u - 0.5
    return e.to(tl.float32) * (1.1920928955078125e-07 * 0.6931471805599453) + (u + u * (u * p))


@triton.jit
def lower_bounded_gate(z, lb):
    """f = lb + (1 - lb) sigmoid(z) and k = 1 - f = (1 - lb) sigmoid(-z), both without cancellation.

    Returns (k, log f, sigmoid(z), sigmoid(-z), f); one exp2 and one (approximate, 1-ulp) reciprocal per element.
    """
    k, s, ns, f = sigmoid_gate(z, lb)
    return k, log1m(k, f), s, ns, f


@triton.jit
def sigmoid_gate(z, lb):
    """lower_bounded_gate without log f: (k, sigmoid(z), sigmoid(-z), f)."""
    e = tl.exp2(tl.abs(z) * -LOG2E)  # flushes to 0 below e^-87 (tensor first: the interpreter)
    r = rcp(1.0 + e)
    pos = z >= 0
    s = tl.where(pos, r, e * r)
    ns = tl.where(pos, e * r, r)
    return (1.0 - lb) * ns, s, ns, lb + (1.0 - lb) * s
