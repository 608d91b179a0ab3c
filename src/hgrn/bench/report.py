"""Benchmark results: one JSON per run (results/bench/<gpu>-<date>.json), a Markdown table and a time-vs-T plot."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from pathlib import Path

from hgrn.io import atomic_writes
from hgrn.results.environment import git_state, hardware, package_versions

BASELINES = ("fla chunk_gla", "fla fused_recurrent_hgrn", "fla HGRN2Attention", "fla HGRNAttention")
OURS = ("ours", "ours HGRN2Mixer", "ours HGRN1Mixer (real)", "ours HGRN1Mixer")  # first present is compared


def stem(result: dict) -> str:
    gpu = re.sub(r"[^a-z0-9]+", "-", result["gpu"].lower()).strip("-")
    return f"{gpu}-{result['date']}"


def _key(row: dict) -> tuple:
    return row["group"], row["shape"]


def speedups(result: dict) -> dict[tuple, dict[str, float]]:
    """fla time / our time per (op, shape, mode), against the first fla baseline measured there."""
    table: dict[tuple, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in result["rows"]:
        if row.get("ms") is not None:
            table[_key(row)][row["impl"]][row["mode"]] = row["ms"]
    out = {}
    for key, impls in table.items():
        ours = next((impls[o] for o in OURS if o in impls), None)
        base = next((impls[b] for b in BASELINES if b in impls), None)
        if ours and base:
            out[key] = {m: base[m] / ours[m] for m in ours if m in base}
    return out


def markdown(result: dict) -> str:
    """One table per (op, shape): each implementation's times, peak memory, first call and share of the floor."""
    ceilings = result["ceilings"]
    lines = [
        f"# Kernel benchmark: {result['gpu']}, {result['date']}",
        "",
        f"torch {result['versions']['torch']}, triton {result['versions']['triton']}, "
        f"fla {result['versions'].get('fla') or 'not installed'}. Median of triton.testing.do_bench (L2 flushed before "
        "each call, Python launch included); CUDA graph: median of triton.testing.do_bench_cudagraph (GPU time of "
        "back-to-back calls; '-' where not measured or not capturable). Ceilings "
        f"measured in this run: copy {ceilings['copy_tbs']:.2f} TB/s (read + write), bf16 matmul "
        f"{ceilings['matmul_tflops']:.0f} TFLOP/s. Floor = max(compulsory bytes / copy, useful FLOPs / matmul).",
        "",
    ]
    ratio = speedups(result)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in result["rows"]:
        groups[_key(row)].append(row)
    for (op, shape), rows in groups.items():
        gain = ratio.get((op, shape), {})
        vs = ", ".join(f"{m} {v:.2f}x" for m, v in gain.items())
        dates = sorted({row["run"][:10] for row in rows if "run" in row})
        parts = [f"ours vs fla: {vs}"] if vs else []
        if len(result.get("runs", {})) > 1 and dates:  # merged runs: say when this group was measured
            parts.append(f"measured {', '.join(dates)}")
        lines += [f"## {op} {shape}" + (f" ({', '.join(parts)})" if parts else ""), ""]
        lines += [
            "| implementation | fwd ms | fwd+bwd ms | peak MiB (fwd+bwd) | first call s | fwd TB/s | floor/fwd time "
            "| CUDA graph ms fwd / fwd+bwd | fwd TB/s (graph) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        by_impl: dict[str, dict[str, dict]] = defaultdict(dict)
        for row in rows:
            by_impl[row["impl"]][row["mode"]] = row
        for impl, modes in by_impl.items():
            fwd, both = modes.get("fwd", {}), modes.get("fwd+bwd", {})
            cells = [
                _fmt(fwd.get("ms"), 3),
                _fmt(both.get("ms"), 3),
                _fmt(both.get("peak_mib", fwd.get("peak_mib")), 0),
                _fmt(fwd.get("first_call_s"), 1) + " / " + _fmt(both.get("first_call_s"), 1),
                _fmt(fwd.get("tbs"), 2),
                _fmt(fwd["floor_ms"] / fwd["ms"] * 100 if fwd.get("ms") and fwd.get("floor_ms") else None, 0) + "%",
                _fmt(fwd.get("graph_ms"), 3) + " / " + _fmt(both.get("graph_ms"), 3),
                _fmt(fwd.get("graph_tbs"), 2),
            ]
            lines.append(f"| {impl} | " + " | ".join(cells) + " |")
        lines.append("")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def plot(result: dict, path: Path) -> bool:
    """Time vs T at fixed B*T for the HGRN2 op (fwd+bwd), one line per implementation; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, op in zip(axes, ("hgrn2", "hgrn1"), strict=True):
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for row in result["rows"]:
            if (
                row["group"] == op
                and row["mode"] == "fwd+bwd"
                and row.get("ms")
                and row["shape_dims"]["D"] in (128, 2048)
            ):
                series[row["impl"]].append((row["shape_dims"]["T"], row["ms"] / row["shape_dims"]["B"]))
        for impl, points in sorted(series.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=impl)
        ax.set(
            xscale="log", yscale="log", xlabel="T", ylabel="fwd+bwd ms per sequence", title=f"{op} ({result['gpu']})"
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_json_and_markdown(result: dict, text: str, base: Path) -> list[Path]:
    """<base>.json (the result) and <base>.md (its rendering `text`), written together; what every benchmark commits
    under results/bench/."""
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".json"), base.with_suffix(".md")]
    with atomic_writes(paths) as (json_file, markdown_file):
        json_file.write(json.dumps(result, indent=1) + "\n")
        markdown_file.write(text)
    return paths


def dated_record(benchmark: str, command: str, **fields: object) -> dict:
    """A single-table benchmark's result: its name, command, this machine's device and today's date, `fields`, then
    the hardware, package versions and git state of the run (what `write_dated` names the files by and records)."""
    info = hardware()
    return {
        "benchmark": benchmark,
        "command": command,
        "device": info.get("device", "cpu"),
        "date": dt.date.today().isoformat(),
        **fields,
        "hardware": info,
        "versions": package_versions(),
        "git": git_state(Path(__file__).parent),
    }


def dated_base(result: dict, out_dir: Path, name: str) -> Path:
    """out_dir/<name>-<device>-<date> (the result's device and date), the files' path without its suffix."""
    return out_dir / f"{name}-{result['device'].lower().replace(' ', '-')}-{result['date']}"


def write_dated(result: dict, text: str, out_dir: Path, name: str, replace: bool = False) -> None:
    """write_json_and_markdown under out_dir as <name>-<device>-<date> (the result's device and date), printing the
    paths: the single-table benchmarks' output. A second run of the day goes to <...>-<date>-2 (then -3, ...): the
    first's files stay, since README and NOTES cite them; `replace` (a benchmark that merged the day's rows into
    `result` itself) writes over them."""
    base = dated_base(result, out_dir, name)
    first, run = base.name, 1
    while not replace and base.with_suffix(".json").exists():
        run += 1
        base = base.with_name(f"{first}-{run}")
    for path in write_json_and_markdown(result, text, base):
        print(f"wrote {path}")


def write(result: dict, out_dir: Path) -> list[Path]:
    """Write <stem>.json, <stem>.md and (with matplotlib) <stem>.png under out_dir; return the paths."""
    base = out_dir / stem(result)
    paths = write_json_and_markdown(result, markdown(result), base)
    if plot(result, base.with_suffix(".png")):
        paths.append(base.with_suffix(".png"))
    return paths
