"""Argument checks of every op, run by the dispatch (hgrn.ops.dispatch) whichever backend then runs.

Each op's sizes are read from its first tensor (q, or log_f for HGRN1) and every other tensor is checked against
its layout, so one ValueError names the argument, its shape and the shape and layout expected. A head-first
([B, H, T, ...]) tensor mixed with time-first ones is caught whenever T != H and a tensor sized by H alone
(lower_bound [H, K], a state [N, H, K, V]) or by T and H in the other order is present; the message then says so.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from hgrn.ops.directions import SCAN_DIRECTIONS, check_grid, check_grid_length

BOUND = " (one bound per forget channel)"


class Sizes:
    """The sizes of an op's dimensions by letter (B, T, H, K, V, N, D), read from the tensor named `source`."""

    def __init__(self, source: str, **sizes: int) -> None:
        self.source, self.sizes = source, sizes

    def check(self, name: str, tensor: Tensor | None, layout: str, note: str = "") -> None:
        """Raise ValueError unless `tensor` is None or has the shape of `layout`, e.g. "B T H K" (digits: sizes)."""
        if tensor is None:
            return
        axes = layout.split()
        expected = self._shape(axes, self.sizes)
        if tensor.shape != expected:
            message = f"{name} has shape {tuple(tensor.shape)}; expected {expected} = [{', '.join(axes)}]{note}"
            raise ValueError(message + self._head_first_hint(tuple(tensor.shape), axes))

    def _head_first_hint(self, shape: tuple[int, ...], axes: list[str]) -> str:
        """What to say when `shape` fits `axes` once the sizes of T and H are exchanged."""
        if "T" not in self.sizes or "H" not in self.sizes:
            return ""
        T, H = self.sizes["T"], self.sizes["H"]
        if shape != self._shape(axes, {**self.sizes, "T": H, "H": T}):
            return ""
        return (
            f"; it fits with T and H exchanged (T={T}, H={H} from {self.source}): is one of the tensors head-first "
            "[B, H, T, ...]? The ops take time-first [B, T, H, ...] tensors"
        )

    @staticmethod
    def _shape(axes: list[str], sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple([sizes[a] if a in sizes else int(a) for a in axes])


def check_rank(name: str, tensor: Tensor, rank: int, layout: str) -> None:
    if tensor.dim() != rank:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected {rank} dimensions {layout}")


def check_cu_seqlens(cu_seqlens: Tensor | None, batch: int, length: int) -> int:
    """Validate packed-sequence offsets (FlashAttention convention) and return the number of sequences."""
    if cu_seqlens is None:
        return batch
    if batch != 1:
        raise ValueError(f"with cu_seqlens the batch size must be 1 (sequences packed along T); got batch={batch}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens must be a 1-D int32/int64 tensor [N+1] of offsets; got {cu_seqlens!r}")
    offsets = cu_seqlens.tolist()
    if offsets[0] != 0 or offsets[-1] != length or any(b < a for a, b in itertools.pairwise(offsets)):
        raise ValueError(f"cu_seqlens={offsets} must start at 0, end at T={length} and never decrease")
    return len(offsets) - 1


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """States and sums are kept in fp32 for half-precision inputs, else in the input precision (fp64 for tests)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# --- the ops' checks: called with the op's arguments by name (the ones a check does not need land in `_`) ---------


def check_gla_args(
    q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, initial_state: Tensor | None, cu_seqlens: Tensor | None, **_: object
) -> None:
    """q, k, log_f [B, T, H, K]; v [B, T, H, V]; initial_state [N, H, K, V]."""
    sizes = _sequence_sizes(q, v, cu_seqlens)
    sizes.check("k", k, "B T H K")
    sizes.check("log_f", log_f, "B T H K")
    sizes.check("v", v, "B T H V")
    sizes.check("initial_state", initial_state, "N H K V")


def check_hgrn2_args(
    q: Tensor,
    v: Tensor,
    f_logits: Tensor,
    lower_bound: Tensor | None,
    initial_state: Tensor | None,
    cu_seqlens: Tensor | None,
    **_: object,
) -> None:
    """q, f_logits [B, T, H, K]; v [B, T, H, V]; lower_bound [H, K]; initial_state [N, H, K, V]."""
    sizes = _sequence_sizes(q, v, cu_seqlens)
    sizes.check("f_logits", f_logits, "B T H K")
    sizes.check("v", v, "B T H V")
    sizes.check("lower_bound", lower_bound, "H K", BOUND)
    sizes.check("initial_state", initial_state, "N H K V")


def check_hgrn2_directions_args(
    q: Tensor,
    v: Tensor,
    f_logits: Tensor,
    lower_bound: Tensor | None,
    direction: str,
    grid: tuple[int, int] | None,
    **_: object,
) -> None:
    """As `check_hgrn2_args`; direction 'bidirectional' or '2d', the latter with grid (height, width), T = h * w."""
    check_hgrn2_args(q, v, f_logits, lower_bound, None, None)
    if direction not in SCAN_DIRECTIONS:
        raise ValueError(f"direction={direction!r} is not one hgrn2_directions runs; choose one of {SCAN_DIRECTIONS}")
    if direction == "2d":
        check_grid(direction, grid)
        check_grid_length(q.shape[1], grid)


def check_hgrn1_args(
    x: Tensor, log_f: Tensor, theta: Tensor | None, initial_state: Tensor | None, cu_seqlens: Tensor | None, **_: object
) -> None:
    """log_f [B, T, D]; x [B, T, D] (real) or [B, T, D, 2] (complex: theta [D]); initial_state [N, D(, 2)]."""
    check_rank("log_f", log_f, 3, "[B, T, D]")
    B, T, D = log_f.shape
    sizes = Sizes("log_f", B=B, T=T, D=D, N=check_cu_seqlens(cu_seqlens, B, T))
    pair, note = _hgrn1_values(theta)
    sizes.check("x", x, "B T D" + pair, note)
    sizes.check("theta", theta, "D")
    sizes.check("initial_state", initial_state, "N D" + pair, note)


def check_gla_step_args(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, state: Tensor, **_: object) -> None:
    """q, k, log_f [B, H, K]; v [B, H, V]; state [B, H, K, V]."""
    sizes = _step_sizes(q, v)
    sizes.check("k", k, "B H K")
    sizes.check("log_f", log_f, "B H K")
    sizes.check("v", v, "B H V")
    sizes.check("state", state, "B H K V")


def check_hgrn2_step_args(
    q: Tensor, v: Tensor, f_logits: Tensor, state: Tensor, lower_bound: Tensor | None, **_: object
) -> None:
    """q, f_logits [B, H, K]; v [B, H, V]; state [B, H, K, V]; lower_bound [H, K]."""
    sizes = _step_sizes(q, v)
    sizes.check("f_logits", f_logits, "B H K")
    sizes.check("v", v, "B H V")
    sizes.check("state", state, "B H K V")
    sizes.check("lower_bound", lower_bound, "H K", BOUND)


def check_hgrn1_step_args(x: Tensor, log_f: Tensor, state: Tensor, theta: Tensor | None, **_: object) -> None:
    """log_f [B, D]; x and state [B, D] (real) or [B, D, 2] (complex: theta [D])."""
    check_rank("log_f", log_f, 2, "[B, D]")
    sizes = Sizes("log_f", B=log_f.shape[0], D=log_f.shape[1])
    pair, note = _hgrn1_values(theta)
    sizes.check("x", x, "B D" + pair, note)
    sizes.check("theta", theta, "D")
    sizes.check("state", state, "B D" + pair, note)


def _sequence_sizes(q: Tensor, v: Tensor, cu_seqlens: Tensor | None) -> Sizes:
    check_rank("q", q, 4, "[B, T, H, K]")
    check_rank("v", v, 4, "[B, T, H, V]")
    B, T, H, K = q.shape
    return Sizes("q", B=B, T=T, H=H, K=K, V=v.shape[-1], N=check_cu_seqlens(cu_seqlens, B, T))


def _step_sizes(q: Tensor, v: Tensor) -> Sizes:
    check_rank("q", q, 3, "[B, H, K]")
    check_rank("v", v, 3, "[B, H, V]")
    B, H, K = q.shape
    return Sizes("q", B=B, H=H, K=K, V=v.shape[-1])


def _hgrn1_values(theta: Tensor | None) -> tuple[str, str]:
    """The trailing axis of x and the state, and what it means."""
    return ("", " (real: theta is None)") if theta is None else (" 2", " ((real, imag) pairs: theta is given)")
