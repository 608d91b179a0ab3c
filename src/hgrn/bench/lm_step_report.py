"""Results of the LM step benchmark (hgrn.bench.lm_step): one JSON and one Markdown table per GPU and date,
results/bench/lm-step-<gpu>-<date>.{json,md}.

Every row carries the run (start time, UTC) that measured it. A later run on the same GPU can be added to the file
(`--merge`): its rows follow the earlier ones. MFU uses the bf16 matmul rate measured in the row's own run, and a row
is compared (x Llama, x fla) only with peers measured in that run.
"""

from __future__ import annotations

import datetime
import json
import re
import statistics
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from hgrn.bench.report import write_json_and_markdown

PEER_COLUMNS = (("x Llama", "llama-sdpa"), ("x fla", "fla-hgrn2"))
VERSIONED = ("torch", "triton", "transformers", "fla-core")


def new_run_id() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def assemble(
    rows: list[dict], shape: dict, gpu: str, run: str, matmul_tflops: float | None, setting: str, earlier: dict | None
) -> dict:
    """The result of this run's rows (each tagged with `run`) after those of `earlier` (a result of the same GPU, or
    None). Adds each measured row's MFU = 6 N tokens/s over its run's matmul rate."""
    runs = {run: {"matmul_tflops": matmul_tflops, "versions": {name: _version(name) for name in VERSIONED}}}
    rows = [{**row, "run": run} for row in rows]
    if earlier is not None:
        if earlier["gpu"] != gpu:
            raise SystemExit(f"--merge: that result is from {earlier['gpu']}, this run is on {gpu}; merge same GPUs")
        runs, rows = {**earlier["runs"], **runs}, earlier["rows"] + rows
    for row in rows:
        tflops = runs[row["run"]]["matmul_tflops"]
        if "tokens_per_s" in row and tflops:
            row["mfu"] = 6 * row["params"] * row["tokens_per_s"] / (tflops * 1e12)
    return {"gpu": gpu, "date": run[:10], "shape": shape, "setting": setting, "runs": runs, "rows": rows}


ROW_FLAGS: tuple[tuple[Callable[[dict], bool], str], ...] = (  # how a row ran, where not as its note says
    (lambda row: row.get("kernels_ahead") is False, "HGRN_PRECOMPILE=0: our kernels compiled at their first launches"),
    (lambda row: row.get("loss_kernel") is False, "the loss's chunks through torch.compile, not our Triton kernel"),
    (lambda row: bool(row.get("warm_cache")), "its caches held an earlier run's kernels: the first step is not cold"),
)


def stem(result: dict) -> str:
    gpu = re.sub(r"[^a-z0-9]+", "-", result["gpu"].lower()).strip("-")
    return f"lm-step-{gpu}-{result['date']}"


