"""Finding the records under some folders and reading them as `Run`s, the one view every table selects from.

A file that cannot be used (unreadable, not JSON, truncated, a wrong type, a missing key, a non-finite metric, an
unknown schema version) is reported with its path and skipped; it never stops the other tables and never reaches one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hgrn.config import ConfigError, compose
from hgrn.results.evaluation import EVALUATION_FILE
from hgrn.results.identity import deviations, override_key
from hgrn.results.schema import EvaluationRecord, Record, TrainingRecord, load_record

RECORD_FILES = ("results.json", EVALUATION_FILE)
TRAINING = "training"


@dataclass(frozen=True)
class Skipped:
    """A record file left out, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"skipped {self.path}: {self.reason}"


@dataclass(frozen=True)
class Run:
    """A record as the tables see it: the numbers and the identity of the training run that produced them.

    source: "training" for a training record, else the evaluation's name (perplexity, lm-eval, ...).
    For an evaluation, overrides, seed, finished and best are those of the evaluated run (its `trained` entry), and
    `recipe` holds only when both the evaluation and that run kept their recipes.
    """

    path: Path
    source: str
    experiment: str
    overrides: tuple[str, ...] | None
    seed: int | None
    recipe: bool
    finished: bool
    progress: str  # how far training got, for the reader of the "other runs" table
    monitor: str
    monitor_mode: str
    best: float | None
    metrics: Mapping[str, float]
    metrics_last: Mapping[str, float]
    config: Mapping[str, Any]
    finished_at: str
    drift: tuple[str, ...] = ()  # model settings in which it differs from today's recipe (recipe_now)


def run_of(path: Path, record: Record) -> Run:
    if isinstance(record, TrainingRecord):
        planned = f" of {record.planned_steps:,}" if record.planned_steps is not None else ""
        recipe, drift = recipe_now(record)
        return Run(
            path=path,
            source=TRAINING,
            experiment=record.experiment,
            overrides=None if record.overrides is None else tuple(record.overrides),
            seed=record.seed,
            recipe=recipe,
            finished=record.finished,
            progress=f"{record.steps:,}{planned} steps",
            monitor=record.monitor,
            monitor_mode=record.monitor_mode,
            best=record.best(),
            metrics=record.metrics,
            metrics_last=record.metrics_last,
            config=record.config,
            finished_at=record.finished_at,
            drift=drift,
        )
    return _evaluation_run(path, record)


def recipe_now(record: TrainingRecord) -> tuple[bool, tuple[str, ...]]:
    """Whether a training run follows its experiment's recipe as the recipe stands today, and the model settings in
    which it trained another model than today's recipe builds ("model.direction: bidirectional, now causal").

    The record says whether the run's overrides kept the recipe of its day. Recipes change when evidence says the
    official run did otherwise (issue 18: HGRN2's 1-D LRA tasks scan one way since 2026-12-04), so:
    - a model setting that differs from today's composed experiment and that no override of the run set is drift:
      the run no longer follows the recipe, and the table says why;
    - a run that deviated only by setting keys to the values today's recipe has adopted follows it now (the one-way
      ListOps run, made with `model.direction=causal` before the recipe said so). The record is not rewritten."""
    now = _composed(record.experiment)
    if now is None or record.overrides is None:  # an experiment that no longer exists, or unknown overrides
        return record.recipe, ()
    set_by_run = {override_key(o)[0] for o in record.overrides}
    drift = tuple(
        f"model.{key}: {old}, now {new}"
        for key, old, new in _differences(record.config.get("model") or {}, now.get("model") or {})
        if f"model.{key}" not in set_by_run
    )
    changed = [override_key(o) for o in deviations(record.overrides)]
    adopted = all(
        value is not None and config_value(record.config, key) == config_value(now, key) for key, value in changed
    )
    return not drift and (record.recipe or adopted), drift


def _differences(before: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value before, value now) where both configs have the key and the values differ."""
    found = []
    for key in before.keys() & now.keys():
        old, new = before[key], now[key]
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            found += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append((f"{prefix}{key}", old, new))
    return sorted(found)


@functools.cache
def _composed(experiment: str) -> dict[str, Any] | None:
    """The experiment's config today, resolved (None for an experiment that no longer exists)."""
    from omegaconf import OmegaConf

    try:
        cfg = compose(f"experiment={experiment}", "paths.output_dir=RUN_DIR")
    except ConfigError:
        return None
    return OmegaConf.to_container(cfg, resolve=True)


def config_value(config: Mapping[str, Any], dotted: str) -> Any:
    """config["a"]["b"] for "a.b"; None where a part is missing."""
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _evaluation_run(path: Path, record: EvaluationRecord) -> Run:
    trained = record.trained or {}
    overrides = trained.get("overrides")
    return Run(
        path=path,
        source=record.evaluation,
        experiment=record.experiment,
        overrides=None if overrides is None else tuple(overrides),
        seed=trained.get("seed"),
        recipe=record.recipe and bool(trained.get("recipe")),
        finished=bool(trained.get("finished")),
        progress="evaluated run finished" if trained.get("finished") else "evaluated run unfinished or unknown",
        monitor=trained.get("monitor", ""),
        monitor_mode=trained.get("monitor_mode", "min"),
        best=trained.get("best"),
        metrics=record.metrics,
        metrics_last={},
        config=record.config,
        finished_at=record.finished_at,
    )


def record_files(roots: Iterable[Path | str]) -> list[Path]:
    """Every results.json and evaluation.json under the roots, sorted (a root that does not exist holds none)."""
    return sorted({path for root in roots for name in RECORD_FILES for path in Path(root).rglob(name)})


def collect(roots: Iterable[Path | str]) -> tuple[list[Run], list[Skipped]]:
    """The runs recorded under the roots, and the files skipped with the reason."""
    runs, skipped = [], []
    for path in record_files(roots):
        try:
            runs.append(run_of(path, load_record(path)))
        except (OSError, ValueError) as error:
            skipped.append(Skipped(path, str(error) or type(error).__name__))
    return runs, skipped
