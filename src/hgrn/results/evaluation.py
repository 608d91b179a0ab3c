"""Writing an evaluation record: what every evaluation of a checkpoint calls (the test pass of `hgrn.evaluate`,
perplexity over a split, lm-eval, ImageNet top-1/top-5), so that tables read them beside training records.

Metric names, so that the tables find them: `test/<metric>` and `val/<metric>` for a split's numbers (perplexity:
`val/ppl`, `test/ppl`; ImageNet: `test/acc`, `test/acc_top5`), `<task>/<metric>` for lm-eval (`piqa/acc`,
`piqa/acc_norm`, ...), accuracies as fractions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hgrn.results.environment import git_state, hardware, package_versions
from hgrn.results.identity import follows_recipe
from hgrn.results.schema import EvaluationRecord, TrainingRecord, load_record, write_record

EVALUATION_FILE = "evaluation.json"


def write_evaluation(
    path: Path | str, *, experiment: str, checkpoint: Path | str | None, metrics: Mapping[str, float], **details: Any
) -> EvaluationRecord:
    """Write `path` (an evaluation.json, by convention in the evaluation's own run directory) and return the record.
    `details` are evaluation_record's optional fields: evaluation, overrides, config, parameters, extra."""
    record = evaluation_record(experiment=experiment, checkpoint=checkpoint, metrics=metrics, **details)
    write_record(path, record)
    return record


def evaluation_record(
    *,
    experiment: str,
    checkpoint: Path | str | None,
    metrics: Mapping[str, float],
    evaluation: str = "test",
    overrides: Sequence[str] | None = None,
    config: Mapping[str, Any] | None = None,
    parameters: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> EvaluationRecord:
    """The record of `checkpoint` evaluated as `experiment`: `metrics`, and where and how they were measured.

    evaluation: what was measured (test, perplexity, lm-eval, imagenet). overrides: the evaluation's command-line
    overrides (None: not known; such an evaluation never reaches a paper table); `ckpt_path` among them is neutral.
    The training record beside the checkpoint (<run>/results.json for <run>/checkpoints/<name>.ckpt) is copied in
    as `trained`, so the tables know whether the evaluated run followed its recipe and finished.
    """
    return EvaluationRecord(
        experiment=experiment,
        evaluation=evaluation,
        checkpoint=None if checkpoint is None else str(Path(checkpoint).resolve()),
        overrides=None if overrides is None else list(overrides),
        recipe=follows_recipe(overrides, allowed=("ckpt_path",)),
        trained=None if checkpoint is None else trained_run(Path(checkpoint)),
        metrics={name: float(value) for name, value in metrics.items()},
        parameters=parameters,
        config=dict(config or {}),
        versions=package_versions(),
        git=git_state(Path(__file__).parent),
        hardware=hardware(),
        finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        extra=dict(extra or {}),
    )


def trained_run(checkpoint: Path) -> dict[str, Any] | None:
    """What the training record beside a checkpoint says about its run (schema.TRAINED_KEYS), or None when there
    is no valid one."""
    path = checkpoint.resolve().parent.parent / "results.json"
    try:
        record = load_record(path)
    except (OSError, ValueError):
        return None
    if not isinstance(record, TrainingRecord):
        return None
    return {
        "results": str(path),
        "experiment": record.experiment,
        "overrides": record.overrides,
        "seed": record.seed,
        "recipe": record.recipe,
        "finished": record.finished,
        "monitor": record.monitor,
        "monitor_mode": record.monitor_mode,
        "best": record.best(),
    }
