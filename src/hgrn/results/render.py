"""A Table as Markdown (cells linked to their records, the other runs below), LaTeX (booktabs, for \\input) and CSV
(one line per number, with its spread, the chosen sweep setting and the records it comes from).

Links and record paths are relative to `base`, the folder the files are written to, so the committed tables link
into results/runs/ wherever the repository is checked out.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from hgrn.results.identity import shown_overrides
from hgrn.results.table import SWEEP_MARK, Cell, Other, Table

LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def number(cell: Cell, digits: int) -> str:
    """The cell's number as shown: value, ± std over seeds, † when it is the best of a sweep."""
    if cell.value is None:
        return cell.empty
    text = f"{cell.value:.{digits}f}"
    if cell.std is not None:
        text += f" ± {cell.std:.{digits}f}"
    return text + (SWEEP_MARK if cell.swept else "")


def _markdown_cell(cell: Cell, digits: int, base: Path) -> str:
    text = number(cell, digits)
    links = [_relative(path, base) for path in cell.runs]
    if len(links) == 1:
        return f"[{text}]({links[0]})"
    if links:
        return f"{text} (" + ", ".join(f"[{i}]({link})" for i, link in enumerate(links, 1)) + ")"
    return text


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def markdown(table: Table, base: Path) -> str:
    spec = table.spec
    lines = [f"# {spec.title}", "", _markdown_row(list(table.header)), "|" + "---|" * len(table.header)]
    for labels, cells in table.rows:
        lines.append(_markdown_row([*labels, *(_markdown_cell(c, spec.digits, base) for c in cells)]))
    lines += ["", *(f"{note}\n" for note in spec.notes)]
    lines += ["## Other runs", "", *_other_runs(table, base)]
    return "\n".join(lines).rstrip("\n") + "\n"


def _other_runs(table: Table, base: Path) -> list[str]:
    if not table.others:
        return ["None."]
    header = ["experiment", "seed", "overrides", "progress", "numbers", "why not above", "record"]
    rows = [_markdown_row(header), "|" + "---|" * len(header)]
    for other in table.others:
        rows.append(_markdown_row(_other_cells(other, table.spec.digits, base)))
    return rows


def _other_cells(other: Other, digits: int, base: Path) -> list[str]:
    run = other.run
    shown = " ".join(f"`{o}`" for o in shown_overrides(run.overrides))
    overrides = "not recorded" if run.overrides is None else shown
    numbers = ", ".join(f"{column} {value:.{digits}f}" for column, value in other.values)
    record = _relative(run.path, base)
    seed = "" if run.seed is None else str(run.seed)
    return [run.experiment, seed, overrides, run.progress, numbers, other.reason, f"[{record}]({record})"]


def latex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); notes as comments above it."""
    spec = table.spec
    columns = "l" * len(spec.label_header) + "r" * (len(table.header) - len(spec.label_header))
    lines = [f"% {spec.title} (python -m hgrn.results.tables; do not edit)", *(f"% {note}" for note in spec.notes)]
    lines += [f"\\begin{{tabular}}{{{columns}}}", r"\toprule", " & ".join(_escape(h) for h in table.header) + r" \\"]
    lines.append(r"\midrule")
    for labels, cells in table.rows:
        texts = [_escape(label) for label in labels]
        texts += [_escape(number(cell, spec.digits)) for cell in cells]
        lines.append(" & ".join(texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    escaped = "".join(LATEX_SPECIAL.get(char, char) for char in text)
    return escaped.replace(SWEEP_MARK, r"$^\dagger$").replace("±", r"$\pm$")


def csv_text(table: Table, base: Path) -> str:
    """One line per number: the line's labels, the column, value, std, seeds, the last weights' value where the
    table has one, the chosen optimiser setting, and the records (or the paper file) it comes from."""
    spec = table.spec
    alternative = (spec.alternative,) if spec.alternative else ()
    header = [*spec.label_header, "column", "value", "std", "seeds", *alternative, "setting", "records"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for labels, cells in table.rows:
        for column, cell in zip(table.header[len(labels) :], cells, strict=True):
            fields = _csv_fields(cell, spec.digits, bool(alternative), spec.paper_file, base)
            writer.writerow([*labels, column, *fields])
    return out.getvalue()


def _csv_fields(cell: Cell, digits: int, alternative: bool, paper_file: str, base: Path) -> list[str]:
    def fmt(value: float | None) -> str:
        return "" if value is None else f"{value:.{digits + 2}f}"

    if cell.published:
        records = paper_file if cell.value is not None else ""
    else:
        records = ";".join(_relative(path, base) for path in cell.runs)
    fields = [fmt(cell.value), fmt(cell.std), str(len(cell.runs)) if cell.runs else ""]
    if alternative:
        fields.append(fmt(cell.alternative))
    return [*fields, " ".join(cell.setting), records]
