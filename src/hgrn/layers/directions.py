"""Scan directions: causal, bidirectional (forward + reversed scan) and 2-D (rows and columns, both ways).

A mixer computes its per-token inputs once and hands a `scan(*tensors, reverse=...)` to `scan_directions`; the
directions share every projection and sum their outputs, as the official bidirectional and 2-D HGRN modules do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from einops import rearrange
from torch import Tensor

DIRECTIONS = ("causal", "bidirectional", "2d")


def check_direction(direction: str, grid: tuple[int, int] | None) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r} is not known; choose one of {DIRECTIONS}")
    if direction == "2d" and (grid is None or len(grid) != 2):
        raise ValueError(f"direction='2d' needs grid=(height, width) of the token grid; got grid={grid!r}")


def scan_directions(
    scan: Callable[..., Tensor], tensors: Sequence[Tensor], direction: str, grid: tuple[int, int] | None = None
) -> Tensor:
    """Sum of `scan` over the direction's passes; tensors are [B, T, ...] and so is the result."""
    if direction == "causal":
        return scan(*tensors, reverse=False)
    if direction == "bidirectional":
        return scan(*tensors, reverse=False) + scan(*tensors, reverse=True)
    height, width = grid
    if tensors[0].shape[1] != height * width:
        raise ValueError(f"sequence length {tensors[0].shape[1]} does not match grid={grid} ({height * width} tokens)")
    rows = [rearrange(t, "b (h w) ... -> (b h) w ...", h=height) for t in tensors]
    cols = [rearrange(t, "b (h w) ... -> (b w) h ...", h=height) for t in tensors]
    along_rows = scan(*rows, reverse=False) + scan(*rows, reverse=True)
    along_cols = scan(*cols, reverse=False) + scan(*cols, reverse=True)
    b = tensors[0].shape[0]
    return rearrange(along_rows, "(b h) w ... -> b (h w) ...", b=b) + rearrange(
        along_cols, "(b w) h ... -> b (h w) ...", b=b
    )
