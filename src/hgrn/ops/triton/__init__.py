"""The Triton backend of hgrn.ops: each op mapped onto its kernels (arguments already checked by the dispatch).

chunk.py (kernels in chunk_kernels.py, chunk_pairs.py): chunked GLA / HGRN2 forward and backward; hgrn1_scan.py:
the HGRN1 scan (and HGRN2 with heads of one channel on dense batches); small_head.py (kernels in small_head_scan.py,
small_head_lines.py): GLA / HGRN2 with heads of at most SMALL_HEAD_MAX channels, each head's state scanned
element-wise in registers, and both scan directions of a line in one program (the path is chosen here, per shape);
fused_recurrent.py: decoding steps with the state updated in place. Tensors must live where Triton runs (CUDA, or
the CPU interpreter in tests: `with hgrn.ops.use_backend("triton"):`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hgrn.ops.directions import hgrn2_by_directions
from hgrn.ops.triton import fused_recurrent, hgrn1_scan, small_head
from hgrn.ops.triton.chunk import GATE_GLA, GATE_HGRN2, GATE_HGRN2_LB, chunk_recurrence


def _tag_compile_caches() -> None:
    """Salt torch.compile's caches with this backend's source. A compiled graph holds each custom op's output shapes
    as its fake implementation gave them, and some follow the tile rules here (the chunk size sets the saved scores'
    width); Inductor's cache is keyed by the graph, not by this code, so after a rule changed a cached graph
    asserted the old shapes ("expected size 64==32 ... Error in op: torch.ops.hgrn.chunk_forward", 2026-12-04)."""
    sources = b"".join(path.read_bytes() for path in sorted(Path(__file__).parent.glob("*.py")))
    tag = f"hgrn-kernels-{hashlib.sha256(sources).hexdigest()[:16]}"
    config = torch.compiler.config
    if not hasattr(config, "cache_key_tag"):  # a torch without the tag: nothing to salt
        return
    if tag not in config.cache_key_tag:
        config.cache_key_tag = f"{config.cache_key_tag}+{tag}" if config.cache_key_tag else tag


_tag_compile_caches()

hgrn1_recurrence = hgrn1_scan.scan
hgrn1_step = fused_recurrent.hgrn1_step


def gla_recurrence(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, **options: Any) -> tuple[Tensor, Tensor | None]:
    if small_head.fits(k, v):
        return small_head.recurrence(q, k, log_f, None, v, gate=GATE_GLA, **options)
    return chunk_recurrence(q, k, log_f, None, v, gate=GATE_GLA, **options)


def hgrn2_recurrence(
    q: Tensor, v: Tensor, f_logits: Tensor, lower_bound: Tensor | None, **options: Any
) -> tuple[Tensor, Tensor | None]:
    """The gate is formed in the kernels: f = lb + (1 - lb) sigmoid(f_logits), k = 1 - f. Heads of one channel
    (expand ratio 1) on a dense batch are HGRN1's real scan with x = k v and o = scale q h (hgrn1_scan)."""
    if q.shape[-1] == v.shape[-1] == 1 and options["cu_seqlens"] is None:
        dense = {name: value for name, value in options.items() if name != "cu_seqlens"}
        return hgrn1_scan.hgrn2_head_size_one(q, v, f_logits, lower_bound, **dense)
    if small_head.fits(q, v):
        return small_head.recurrence(q, f_logits, None, lower_bound, v, gate=_hgrn2_gate(lower_bound), **options)
    return chunk_recurrence(q, f_logits, None, lower_bound, v, gate=_hgrn2_gate(lower_bound), **options)


def hgrn2_directions(
    q: Tensor, v: Tensor, f_logits: Tensor, lower_bound: Tensor | None, *, scale: float, direction: str, grid: Any
) -> Tensor:
    """Small heads: one fused kernel launch per line direction (sequence, or grid rows then columns); otherwise, or
    where the lines are too few to fill the GPU unsegmented, one `hgrn2_recurrence` per pass."""
    lines = grid if direction == "2d" else None
    if not small_head.fits(q, v) or small_head.line_plans(q, v, lines) is None:
        return _hgrn2_by_passes(q, v, f_logits, lower_bound, scale=scale, direction=direction, grid=grid)
    gate = _hgrn2_gate(lower_bound)
    return small_head.directions(q, f_logits, None, lower_bound, v, gate=gate, scale=scale, grid=lines)


def gla_step(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, state: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """`state` is updated in place and returned."""
    return fused_recurrent.gla_step(q, k, v, log_f, state, None, gate=GATE_GLA, scale=scale)


def hgrn2_step(
    q: Tensor, v: Tensor, f_logits: Tensor, state: Tensor, lower_bound: Tensor | None, scale: float
) -> tuple[Tensor, Tensor]:
    """`state` is updated in place and returned."""
    gate = _hgrn2_gate(lower_bound)
    return fused_recurrent.gla_step(q, f_logits, v, None, state, lower_bound, gate=gate, scale=scale)


def _hgrn2_gate(lower_bound: Tensor | None) -> int:
    return GATE_HGRN2 if lower_bound is None else GATE_HGRN2_LB


_hgrn2_by_passes = hgrn2_by_directions(hgrn2_recurrence)
