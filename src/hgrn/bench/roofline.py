"""The two floors of every benchmarked op: the fewest bytes it must move and the fewest FLOPs it must do.

Bytes count each input read once and each output written once (bf16 = 2 bytes; lower bounds and states are
negligible). FLOPs count the useful (causal) matrix work of the chunked form with chunk C = 64, as in
shared/reference/kernels-and-roofline.md §5; fwd+bwd is 3x the forward (the usual dot-product accounting).
"""

from __future__ import annotations

from dataclasses import dataclass

CHUNK = 64


@dataclass(frozen=True)
class Shape:
    """HGRN2 / attention: [B, T, H, D] with K = V = D.  HGRN1: [B, T, D] (H = 1)."""

    B: int
    T: int
    H: int
    D: int

    @property
    def label(self) -> str:
        return f"B{self.B} T{self.T} D{self.D}" if self.H == 1 else f"B{self.B} T{self.T} H{self.H} D{self.D}"


def min_bytes(op: str, shape: Shape, mode: str, elem: int = 2) -> int:
    """Compulsory HBM traffic. hgrn2: read q, z, v, write o; backward reads q, z, v, do, writes dq, dz, dv.
    gla / attention: read q, k, v (and g for gla), write o; backward reads those and do, writes their grads.
    hgrn1 (real): read x, g, write h; backward reads g, h, dh, writes dx, dg. hgrn1c: x, h, dx, dh are pairs."""
    n = shape.B * shape.T * shape.H * shape.D * elem  # one [B, T, H, D] tensor
    per_op = {
        "hgrn2": (4, 7),
        "gla": (5, 9),
        "attention": (4, 7),
        "hgrn1": (3, 5),
        "hgrn1c": (5, 8),
    }
    fwd, bwd = per_op[op]
    return n * (fwd if mode == "fwd" else fwd + bwd)


def min_flops(op: str, shape: Shape, mode: str) -> float:
    B, T, H, D = shape.B, shape.T, shape.H, shape.D
    if op in ("hgrn2", "gla"):
        fwd = B * H * (4 * T * D * D + T * CHUNK * 2 * D)
    elif op == "attention":
        fwd = 2 * B * H * T * T * D  # causal half of 4 T^2 D
    else:
        fwd = 3 * B * T * D  # element-wise scan
    return float(fwd if mode == "fwd" else 3 * fwd)


def floor_ms(nbytes: float, flops: float, copy_tbs: float, matmul_tflops: float) -> float:
    """The larger of the memory time and the tensor-core time, in ms."""
    return max(nbytes / (copy_tbs * 1e12), flops / (matmul_tflops * 1e12)) * 1e3


def achieved(nbytes: float, flops: float, ms: float) -> tuple[float, float]:
    """(TB/s, TFLOP/s) that a run of `ms` milliseconds implies for the compulsory bytes and FLOPs."""
    seconds = ms * 1e-3
    return nbytes / seconds / 1e12, flops / seconds / 1e12
