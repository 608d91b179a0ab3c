"""What the notebooks read, and nothing else: a table's cells as records (the same selection as `make tables`), the
learning curves of training runs, and the rows of the committed kernel benchmarks (results/bench/*.json).

    from hgrn.results.access import table_records, kernel_benchmark
    rows = table_records("ablation")   # one dict per cell: the line's labels, column, value, std, seeds, records
    path, rows = kernel_benchmark()    # the newest kernel benchmark: one dict per (implementation, shape, mode)
    path, rows = expand_ratio_benchmark()  # the newest expand-ratio sweep: one dict per (case, expand ratio)
    curves = learning_curves("lra/")   # every LRA training run, finished or not, with its learning curve

Records are searched under HGRN_RUNS (folders separated by os.pathsep) or, by default, outputs/ and results/runs/ of
the repository, as `make tables` does; the notebooks save their figures under `plots_dir()`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hgrn.results.collect import TRAINING, Run, collect, config_value
from hgrn.results.schema import load_record
from hgrn.results.table import Measure, Table, build
from hgrn.results.tables import DEFAULT_RUNS, REPO, SPECS, load_paper

BENCH_DIR = REPO / "results" / "bench"
KERNEL_ROW_KEYS = ("impl", "group", "op", "mode", "shape_dims", "ms")


def run_roots() -> list[Path]:
    """The folders searched for records: HGRN_RUNS (os.pathsep-separated) or the repository's outputs/ and
    results/runs/."""
    given = os.environ.get("HGRN_RUNS")
    if given:
        return [Path(root) for root in given.split(os.pathsep) if root]
    return [REPO / root for root in DEFAULT_RUNS]


def plots_dir() -> Path:
    """Where the notebooks save their PNGs: HGRN_PLOTS or the repository's results/plots/ (created)."""
    folder = Path(os.environ.get("HGRN_PLOTS") or REPO / "results" / "plots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load_table(name: str, roots: Iterable[Path | str] | None = None) -> Table:
    """The table `name` (one of hgrn.results.tables.SPECS) built from the records under `roots` (default:
    `run_roots()`); unusable records are left out, as `make tables` leaves them out."""
    if name not in SPECS:
        raise ValueError(f"no table {name!r}; the tables are {' '.join(SPECS)}")
    runs, _ = collect(run_roots() if roots is None else roots)
    table, _ = build(SPECS[name](load_paper(name)), runs)
    return table


def table_records(name: str, roots: Iterable[Path | str] | None = None) -> list[dict[str, Any]]:
    """One dict per cell of the table, in the table's order: its line's labels (keyed by the label header), `column`,
    `value` (None: no run, or not reported), `std` (None for one seed), `seeds` (runs averaged), `published` (a paper
    number), `empty` (the text shown without a value), `setting` (the chosen sweep point), `records` (paths) and
    `config` (the dotted keys and values that pick a measured cell's runs, e.g. {"model.d_model": 64})."""
    table = load_table(name, roots)
    spec, columns = table.spec, table.header[len(table.spec.label_header) :]
    out = []
    for (labels, cells), line in zip(table.rows, spec.lines, strict=True):
        sources = (*line.cells, *(None,) * (len(cells) - len(line.cells)))  # the average column has no source
        for column, cell, source in zip(columns, cells, sources, strict=True):
            out.append(
                {
                    **dict(zip(spec.label_header, labels, strict=True)),
                    "column": column,
                    "value": cell.value,
                    "std": cell.std,
                    "seeds": len(cell.runs),
                    "published": cell.published,
                    "empty": cell.empty,
                    "setting": " ".join(cell.setting),
                    "records": [str(path) for path in cell.runs],
                    "config": dict(source.config) if isinstance(source, Measure) else {},
                }
            )
    return out


def learning_curves(prefix: str, roots: Iterable[Path | str] | None = None) -> list[dict[str, Any]]:
    """Every training run under `roots` (default: `run_roots()`) whose experiment starts with `prefix`, finished or
    not and whatever its overrides (a curve shows how far a run got): experiment, path, finished, recipe, progress
    ("36,465 of 37,500 steps"), direction (the model's scan direction, which LRA's runs compare), config (the run's
    resolved config, nested) and history (results.json's learning curve), in experiment and path order."""
    runs, _ = collect(run_roots() if roots is None else roots)
    chosen = sorted((r for r in runs if r.source == TRAINING and r.experiment.startswith(prefix)), key=_by_path)
    fields = ("experiment", "path", "finished", "recipe", "progress")
    return [
        {
            **{f: getattr(r, f) for f in fields},
            "direction": config_value(r.config, "model.direction"),
            "config": r.config,
            "history": load_record(r.path).history,
        }
        for r in chosen
    ]


def _by_path(run: Run) -> tuple[str, str]:
    return run.experiment, str(run.path)


def kernel_benchmark(folder: Path | str | None = None) -> tuple[Path, list[dict[str, Any]]] | None:
    """The newest kernel benchmark under `folder` (default results/bench/; newest by its `date`, then file name) and
    its timing rows, each flattened to impl, group, op, mode, B, T, H, D, ms, peak_mib, gpu, date. None when there
    is none. Files of other benchmarks (LM step, LRA steps) and rows without a shape or a time are skipped."""
    newest = _newest(folder, "*.json", lambda rows: any(_is_kernel_row(row) for row in rows))
    if newest is None:
        return None
    path, data = newest
    rows = [
        {
            **{key: row[key] for key in ("impl", "group", "op", "mode")},
            **{axis: row["shape_dims"].get(axis) for axis in ("B", "T", "H", "D")},
            "ms": float(row["ms"]),
            "peak_mib": row.get("peak_mib"),
            "gpu": data.get("gpu"),
            "date": data.get("date"),
        }
        for row in data["rows"]
        if _is_kernel_row(row)
    ]
    return path, rows


def _is_kernel_row(row: Any) -> bool:
    return (
        isinstance(row, dict)
        and all(key in row for key in KERNEL_ROW_KEYS)
        and isinstance(row["shape_dims"], dict)
        and isinstance(row["ms"], int | float)
    )


def expand_ratio_benchmark(folder: Path | str | None = None) -> tuple[Path, list[dict[str, Any]]] | None:
    """The newest expand-ratio sweep (`python -m hgrn.bench.expand_ratio`: results/bench/expand-ratio-*.json) and its
    rows: case, ratio (None for the HGRN1 scan), fwd_ms, fwd_bwd_ms, with the file's gpu and date. None when there is
    none; unreadable files are skipped."""
    newest = _newest(folder, "expand-ratio-*.json", lambda rows: True)
    if newest is None:
        return None
    path, data = newest
    keys = ("case", "ratio", "fwd_ms", "fwd_bwd_ms")
    rows = [
        {**{key: row[key] for key in keys}, "gpu": data.get("device"), "date": data.get("date")}
        for row in data["rows"]
        if isinstance(row, dict) and all(key in row for key in keys)
    ]
    return path, rows


def _newest(
    folder: Path | str | None, pattern: str, wanted: Callable[[list], bool]
) -> tuple[Path, dict[str, Any]] | None:
    """The benchmark JSON under `folder` (default results/bench/) matching `pattern` whose `rows` list `wanted`
    accepts, newest by its `date`, then its run of that day (`<...>-<date>-2` after `<...>-<date>`:
    hgrn.bench.report.write_dated), then file name; unreadable files are skipped."""
    found = []
    for path in sorted(Path(BENCH_DIR if folder is None else folder).glob(pattern)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rows = data.get("rows") if isinstance(data, dict) else None
        if isinstance(rows, list) and wanted(rows):
            run = re.search(r"\d{4}-\d\d-\d\d-(\d+)$", path.stem)
            found.append((str(data.get("date", "")), int(run[1]) if run else 1, path.name, path, data))
    if not found:
        return None
    *_, path, data = max(found, key=lambda entry: entry[:3])
    return path, data
