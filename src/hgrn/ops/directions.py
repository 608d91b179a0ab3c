"""Scans in several directions, composed from one-way scans: 'bidirectional' (forward + reversed) and '2d' (both ways
along the rows and along the columns of a row-major (height, width) token grid, summed).

`scan_directions` composes any mixer's one-way scan (the layers' GLA and HGRN1 scans, and the backends' HGRN2 op
where no fused kernel applies); `hgrn2_by_directions` turns a backend's HGRN2 recurrence into its
`hgrn2_directions`. The Triton backend fuses the small-head case instead (hgrn.ops.triton.small_head.directions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from einops import rearrange
from torch import Tensor

SCAN_DIRECTIONS = ("bidirectional", "2d")  # the directions hgrn2_directions runs
COLUMNS = "b (h w) ... -> (b w) h ..."  # each column of the row-major grid as one sequence (along the height)
ROWS = "b (h w) ... -> (b h) w ..."  # each row as one sequence (along the width)


def check_grid(direction: str, grid: tuple[int, int] | None) -> None:
    """A 2-D direction needs the (height, width) of the token grid."""
    if grid is None or len(grid) != 2:
        raise ValueError(f"direction={direction!r} needs grid=(height, width) of the token grid; got grid={grid!r}")


def check_grid_length(length: int, grid: tuple[int, int]) -> None:
    """A 2-D direction reshapes the sequence into the grid, so padding past the grid cannot be told apart."""
    height, width = grid
    if length != height * width:
        raise ValueError(
            f"sequence length {length} does not match grid={tuple(grid)} ({height * width} tokens); the 2-D "
            "directions need exactly one token per grid cell (pad inside the grid and mask it, not past it)"
        )


def scan_directions(
    scan: Callable[..., Tensor], tensors: Sequence[Tensor], direction: str, grid: tuple[int, int] | None = None
) -> Tensor:
    """Sum of `scan(*tensors, reverse=...)` over the direction's passes; tensors are [B, T, ...] and so is the
    result ('causal': one forward pass)."""
    if direction == "causal":
        return scan(*tensors, reverse=False)
    if direction == "bidirectional":
        return scan(*tensors, reverse=False) + scan(*tensors, reverse=True)
    if direction != "2d":
        raise ValueError(f"direction={direction!r} runs the whole mixer once per grid axis: use mix_directions")
    height, _ = grid
    check_grid_length(tensors[0].shape[1], grid)
    rows = [rearrange(t, ROWS, h=height) for t in tensors]
    cols = [rearrange(t, COLUMNS, h=height) for t in tensors]
    along_rows = scan(*rows, reverse=False) + scan(*rows, reverse=True)
    along_cols = scan(*cols, reverse=False) + scan(*cols, reverse=True)
    b = tensors[0].shape[0]
    return rearrange(along_rows, inverse(ROWS), b=b) + rearrange(along_cols, inverse(COLUMNS), b=b)


def hgrn2_by_directions(recurrence: Callable[..., tuple[Tensor, Any]]) -> Callable[..., Tensor]:
    """A backend's `hgrn2_directions` from its `hgrn2_recurrence`: one one-way scan per pass, summed."""

    def hgrn2_directions(
        q: Tensor, v: Tensor, f_logits: Tensor, lower_bound: Tensor | None, *, scale: float, direction: str, grid: Any
    ) -> Tensor:
        def scan(q: Tensor, v: Tensor, f_logits: Tensor, reverse: bool) -> Tensor:
            options = dict(initial_state=None, output_final_state=False, reverse=reverse, cu_seqlens=None)
            return recurrence(q, v, f_logits, lower_bound, scale=scale, **options)[0]

        return scan_directions(scan, (q, v, f_logits), direction, grid)

    return hgrn2_directions


def inverse(pattern: str) -> str:
    """The einops pattern that undoes `pattern`."""
    source, target = pattern.split(" -> ")
    return f"{target} -> {source}"
