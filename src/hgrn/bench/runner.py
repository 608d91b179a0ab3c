"""Timing on the GPU: ceilings, then every case's first call, peak memory and median times."""

from __future__ import annotations

import argparse
import datetime
import json
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

from hgrn.bench import cases as C
from hgrn.bench.report import stem
from hgrn.bench.roofline import Shape, achieved, floor_ms, min_bytes, min_flops
from hgrn.bench.shapes import MAIN_HGRN1, MAIN_HGRN2


def median_ms(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def graph_ms(fn) -> float | None:
    """GPU time per call from a CUDA graph of repeated calls: no Python launch overhead, which makes do_bench
    launch-bound for sub-0.1 ms ops on a slow host. None when the op cannot be captured."""
    try:
        return do_bench_cudagraph(fn, rep=100, return_mode="median")
    except Exception as error:  # e.g. a host sync inside the op
        print(f"  no CUDA-graph time: {error!r:.200}", flush=True)
        torch.cuda.synchronize()
        return None


def measure_ceilings() -> dict[str, float]:
    """Device-to-device copy (bytes read + written) and a bf16 8192^3 matmul on random data."""
    buffers = [torch.randn(2**29, device="cuda"), torch.empty(2**29, device="cuda")]
    copy_tbs = 2 * buffers[0].nbytes / median_ms(lambda: buffers[1].copy_(buffers[0])) / 1e9
    buffers.clear()
    m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    matmul_tflops = 2 * 8192**3 / median_ms(lambda: m @ m) / 1e9
    return {"copy_tbs": copy_tbs, "matmul_tflops": matmul_tflops}


def _sync_time(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def _peak_mib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def measure(case: C.Case, ceilings: dict[str, float], run_id: str) -> list[dict]:
    rows = []
    try:
        fwd, fwd_bwd = case.build()
        first = {"fwd": _sync_time(fwd), "fwd+bwd": _sync_time(fwd_bwd)}
        for mode, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            row = {"impl": case.impl, "group": case.group, "op": case.op, "shape": case.shape.label,
                   "shape_dims": vars(case.shape), "mode": mode, "run": run_id,
                   "first_call_s": first[mode], "peak_mib": _peak_mib(fn), "ms": median_ms(fn),
                   "graph_ms": graph_ms(fn) if case.graph else None}  # fmt: skip
            if case.op is not None:
                nbytes, flops = min_bytes(case.op, case.shape, mode), min_flops(case.op, case.shape, mode)
                row["bytes"], row["flops"] = nbytes, flops
                row["tbs"], row["tflops"] = achieved(nbytes, flops, row["ms"])
                if row["graph_ms"] is not None:
                    row["graph_tbs"] = achieved(nbytes, flops, row["graph_ms"])[0]
                row["floor_ms"] = floor_ms(nbytes, flops, ceilings["copy_tbs"], ceilings["matmul_tflops"])
            rows.append(row)
            print(f"{case.impl:32s} {case.group:12s} {case.shape.label:22s} {mode:8s} {row['ms']:9.3f} ms "
                  f"graph {row['graph_ms'] or float('nan'):8.3f} ms "
                  f"first {row['first_call_s']:6.1f} s  peak {row['peak_mib']:8.0f} MiB", flush=True)  # fmt: skip
    except Exception as error:  # one failing implementation must not lose the others' numbers
        traceback.print_exc()
        rows.append({"impl": case.impl, "group": case.group, "op": case.op, "shape": case.shape.label,
                     "shape_dims": vars(case.shape), "mode": "fwd", "run": run_id,
                     "error": repr(error)[:500]})  # fmt: skip
    torch.cuda.empty_cache()
    return rows


def _shape(text: str) -> Shape:
    dims = [int(x) for x in text.lower().split("x")]
    return Shape(dims[0], dims[1], 1, dims[2]) if len(dims) == 3 else Shape(*dims)


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    fla = not args.no_fla and C.HAS_FLA
    run_id = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ceilings = measure_ceilings()
    print(f"ceilings: copy {ceilings['copy_tbs']:.2f} TB/s, bf16 matmul {ceilings['matmul_tflops']:.0f} TFLOP/s")
    todo: list[C.Case] = []
    for text in args.hgrn2:
        main = text == MAIN_HGRN2
        todo += C.hgrn2_cases(_shape(text), fla=fla, sdpa=True, ref=main, slow_path=main)
    for text in args.hgrn1:
        todo += C.hgrn1_cases(_shape(text), fla=fla, ref=text == MAIN_HGRN1, complex_valued=text == MAIN_HGRN1)
    for text in args.layer:
        todo += C.layer_cases(_shape(text), fla=fla)
    rows: list[dict] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for case in todo:
        rows += measure(case, ceilings, run_id)
        (args.out / "rows-partial.json").write_text(json.dumps(rows))  # survives a run cut short
    result = {
        "gpu": torch.cuda.get_device_name(),
        "date": run_id[:10],
        "versions": {
            "torch": torch.__version__,
            "triton": triton.__version__,
            "fla": _version("fla-core") if fla else None,
        },
        "ceilings": ceilings,
        "runs": {run_id: ceilings},
        "rows": rows,
        "notes": [
            "fla chunk_gla gets k = 1 - exp(g) and g precomputed (not timed); ours forms both from the gate logits.",
            "'ours (exact path)' runs gates with log f ~ -6 per step, which no chunk can factorise: the worst case.",
        ],
    }
    return with_earlier_rows(result, args.merge or args.out / f"{stem(result)}.json")


def with_earlier_rows(result: dict, earlier_path: Path) -> dict:
    """`result` after the rows of the earlier result at earlier_path (same GPU; `--merge`, by default the day's file
    under --out) that this run did not measure again, so a day's second run does not write over its first; the
    result unchanged when there is no such file."""
    if not earlier_path.is_file():
        return result
    earlier = json.loads(earlier_path.read_text())
    if earlier["gpu"] != result["gpu"]:
        raise SystemExit(f"--merge: {earlier_path} is from {earlier['gpu']}, this run is on {result['gpu']}")
    fresh = {(r["impl"], r["shape"], r["group"]) for r in result["rows"]}
    rows = [r for r in earlier["rows"] if (r["impl"], r["shape"], r["group"]) not in fresh] + result["rows"]
    notes = earlier["notes"] + [n for n in result["notes"] if n not in earlier["notes"]]
    return {**result, "rows": rows, "runs": {**earlier.get("runs", {}), **result["runs"]}, "notes": notes}
