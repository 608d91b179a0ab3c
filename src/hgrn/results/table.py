"""A results table as data: lines of cells, each measured from runs (chosen by hgrn.results.select) or published
(results/paper/), and the runs that did not make it into a cell. Rendering is hgrn.results.render's.

A table is declared by a `Spec`: its lines (labels, then per column a `Measure` to fill from runs, a `Published`
number or None where the column does not apply) and which records feed it. `build` fills it from the runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hgrn.results.collect import TRAINING, Run, Skipped, config_value
from hgrn.results.identity import deviations, follows_recipe
from hgrn.results.select import Choice, choose, summarize

NO_RUN = "no run"
NOT_REPORTED = "-"
SWEEP_MARK = "†"


@dataclass(frozen=True)
class Measure:
    """A cell filled from the finished runs of `experiment`: their `metric`.

    A paper table takes the runs that followed the recipe. A study takes more: `allowed` names the override keys
    its runs may change beyond the recipe (hgrn.results.identity.deviations), and `config` the resolved values
    (dotted key, value) that pick this cell's runs among them. E.g. the expand-ratio ablation's cell for ratio 8:
    Measure("lm/wikitext103/hgrn2", "test/ppl", ("model.mixer_options.expand_ratio",),
    (("model.mixer_options.expand_ratio", 8),)); an MQAR cell allows model.d_model and data.seq_len /
    num_kv_pairs / batch_size and picks one (d_model, seq_len, kv pairs); its lr sweep is a tunable sweep already.
    """

    experiment: str
    metric: str
    allowed: tuple[str, ...] = ()
    config: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Published:
    """A cell holding a published number (None: the paper reports none)."""

    value: float | None


@dataclass(frozen=True)
class Line:
    labels: tuple[str, ...]
    cells: tuple[Measure | Published | None, ...]
    average: bool = False  # append the mean of the cells (measured lines) or `published_average` (paper lines)
    published_average: float | None = None


@dataclass(frozen=True)
class Spec:
    """name: the file stem under results/tables/; records: which records feed the measures ("training", or an
    evaluation's name: perplexity, lm-eval, ...); paper_file: where the published numbers come from; scale: from a
    metric to the number shown (100 for accuracies in %); notes: what the reader must know, under the table;
    alternative: the CSV column that gives, beside each measured cell, the same metric for the last weights."""

    name: str
    title: str
    label_header: tuple[str, ...]
    columns: tuple[str, ...]
    lines: tuple[Line, ...]
    records: str
    paper_file: str
    scale: float = 1.0
    digits: int = 2
    notes: tuple[str, ...] = ()
    alternative: str | None = None


@dataclass(frozen=True)
class Cell:
    value: float | None = None
    std: float | None = None
    runs: tuple[Path, ...] = ()
    alternative: float | None = None
    setting: tuple[str, ...] = ()
    swept: bool = False  # best of several optimiser settings
    empty: str = NOT_REPORTED  # the text when there is no value
    published: bool = False


@dataclass(frozen=True)
class Other:
    """A run of the table's experiments that no cell shows, and why."""

    run: Run
    values: tuple[tuple[str, float], ...]  # (column, number shown) for the columns its experiment measures
    reason: str


@dataclass
class Table:
    spec: Spec
    rows: list[tuple[tuple[str, ...], tuple[Cell, ...]]] = field(default_factory=list)
    others: list[Other] = field(default_factory=list)

    @property
    def averaged(self) -> bool:
        return any(line.average for line in self.spec.lines)

    @property
    def header(self) -> tuple[str, ...]:
        return (*self.spec.label_header, *self.spec.columns, *(("avg",) if self.averaged else ()))


def build(spec: Spec, runs: Sequence[Run]) -> tuple[Table, list[Skipped]]:
    """Fill the spec from the runs; runs of its experiments that lack one of its metrics are skipped."""
    measures = [cell for line in spec.lines for cell in line.cells if isinstance(cell, Measure)]
    wanted = {m.experiment: [x.metric for x in measures if x.experiment == m.experiment] for m in measures}
    relevant, skipped = [], []
    for run in runs:
        if run.source != spec.records or run.experiment not in wanted:
            continue
        missing = [metric for metric in wanted[run.experiment] if metric not in run.metrics]
        if missing:
            skipped.append(Skipped(run.path, f"no metric {missing[0]!r}, which the {spec.name} table shows"))
        else:
            relevant.append(run)
    candidates = {m: [r for r in relevant if _qualifies(r, m)] for m in measures}
    choices = {m: choose(runs) for m, runs in candidates.items()}
    table = Table(spec)
    for line in spec.lines:
        cells = tuple(_cell(spec, cell, choices) for cell in line.cells)
        if table.averaged:
            cells += (_average(line, cells) if line.average else Cell(),)
        table.rows.append((line.labels, cells))
    shown = {run.path for choice in choices.values() if choice for run in choice.runs}
    qualified = {run.path for runs in candidates.values() for run in runs}
    for run in sorted(relevant, key=lambda r: (r.experiment, str(r.path))):
        if run.path not in shown:
            values = tuple((column, spec.scale * run.metrics[metric]) for column, metric in _columns_of(spec, run))
            table.others.append(Other(run, values, _reason(run, run.path in qualified, _kept(run, measures))))
    return table, skipped


def _keeps(run: Run, measure: Measure) -> bool:
    """Whether the run's overrides are ones the measure accepts: the recipe's, or a study's keys besides."""
    return follows_recipe(run.overrides, measure.allowed) if measure.allowed else run.recipe


def _kept(run: Run, measures: Sequence[Measure]) -> bool:
    return any(_keeps(run, m) for m in measures if m.experiment == run.experiment)


def _qualifies(run: Run, measure: Measure) -> bool:
    if run.experiment != measure.experiment or not run.finished:
        return False
    return _keeps(run, measure) and all(config_value(run.config, key) == value for key, value in measure.config)


def _cell(spec: Spec, cell: Measure | Published | None, choices: dict[Measure, Choice | None]) -> Cell:
    if cell is None:
        return Cell()
    if isinstance(cell, Published):
        return Cell(value=cell.value, published=True)
    choice = choices[cell]
    if choice is None:
        return Cell(empty=NO_RUN)
    summary = summarize([spec.scale * v for v in choice.values(cell.metric)])
    return Cell(
        value=summary.mean,
        std=summary.std,
        runs=tuple(run.path for run in choice.runs),
        alternative=_alternative(spec, choice, cell.metric),
        setting=choice.setting,
        swept=choice.settings > 1,
    )


def _alternative(spec: Spec, choice: Choice, metric: str) -> float | None:
    if spec.alternative is None or not all(metric in run.metrics_last for run in choice.runs):
        return None
    return spec.scale * statistics.fmean(choice.values(metric, last_weights=True))


def _average(line: Line, cells: tuple[Cell, ...]) -> Cell:
    if all(isinstance(cell, Published) for cell in line.cells if cell is not None):
        return Cell(value=line.published_average, published=True)
    values = [cell.value for cell in cells if cell.value is not None]
    return Cell(value=statistics.fmean(values)) if len(values) == len(cells) else Cell()


def _columns_of(spec: Spec, run: Run) -> list[tuple[str, str]]:
    """(label, metric) for each metric the run's experiment shows: the column's name, with the metric where the column
    shows several; the metric alone where a study spreads it over several columns (MQAR: one per d_model)."""
    columns: dict[str, list[str]] = {}
    for line in spec.lines:
        for column, cell in zip(spec.columns, line.cells, strict=False):
            if isinstance(cell, Measure) and cell.experiment == run.experiment:
                shown = columns.setdefault(cell.metric, [])
                if column not in shown:
                    shown.append(column)
    found = []
    for metric, shown in columns.items():
        if len(shown) > 1:
            found.append((metric, metric))
        else:
            found.append((f"{shown[0]} ({metric})" if _ambiguous(spec, shown[0]) else shown[0], metric))
    return found


def _ambiguous(spec: Spec, column: str) -> bool:
    """Whether a column is filled from more than one metric (e.g. acc and acc_norm lines)."""
    index = spec.columns.index(column)
    metrics = {line.cells[index].metric for line in spec.lines if isinstance(line.cells[index], Measure)}
    return len(metrics) > 1


def _reason(run: Run, qualified: bool, kept: bool) -> str:
    """Why a run is in no cell: another run of its cell was chosen, or every reason it cannot be in one (`kept`: its
    overrides are ones a cell of its experiment accepts)."""
    if qualified:
        return f"not chosen: another run of its cell had a better {run.monitor}"
    reasons = []
    if run.overrides is None:
        reasons.append("overrides not recorded" if run.source == TRAINING else "no training record with its overrides")
    elif not kept and (not run.drift or deviations(run.overrides)):
        reasons.append("overrides change the model, data or budget")
    if run.drift:
        reasons.append(f"trained before the recipe changed {'; '.join(run.drift)}")
    if not run.finished:
        reasons.append(f"did not finish its budget ({run.progress})")
    return "; ".join(reasons) or "no cell of this table takes its settings"
