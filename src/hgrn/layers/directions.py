"""Scan directions: causal, bidirectional (forward + reversed scan) and two 2-D ones over a (height, width) grid.

'2d' (the official Hgru2_2d_parallel / Hgru2d): a mixer computes its per-token inputs once and hands a
`scan(*tensors, reverse=...)` to `hgrn.ops.directions.scan_directions`, which sums the forward and reversed scans
along the rows and along the columns; every pass shares every projection. (HGRN2 calls `hgrn.ops.hgrn2_directions`,
which the kernels fuse.)

'2d_series' (the official Hgru2_2d_series, HGRN2's Path-X choice): the whole mixer, projections to output projection,
runs bidirectionally along the height (each column), then again, with the same weights, along the width (each row) on
the first pass's output. Two stacked passes let one layer reach every cell of the grid, not only its row and column.
Mixers run it through `mix_directions`.
"""

from __future__ import annotations

from collections.abc import Callable

from einops import rearrange
from torch import Tensor

from hgrn.ops.directions import COLUMNS, ROWS, check_grid, check_grid_length, inverse

DIRECTIONS = ("causal", "bidirectional", "2d", "2d_series")
GRID_DIRECTIONS = ("2d", "2d_series")  # the directions that need grid=(height, width)

Mix = Callable[[Tensor, Tensor | None, str], Tensor]  # mix(x [B, T, d], mask [B, T] or None, direction) -> [B, T, d]


def check_direction(direction: str, grid: tuple[int, int] | None) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r} is not known; choose one of {DIRECTIONS}")
    if direction in GRID_DIRECTIONS:
        check_grid(direction, grid)


def mix_directions(mix: Mix, x: Tensor, mask: Tensor | None, direction: str, grid: tuple[int, int] | None) -> Tensor:
    """`mix(x, mask, direction)`; for '2d_series' a bidirectional `mix` along each column, then along each row of
    that output. The mask goes to both passes, so padded cells feed nothing into either."""
    if direction != "2d_series":
        return mix(x, mask, direction)
    check_grid_length(x.shape[1], grid)
    along_height = _mix_lines(mix, x, mask, COLUMNS, grid[0])
    return _mix_lines(mix, along_height, mask, ROWS, grid[0])


def _mix_lines(mix: Mix, x: Tensor, mask: Tensor | None, pattern: str, height: int) -> Tensor:
    """The grid's lines that `pattern` picks out, mixed as a batch of independent bidirectional sequences."""
    lines = rearrange(x, pattern, h=height)
    line_mask = None if mask is None else rearrange(mask, pattern, h=height)
    return rearrange(mix(lines, line_mask, "bidirectional"), inverse(pattern), b=x.shape[0])
