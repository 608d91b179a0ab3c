"""Expand-ratio and steep-gate sweeps of the HGRN2 op: python -m hgrn.bench.expand_ratio [--out results/bench]
-> results/bench/expand-ratio-<gpu>-<date>.{json,md}.

At B 8, T 2048, d 2048 (bf16, so the op's inputs and output are the same bytes at every ratio): the dispatched op
(hgrn.ops.hgrn2_recurrence) at expand ratio 1 .. 256, the chunked kernels forced at the ratios the small-head path
takes (what ran there before it), the chunked kernels with both fusions and with neither at the ratios where they
apply (HGRN_CHUNK_TILES=FUSE=1,INLINE_DA=1: the forward without autograd in one kernel, da formed in the backward;
FUSE=0,INLINE_DA=0: prep + walk, da through memory; the A/B that sets the plan's defaults), each candidate tile rule
at its ratio (CANDIDATES), the HGRN1 real scan at [B, T, d] (the element-wise floor of ratio 1) and SDPA's causal
attention at ratio 128's heads (16 of 128: issue 13's peer at the main shape). Then the steep-gate sweep at the
ratios whose chunked kernels take gate-dependent paths: gate logits shifted so that the mean log f per step runs
from -2 to -24, against random gates, by the rule and by the candidates there. Forward and forward + backward,
median ms (triton.testing.do_bench), the CUDA time of the forward + backward's kernels (torch.profiler), and both
replayed from CUDA graphs: at these sizes the timed loop also times the host's launches, the kernel sum and the
graph replay the GPU alone.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F

from hgrn import ops
from hgrn.bench.report import dated_record, write_dated
from hgrn.bench.runner import graph_ms
from hgrn.bench.step_profile import kernel_ms

B, T, D = 8, 2048, 2048
RATIOS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FUSION_RATIOS = (16, 32, 64)  # where the chunk plan can fuse the inference forward and form da in the backward
FUSIONS = {"fused": "FUSE=1,INLINE_DA=1", "unfused": "FUSE=0,INLINE_DA=0"}
# tile rules against the rule, at random and steep gates (none now: INLINE_DA=1 at 16 and 32, the last, became the
# rule in session 36; chunk.make_plan has its numbers). E.g. {16: ("pwarps=4",)}
CANDIDATES: dict[int, tuple[str, ...]] = {}
# the chunked ratios (steep chunks take the blocked path at each)
STEEP_RATIOS = (16, 32, 64, 128)
STEEP_LOG_F = (-2, -4, -8, -12, -16, -20, -24)
# what the steep-gate table compares with random gates: the GPU's own time (the timed loop's host launches blur it)
STEEP_COLUMNS = ("fwd_graph_ms", "fwd_bwd_graph_ms", "fwd_bwd_kernels_ms")


def op_times(forward: Callable[[], torch.Tensor], leaves: list[torch.Tensor], graphs: bool = True) -> dict[str, Any]:
    """Forward and forward + backward ms (medians), the forward + backward's kernel time (total and by kernel), and
    (graphs) both replayed from CUDA graphs (runner.graph_ms: no launches by the host, as a training step under CUDA
    graphs runs them)."""
    from triton.testing import do_bench

    grad = torch.randn_like(forward())

    def both() -> None:
        torch.autograd.grad(forward(), leaves, grad)

    with torch.no_grad():
        timed = {"fwd_ms": do_bench(forward)}
        if graphs:
            timed["fwd_graph_ms"] = graph_ms(forward)
    timed["fwd_bwd_ms"] = do_bench(both)
    kernels = kernel_ms(both)
    timed["fwd_bwd_kernels_ms"] = sum(kernels.values())
    timed["kernels"] = kernels  # by name (the JSON's): which kernels a steep-gate series grows in
    if graphs:
        timed["fwd_bwd_graph_ms"] = graph_ms(both)
    return {k: v for k, v in timed.items() if v is not None}


def _hgrn2(
    ratio: int, shift: float = 0.0, chunked: bool = False, tiles: str | None = None, graphs: bool = True
) -> dict[str, Any]:
    """`op_times` of HGRN2 at this expand ratio (head size), with the mean log f; chunked forces the chunk kernels,
    tiles overrides their rule (HGRN_CHUNK_TILES, which the plan reads at every call)."""
    H = D // ratio
    q, v, z = (torch.randn(B, T, H, ratio, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    z = (z + shift).requires_grad_()
    q.requires_grad_(), v.requires_grad_()
    lb = torch.zeros(H, ratio, device="cuda", requires_grad=True)
    if chunked:
        from hgrn.ops.triton.chunk import GATE_HGRN2_LB, chunk_recurrence

        def forward() -> torch.Tensor:
            return chunk_recurrence(q, z, None, lb, v, gate=GATE_HGRN2_LB, scale=ratio**-0.5, initial_state=None,
                                    output_final_state=False, reverse=False, cu_seqlens=None)[0]  # fmt: skip
    else:

        def forward() -> torch.Tensor:
            return ops.hgrn2_recurrence(q, v, z, lb, scale=ratio**-0.5)[0]

    with mock.patch.dict(os.environ, {} if tiles is None else {"HGRN_CHUNK_TILES": tiles}):
        timed = op_times(forward, [q, v, z, lb], graphs)
    return {**timed, "mean_log_f": F.logsigmoid(z.detach().float()).mean().item()}


def _hgrn1() -> dict[str, Any]:
    x = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = F.logsigmoid(torch.randn(B, T, D, device="cuda") + 2).bfloat16().requires_grad_()
    return op_times(lambda: ops.hgrn1_recurrence(x, g)[0], [x, g])


def _sdpa() -> dict[str, Any]:
    q, k, v = (torch.randn(B, D // 128, T, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in "qkv")
    return op_times(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v])


def run() -> dict:
    from hgrn.ops.triton.small_head import SMALL_HEAD_MAX

    rows = [{"case": "hgrn1 real scan [B, T, d]", "ratio": None, **_hgrn1()},
            {"case": "SDPA causal attention [B, 16, T, 128]", "ratio": None, **_sdpa()}]  # fmt: skip
    for ratio in RATIOS:
        rows.append({"case": "ours (hgrn.ops)", "ratio": ratio, **_hgrn2(ratio)})
        if ratio <= SMALL_HEAD_MAX:
            rows.append({"case": "chunk kernels forced", "ratio": ratio, **_hgrn2(ratio, chunked=True)})
        if ratio in FUSION_RATIOS:
            for name, tiles in FUSIONS.items():
                rows.append({"case": f"{name} ({tiles})", "ratio": ratio, **_hgrn2(ratio, tiles=tiles)})
        for tiles in CANDIDATES.get(ratio, ()):
            rows.append({"case": f"candidate ({tiles})", "ratio": ratio, **_hgrn2(ratio, tiles=tiles)})
        print(f"ratio {ratio} done", flush=True)
    steep = []
    for ratio in STEEP_RATIOS:
        for tiles in (None, *CANDIDATES.get(ratio, ())):
            for target in (None, *STEEP_LOG_F):
                gates = "random" if target is None else f"shift {target}"
                timed = _hgrn2(ratio, shift=0.0 if target is None else float(target), tiles=tiles)
                steep.append({"ratio": ratio, "tiles": tiles or "rule", "gates": gates, **timed})
        print(f"steep gates at ratio {ratio} done", flush=True)
    return dated_record(
        "expand-ratio",
        "python -m hgrn.bench.expand_ratio",
        shape={"B": B, "T": T, "d": D, "dtype": "bf16"},
        rows=rows,
        steep_gates=steep,
    )


def markdown(result: dict) -> str:
    def ms(row: dict, key: str) -> str:
        return f"{row[key]:.3f}" if key in row else "-"

    def ratio(row: dict) -> str:
        return "-" if row["ratio"] is None else str(row["ratio"])

    def versus(row: dict, base: dict, key: str) -> str:
        """ms and their ratio to the series' random-gate row ('-' where a graph capture failed)."""
        against = f"{row[key] / base[key]:.2f}x" if key in row and key in base else "-"
        return f"{ms(row, key)} | {against}"

    lines = [
        f"# HGRN2 op by expand ratio and gate steepness, {result['device']}, {result['date']}",
        "",
        f"`{result['command']}`: B {B}, T {T}, d {D}, bf16; median ms (triton.testing.do_bench), the CUDA time of the",
        "forward + backward's kernels (torch.profiler), and each replayed from a CUDA graph (triton's",
        "do_bench_cudagraph): the timed loop also times the host's launches, the graph replay the GPU alone.",
        "",
        "| case | expand ratio | fwd ms | fwd+bwd ms | fwd+bwd kernels ms | fwd graph ms | fwd+bwd graph ms |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['case']} | {ratio(r)} | {ms(r, 'fwd_ms')} | {ms(r, 'fwd_bwd_ms')} | {ms(r, 'fwd_bwd_kernels_ms')} | "
            f"{ms(r, 'fwd_graph_ms')} | {ms(r, 'fwd_bwd_graph_ms')} |"
            for r in result["rows"]
        ),
        "",
        "Steep gates (gate logits shifted; mean log f per step measured), each rule against its own random gates,",
        "replayed from CUDA graphs (the forward alone, and forward + backward) and the forward + backward's kernels:",
        "",
        "| expand ratio | tiles | gates | mean log f | fwd graph ms | vs random | fwd+bwd graph ms | vs random | "
        "kernels ms | vs random |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    random: dict[tuple, dict] = {}
    for s in result["steep_gates"]:
        base = random.setdefault((s["ratio"], s["tiles"]), s)  # each (ratio, tiles) series starts with random gates
        cells = " | ".join(versus(s, base, key) for key in STEEP_COLUMNS)
        lines.append(f"| {s['ratio']} | {s['tiles']} | {s['gates']} | {s['mean_log_f']:.2f} | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    result = run()
    write_dated(result, markdown(result), args.out, "expand-ratio")


if __name__ == "__main__":
    main()
