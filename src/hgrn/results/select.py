"""Which runs a table cell shows: the rule the README states, in one place.

Given the candidate runs of one cell (a paper table: the experiment's runs that followed the recipe and finished):
1. runs that differ only in tunable optimiser overrides (hgrn.results.identity.tuned) are one sweep; each setting
   is one group;
2. within a setting, one run per seed: the best by the validation monitor (then the most recent);
3. the setting whose seeds have the best mean validation monitor is shown: the mean ± sample std of the metric over
   its seeds (no std for one seed).
Everything else goes to the table's "other runs".
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from hgrn.results.collect import Run
from hgrn.results.identity import tuned


@dataclass(frozen=True)
class Choice:
    """The runs a cell shows (one per seed) and what the sweep looked like."""

    runs: tuple[Run, ...]
    setting: tuple[str, ...]  # the tunable overrides of the chosen setting
    settings: int  # how many settings the sweep compared

    def values(self, metric: str, last_weights: bool = False) -> list[float]:
        return [(run.metrics_last if last_weights else run.metrics)[metric] for run in self.runs]


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float | None  # sample standard deviation over seeds; None for one seed


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample std of at least one value."""
    return Summary(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


def _rank(best: float | None, mode: str) -> tuple[bool, float]:
    """Sorts best first: no monitor value last, then by value in the monitor's direction."""
    if best is None:
        return True, 0.0
    return False, -best if mode == "max" else best


def _setting_rank(runs: Sequence[Run]) -> tuple[bool, float]:
    known = [run.best for run in runs if run.best is not None]
    return _rank(statistics.fmean(known) if known else None, runs[0].monitor_mode)


def choose(candidates: Sequence[Run]) -> Choice | None:
    """Apply the rule to the candidates of one cell (already filtered); None when there are none."""
    by_setting: dict[tuple[str, ...], list[Run]] = defaultdict(list)
    for run in candidates:
        by_setting[tuned(run.overrides or ())].append(run)
    if not by_setting:
        return None
    per_setting = {setting: _one_per_seed(runs) for setting, runs in by_setting.items()}
    setting = min(per_setting, key=lambda s: (_setting_rank(per_setting[s]), s))
    return Choice(runs=tuple(per_setting[setting]), setting=setting, settings=len(per_setting))


def _one_per_seed(runs: Sequence[Run]) -> list[Run]:
    by_seed: dict[int | None, list[Run]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: (r.finished_at, str(r.path)), reverse=True):  # the latest wins a tie
        by_seed[run.seed].append(run)
    best = [min(group, key=lambda r: _rank(r.best, r.monitor_mode)) for group in by_seed.values()]
    return sorted(best, key=lambda r: str(r.path))