def day_result(out_dir: Path, gpu: str, date: str) -> dict | None:
    """The result `write` left under out_dir for this GPU and day, or None: a later run of the day adds its rows to
    it (`assemble`'s `earlier`) instead of writing over the rows README cites."""
    path = out_dir / f"{stem({'gpu': gpu, 'date': date})}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def markdown(result: dict) -> str:
    shape, runs = result["shape"], result["runs"]
    lines = [
        f"# LM training step: {result['gpu']}, {result['date']}",
        "",
        f"d {shape['d_model']}, {shape['n_layers']} layers, vocab {shape['vocab']} (tied), GLU {shape['glu']} SiLU, "
        f"B {shape['batch']} x T {shape['length']} random tokens, {result['setting']}. MFU = 6 N tokens/s over the "
        "bf16 matmul rate measured in the row's run; x Llama / x fla: against those peers in the same run.",
        "",
    ]
    for run, info in runs.items():
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
        rate = f"bf16 matmul {info['matmul_tflops']:.0f} TFLOP/s; " if info["matmul_tflops"] else ""
        lines.append(f"- run {run}: {rate}{versions}")
    lines += [
        "",
        "| row | run | params | tokens/s | x Llama | x fla | MFU | peak GiB | first step s | loss step 1 | what |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if "error" in row:
            error = row["error"][-300:].replace("|", "/")
            lines.append(f"| {row['row']} | {row['run'][11:16]} | | | | | | | | | error: {error} |")
            continue
        cells = [
            row["run"][11:16],
            f"{row['params'] / 1e6:.1f}M" if row["params"] >= 1e5 else str(row["params"]),
            f"{row['tokens_per_s'] / 1e3:.1f}k",
            *(_ratio(row, result["rows"], peer) for _, peer in PEER_COLUMNS),
            f"{row['mfu']:.1%}" if "mfu" in row else "-",
            f"{row['peak_gib']:.1f}" if row["peak_gib"] is not None else "-",
            f"{row['first_step_s']:.1f}",
            f"{row['loss_first']:.4f}",
            row["note"] + "".join(f" ({text})" for flag, text in ROW_FLAGS if flag(row)),
        ]
        lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    lines.append("")
    for row in result["rows"]:
        lines += _row_details(row)
    return "\n".join(lines) + "\n"


def _row_details(row: dict) -> list[str]:
    """Compilation, peak memory by phase and the profile of one row, where measured."""
    lines = []
    dynamo = row.get("dynamo", {})
    if dynamo.get("graphs"):
        reasons = f" ({'; '.join(dynamo['reasons'])})" if dynamo["reasons"] else ""
        lines.append(
            f"- {row['row']}: {dynamo['graphs']} compiled graphs, {dynamo['graph_breaks']} graph breaks{reasons}"
        )
    if row.get("peak_gib_by_phase"):
        lines.append(f"- {row['row']}: peak GiB by phase of one step: {_listed(row['peak_gib_by_phase'])}")
    if len(row.get("step_ms_each") or []) > 1:
        each = sorted(row["step_ms_each"])
        spread = f"min {each[0]:.1f}, median {statistics.median(each):.1f}, max {each[-1]:.1f}"
        lines.append(f"- {row['row']}: the {len(each)} timed steps, ms each: {spread}; in order {row['step_ms_each']}")
    if row.get("first_step_s_by_phase"):
        lines.append(f"- {row['row']}: first step, seconds by phase: {_listed(row['first_step_s_by_phase'])}")
    compiled = row.get("first_step_compile_s") or {}
    if compiled.get("triton_jit") or compiled.get("torch_compile"):
        jit = compiled.get("triton_jit")
        if jit is None:
            triton = "Triton JIT not measured (no compile listener in this Triton)"
        else:
            kernels = _listed(dict(list(jit.items())[:4])) or "none compiled"
            more = f", {len(jit) - 4} more" if len(jit) > 4 else ""
            triton = f"Triton JIT in the process, summed over kernels {sum(jit.values()):.1f} ({kernels}{more})"
        phases = _listed(compiled.get("torch_compile", {})) or "-"
        lines.append(f"- {row['row']}: first step's compilation, seconds: {triton}; torch.compile phases: {phases}")
    if compiled.get("by_thread"):
        lines.append(f"- {row['row']}: Triton JIT seconds by thread: {_listed(compiled['by_thread'])}")
    if "pool_ready_s" in compiled:
        ready = compiled["pool_ready_s"]
        when = "not within the step" if ready is None else f"{ready:.1f} s into the step"
        lines.append(f"- {row['row']}: Inductor's compile workers answered {when}")
    if compiled.get("at_launch"):
        kernels = _listed(compiled["at_launch"])
        lines.append(f"- {row['row']}: compiled at their launch, not ahead (the launch waited), seconds: {kernels}")
    for name, difference in (compiled.get("differs") or {}).items():
        lines.append(f"- {row['row']}: {name} compiled both ways; specialised differently: {difference}")
    if "profile" in row:
        heading = f"## Where the time goes: {row['row']} (run {row['run']}, {row['step_s'] * 1e3:.1f} ms per step)"
        lines += ["", heading, "", row["profile"], ""]
    return lines


def _listed(values: dict[str, float]) -> str:
    """{"name": 1.234, ...} -> "name 1.2, ..." (seconds or GiB, in the dict's order)."""
    return ", ".join(f"{name} {value:.1f}" for name, value in values.items())


def _ratio(row: dict, rows: list[dict], peer: str) -> str:
    base = next((r for r in rows if r["row"] == peer and r["run"] == row["run"] and "tokens_per_s" in r), None)
    return f"{row['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else "-"


def write(result: dict, out_dir: Path) -> list[Path]:
    """<stem>.json and <stem>.md under out_dir."""
    return write_json_and_markdown(result, markdown(result), out_dir / stem(result))


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None
