"""Scan directions: causal, bidirectional (forward + reversed scan) and two 2-D ones over a (height, width) grid.

'2d' (the official Hgru2_2d_parallel / Hgru2d): a mixer computes its per-token inputs once and hands a
`scan(*tensors, reverse=...)` to `scan_directions`, which sums the forward and reversed scans along the rows and along
the columns; every pass shares every projection.

'2d_series' (the official Hgru2_2d_series, HGRN2's Path-X choice): the whole mixer, projections to output projection,
runs bidirectionally along the height (each column), then again, with the same weights, along the width (each row) on
the first pass's output. Two stacked passes let one layer reach every cell of the grid, not only its row and column.
Mixers run it through `mix_directions`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from einops import rearrange
from torch import Tensor

DIRECTIONS = ("causal", "bidirectional", "2d", "2d_series")
GRID_DIRECTIONS = ("2d", "2d_series")  # the directions that need grid=(height, width)
COLUMNS = "b (h w) ... -> (b w) h ..."  # each column of the row-major grid as one sequence (along the height)
ROWS = "b (h w) ... -> (b h) w ..."  # each row as one sequence (along the width)

Mix = Callable[[Tensor, Tensor | None, str], Tensor]  # mix(x [B, T, d], mask [B, T] or None, direction) -> [B, T, d]


def check_direction(direction: str, grid: tuple[int, int] | None) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r} is not known; choose one of {DIRECTIONS}")
    if direction in GRID_DIRECTIONS and (grid is None or len(grid) != 2):
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
    """Sum of `scan` over the direction's passes; tensors are [B, T, ...] and so is the result."""
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
    return rearrange(along_rows, _inverse(ROWS), b=b) + rearrange(along_cols, _inverse(COLUMNS), b=b)


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
    return rearrange(mix(lines, line_mask, "bidirectional"), _inverse(pattern), b=x.shape[0])


def _inverse(pattern: str) -> str:
    source, target = pattern.split(" -> ")
    return f"{target} -> {source}"
