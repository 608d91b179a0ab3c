"""Tables rendered only from results.json files, next to the published numbers in results/paper/.

python -m hgrn.results.tables lra [--runs outputs results/runs] [--out results/tables]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import yaml

from hgrn.results.schema import RunResult, load_results

PAPER_DIR = Path(__file__).resolve().parents[3] / "results" / "paper"


def collect(roots: Iterable[Path | str]) -> dict[str, RunResult]:
    """The most recent completed run of each experiment found under the roots (invalid files are skipped loudly)."""
    latest: dict[str, RunResult] = {}
    for root in roots:
        for path in sorted(Path(root).rglob("results.json")):
            try:
                result = load_results(path)
            except ValueError as error:
                print(f"skipping {path}: {error}")
                continue
            known = latest.get(result.experiment)
            if known is None or result.finished_at > known.finished_at:
                latest[result.experiment] = result
    return latest


def lra_table(runs: dict[str, RunResult], paper: dict) -> tuple[str, list[list[str]]]:
    """Markdown with one 'ours' and one 'paper' row per model, and the same rows as CSV cells. A run that stopped
    before its recipe's last epoch (e.g. a time-limited run) is marked with '*' and left out of the average."""
    tasks = paper["tasks"]
    header = ["model", "source", *tasks, "avg"]
    rows = []
    for model, entries in paper["models"].items():
        ours: list[object] = []
        for task in tasks:
            run = runs.get(entries[task]["experiment"])
            ours.append(None if run is None else _accuracy(run, paper["metric"]))
        complete = all(isinstance(v, float) for v in ours)
        ours_avg = sum(ours) / len(ours) if complete else None
        rows.append([model, "ours", *ours, ours_avg])
        rows.append([model, "paper", *(entries[t]["paper"] for t in tasks), entries["avg"]])
    cells = [[_cell(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n", [header, *cells]


def _accuracy(run: RunResult, metric: str) -> float | str:
    value = 100 * run.metrics[metric]
    planned = run.config.get("trainer", {}).get("max_epochs")
    return f"{value:.2f}*" if planned and run.epochs < planned else value


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render a benchmark table from results.json files.")
    parser.add_argument("table", choices=["lra"])
    parser.add_argument("--runs", nargs="+", help="folders searched for runs (default: outputs results/runs)")
    parser.add_argument("--out", type=Path, default=Path("results/tables"))
    args = parser.parse_args(argv)
    missing = [root for root in args.runs or () if not Path(root).is_dir()]
    if missing:
        parser.error(f"--runs {' '.join(missing)}: no such folder (give the folders that hold the runs' results.json)")
    args.runs = args.runs or ["outputs", "results/runs"]  # either may be absent in a fresh clone
    paper = yaml.safe_load((PAPER_DIR / f"{args.table}.yaml").read_text())
    markdown, cells = lra_table(collect(args.runs), paper)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.table}.csv").write_text("\n".join(",".join(row) for row in cells) + "\n")
    note = "\n\\* stopped before the recipe's last epoch (partial run); not averaged.\n"
    (args.out / f"{args.table}.md").write_text(markdown + note)
    print(markdown)
    print(f"written to {args.out / args.table}.{{md,csv}}")


if __name__ == "__main__":
    main()
