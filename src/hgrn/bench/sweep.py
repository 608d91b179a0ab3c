"""Tile sweep: python -m hgrn.bench.sweep [--op hgrn2|hgrn2-2d|hgrn1|hgrn1-complex] [--shape BxTxHxD | BxTxD] CONFIG ...

hgrn2-2d is `hgrn.ops.hgrn2_directions` along the rows and columns of a square grid of T tokens (the ViTs' scan);
hgrn1-complex the complex-valued HGRN1 scan (the ViTs' and LMs' HGRN1, x [B, T, D, 2] and theta [D]).

Each CONFIG overrides the tile rule through HGRN_CHUNK_TILES (hgrn2, e.g. "C=64,BV=128,maxnreg=128"),
HGRN_SMALL_TILES (hgrn2 at head sizes of at most 8, e.g. "BH=16,BT=8,NS=4") or HGRN_SCAN_TILES (hgrn1, and hgrn2
at head size 1, e.g. "BT=128,BD=32"); "" is the rule itself. The configs compile in parallel subprocesses first
(warming the shared Triton cache), then one process times each: the op's forward (without autograd) and forward +
backward, and the CUDA time of every kernel in one forward + backward (torch.profiler) with their sum, and that sum
for the forward alone (fwd_kernels_total_ms); the sums rank configurations where the timed loop is bound by the host
(small shapes: the forward and forward + backward then time the launches, not the kernels)."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import torch
from triton.testing import do_bench

from hgrn import ops
from hgrn.bench.step_profile import kernel_ms
from hgrn.ops.triton.small_head import SMALL_HEAD_MAX

ENV = {
    "hgrn2": "HGRN_CHUNK_TILES",
    "hgrn2-2d": "HGRN_CHUNK_TILES",
    "hgrn1": "HGRN_SCAN_TILES",
    "hgrn1-complex": "HGRN_SCAN_TILES",
}


def _env(op: str, shape: tuple[int, ...]) -> str:
    """The variable holding the tile overrides of the kernels this op runs at this shape (one-way HGRN2 with heads
    of one channel runs the HGRN1 scan's)."""
    if op == "hgrn2" and shape[-1] == 1:
        return "HGRN_SCAN_TILES"
    return "HGRN_SMALL_TILES" if op.startswith("hgrn2") and shape[-1] <= SMALL_HEAD_MAX else ENV[op]


def _op(op: str, shape: tuple[int, ...], gate_shift: float = 0.0):
    """(function of the inputs -> output, inputs) on random bf16 data; HGRN2's gate logits shifted by gate_shift
    (-12: mean log f about -12 per step, the steep gates the chunk plan's split path lists chunk by chunk)."""

    def leaf(*dims: int, dtype=torch.bfloat16, shift: float = 0.0):
        return (torch.randn(*dims, device="cuda", dtype=dtype) + shift).requires_grad_()

    if op == "hgrn1":
        x, g = leaf(*shape), torch.nn.functional.logsigmoid(leaf(*shape) + 2).detach().requires_grad_()
        return (lambda x, g: ops.hgrn1_recurrence(x, g)[0]), (x, g)
    if op == "hgrn1-complex":
        x, g = leaf(*shape, 2), torch.nn.functional.logsigmoid(leaf(*shape) + 2).detach().requires_grad_()
        return (lambda x, g, theta: ops.hgrn1_recurrence(x, g, theta)[0]), (x, g, leaf(shape[-1], dtype=torch.float32))
    B, T, H, D = shape
    lb = torch.zeros(H, D, device="cuda", requires_grad=True)
    inputs = (leaf(B, T, H, D), leaf(B, T, H, D), leaf(B, T, H, D, shift=gate_shift), lb)
    if op == "hgrn2-2d":
        side = math.isqrt(T)
        if side * side != T:
            raise SystemExit(f"--op hgrn2-2d scans a square grid: T = {T} is not a square")
        return (
            lambda q, v, z, lb: ops.hgrn2_directions(q, v, z, lb, scale=D**-0.5, direction="2d", grid=(side, side))
        ), inputs
    return (lambda q, v, z, lb: ops.hgrn2_recurrence(q, v, z, lb, scale=D**-0.5)[0]), inputs


def _time(op: str, shape: tuple[int, ...], config: str, gate_shift: float) -> dict:
    os.environ[_env(op, shape)] = config
    fn, inputs = _op(op, shape, gate_shift)
    grad = torch.randn_like(inputs[0])

    def fwd():
        with torch.no_grad():
            return fn(*inputs)

    def fwd_bwd():
        return torch.autograd.grad(fn(*inputs), inputs, grad)

    fwd(), fwd_bwd()
    fwd_kernels, kernels = kernel_ms(fwd), kernel_ms(fwd_bwd)
    shown: dict[str, float] = {}  # names cut to 40 characters; kernels that share those are summed
    for name, ms in kernels.items():
        shown[name[:40]] = round(shown.get(name[:40], 0.0) + ms, 4)
    return {
        "config": config,
        "gate_shift": gate_shift,
        "fwd_ms": do_bench(fwd, warmup=25, rep=100, return_mode="median"),
        "fwd_bwd_ms": do_bench(fwd_bwd, warmup=25, rep=100, return_mode="median"),
        "fwd_kernels_total_ms": round(sum(fwd_kernels.values()), 4),
        "kernels_total_ms": round(sum(kernels.values()), 4),
        "kernels_ms": shown,
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m hgrn.bench.sweep", description=__doc__)
    p.add_argument("--op", choices=sorted(ENV), default="hgrn2")
    p.add_argument("--shape", default="8x2048x16x128")
    p.add_argument("--gate-shift", type=float, default=0.0, help="added to HGRN2's gate logits (-12: steep gates)")
    p.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("configs", nargs="*", default=[""])
    args = p.parse_args()
    shape = tuple(int(x) for x in args.shape.split("x"))
    if args.compile_only:  # a worker: one small fwd + bwd with the same constants compiles every kernel
        os.environ[_env(args.op, shape)] = args.configs[0]
        fn, inputs = _op(args.op, (1, 256, *shape[2:]))
        torch.autograd.grad(fn(*inputs).sum(), inputs)
        return
    with ThreadPoolExecutor(8) as pool:
        cmd = [sys.executable, "-m", "hgrn.bench.sweep", "--compile-only", "--op", args.op, "--shape", args.shape]
        list(pool.map(lambda c: subprocess.run([*cmd, c], check=False), args.configs))
    for config in args.configs:
        try:
            print(json.dumps(_time(args.op, shape, config, args.gate_shift)), flush=True)
        except Exception as error:  # a config that fails to compile or run is reported, not fatal
            print(json.dumps({"config": config, "error": repr(error)[:300]}), flush=True)


if __name__ == "__main__":
    main()
