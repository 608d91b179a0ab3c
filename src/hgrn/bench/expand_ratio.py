"""Expand-ratio and steep-gate sweeps of the HGRN2 op: python -m hgrn.bench.expand_ratio [--out results/bench]
-> results/bench/expand-ratio-<gpu>-<date>.{json,md}.

At B 8, T 2048, d 2048 (bf16, so the op's inputs and output are the same bytes at every ratio): the dispatched op
(hgrn.ops.hgrn2_recurrence) at expand ratio 1 .. 256, the chunked kernels forced at the ratios the small-head path
takes (what ran there before it), the chunked kernels with both fusions and with neither at the ratios where they
apply (HGRN_CHUNK_TILES=FUSE=1,INLINE_DA=1: the forward without autograd in one kernel, da formed in the backward;
FUSE=0,INLINE_DA=0: prep + walk, da through memory; the A/B that sets the plan's defaults), the chunked kernels with
their paths split and the backward's sums by a scan (SPLIT=1,SCAN=1: the rule at head size 16 since 2026-12-05, a
candidate elsewhere) wherever they run, and the HGRN1 real scan at [B, T, d] (the element-wise floor of ratio 1).
Then the steep-gate sweep at the main shape (expand ratio 128): gate logits shifted so that the mean log f per step
runs from -2 to -24, against random gates, by the rule and by the candidate. Forward and forward + backward,
median ms (triton.testing.do_bench).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from hgrn import ops
from hgrn.bench.report import dated_record, write_dated

B, T, D = 8, 2048, 2048
RATIOS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FUSION_RATIOS = (16, 32, 64)  # where the chunk plan can fuse the inference forward and form da in the backward
FUSIONS = {"fused": "FUSE=1,INLINE_DA=1", "unfused": "FUSE=0,INLINE_DA=0"}
SPLIT = "SPLIT=1,SCAN=1"  # the chunked kernels' fast pass, then the chunks it listed steep; sums by a scan
STEEP_LOG_F = (-2, -4, -8, -12, -16, -20, -24)


def _time(forward: Callable[[], torch.Tensor], leaves: list[torch.Tensor]) -> tuple[float, float]:
    """(forward ms, forward + backward ms), medians."""
    from triton.testing import do_bench

    grad = torch.randn_like(forward())

    def both() -> None:
        torch.autograd.grad(forward(), leaves, grad)

    with torch.no_grad():
        fwd = do_bench(forward)
    return fwd, do_bench(both)


def _hgrn2(ratio: int, shift: float = 0.0, chunked: bool = False) -> tuple[float, float, float]:
    """(fwd ms, fwd+bwd ms, mean log f) of HGRN2 at this expand ratio (head size); chunked forces the chunk kernels."""
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

    mean_log_f = F.logsigmoid(z.detach().float()).mean().item()
    return (*_time(forward, [q, v, z, lb]), mean_log_f)


def _hgrn1() -> tuple[float, float]:
    x = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = F.logsigmoid(torch.randn(B, T, D, device="cuda") + 2).bfloat16().requires_grad_()
    return _time(lambda: ops.hgrn1_recurrence(x, g)[0], [x, g])


def run() -> dict:
    from hgrn.ops.triton.small_head import SMALL_HEAD_MAX

    rows = []
    fwd, both = _hgrn1()
    rows.append({"case": "hgrn1 real scan [B, T, d]", "ratio": None, "fwd_ms": fwd, "fwd_bwd_ms": both})
    for ratio in RATIOS:
        fwd, both, _ = _hgrn2(ratio)
        rows.append({"case": "ours (hgrn.ops)", "ratio": ratio, "fwd_ms": fwd, "fwd_bwd_ms": both})
        if ratio <= SMALL_HEAD_MAX:
            fwd, both, _ = _hgrn2(ratio, chunked=True)
            rows.append({"case": "chunk kernels forced", "ratio": ratio, "fwd_ms": fwd, "fwd_bwd_ms": both})
        if ratio in FUSION_RATIOS:
            for name, tiles in FUSIONS.items():
                with mock.patch.dict(os.environ, {"HGRN_CHUNK_TILES": tiles}):  # the plan reads it at every call
                    fwd, both, _ = _hgrn2(ratio)
                rows.append({"case": f"{name} ({tiles})", "ratio": ratio, "fwd_ms": fwd, "fwd_bwd_ms": both})
        if ratio > SMALL_HEAD_MAX:
            with mock.patch.dict(os.environ, {"HGRN_CHUNK_TILES": SPLIT}):
                fwd, both, _ = _hgrn2(ratio)
            rows.append({"case": f"split ({SPLIT})", "ratio": ratio, "fwd_ms": fwd, "fwd_bwd_ms": both})
        print(f"ratio {ratio} done", flush=True)
    steep = []
    for target in (None, *STEEP_LOG_F):
        shift = 0.0 if target is None else float(target)
        fwd, both, mean_log_f = _hgrn2(128, shift=shift)
        with mock.patch.dict(os.environ, {"HGRN_CHUNK_TILES": SPLIT}):
            split_fwd, split_both, _ = _hgrn2(128, shift=shift)
        steep.append({"gates": "random" if target is None else f"shift {target}", "mean_log_f": mean_log_f,
                      "fwd_ms": fwd, "fwd_bwd_ms": both, "split_fwd_ms": split_fwd,
                      "split_fwd_bwd_ms": split_both})  # fmt: skip
    return dated_record(
        "expand-ratio",
        "python -m hgrn.bench.expand_ratio",
        shape={"B": B, "T": T, "d": D, "dtype": "bf16"},
        rows=rows,
        steep_gates=steep,
        split_tiles=SPLIT,
    )


def markdown(result: dict) -> str:
    def ratio(row: dict) -> str:
        return "-" if row["ratio"] is None else str(row["ratio"])

    lines = [
        f"# HGRN2 op by expand ratio and gate steepness, {result['device']}, {result['date']}",
        "",
        f"`{result['command']}`: B {B}, T {T}, d {D}, bf16; median ms (triton.testing.do_bench).",
        "",
        "| case | expand ratio | fwd ms | fwd+bwd ms |",
        "|---|---|---|---|",
        *(f"| {r['case']} | {ratio(r)} | {r['fwd_ms']:.3f} | {r['fwd_bwd_ms']:.3f} |" for r in result["rows"]),
        "",
        "Steep gates at expand ratio 128 (gate logits shifted; mean log f per step measured):",
        "",
        "| gates | mean log f | fwd ms | fwd+bwd ms | fwd+bwd vs random |",
        "|---|---|---|---|---|",
    ]
    steep = result["steep_gates"]
    lines += [
        f"| {s['gates']} | {s['mean_log_f']:.2f} | {s['fwd_ms']:.3f} | {s['fwd_bwd_ms']:.3f} | "
        f"{s['fwd_bwd_ms'] / steep[0]['fwd_bwd_ms']:.2f}x |"
        for s in steep
    ]
    if "split_fwd_bwd_ms" in steep[0]:  # (runs before 2026-12-05 timed the rule only)
        tiles = result.get("split_tiles", "SPLIT=1")
        lines += ["", f"The same gates with the chunked kernels' paths split ({tiles}):", "",
                  "| gates | fwd ms | fwd+bwd ms | fwd+bwd vs its random |", "|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {s['gates']} | {s['split_fwd_ms']:.3f} | {s['split_fwd_bwd_ms']:.3f} | "
            f"{s['split_fwd_bwd_ms'] / steep[0]['split_fwd_bwd_ms']:.2f}x |"
            for s in steep
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    result = run()
    write_dated(result, markdown(result), args.out, "expand-ratio")


if __name__ == "__main__":
    main()
