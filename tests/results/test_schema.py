"""Records: two kinds in one versioned schema, validated on write and on read, written atomically with mode 0644;
schema 1 files are read as unfinished, unknown-recipe training runs without changing a number."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from hgrn.results import SCHEMA_VERSION, EvaluationRecord, TrainingRecord, load_record, validate, write_record
from hgrn.results.evaluation import evaluation_record
from tests.results.records import training

COMMITTED = Path(__file__).resolve().parents[2] / "results" / "runs" / "lra-hgrn2-listops-h200-10min" / "results.json"


def evaluation() -> EvaluationRecord:
    return evaluation_record(experiment="lm/pile/hgrn2-150m", checkpoint=None, metrics={"piqa/acc": 0.6})


def test_both_kinds_round_trip_through_one_loader(tmp_path):
    for name, record in (("results.json", training()), ("evaluation.json", evaluation())):
        path = write_record(tmp_path / "run" / name, record)
        assert load_record(path) == record
        assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["evaluation.json", "results.json"]  # no temp file


def test_a_record_is_readable_by_everyone_whatever_the_umask(tmp_path):
    previous = os.umask(0o077)
    try:
        path = write_record(tmp_path / "results.json", training())
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 99}, "schema_version=99"),
        ({"kind": "benchmark"}, "kind='benchmark'"),
        ({"status": "running"}, "status is 'running'"),
        ({"parameters": "many"}, "'parameters' should be"),
        ({"steps": True}, "'steps' should be"),
        ({"metrics": {"test/acc": "high"}}, "'metrics' should be"),
        ({"metrics": {"test/acc": float("nan")}}, r"metrics \['test/acc'\] are not finite"),
        ({"metrics_last": {"test/acc": float("inf")}}, r"metrics_last \['test/acc'\] are not finite"),
        ({"overrides": ["ok", 3]}, "'overrides' should be"),
        ({"best_checkpoint": 3}, "'best_checkpoint' should be"),
        ({"monitor_mode": "up"}, "monitor_mode='up'"),
        ({"surprise": 1}, r"unknown \['surprise'\]"),
    ],
)
def test_invalid_records_are_rejected_naming_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        validate({**asdict(training()), **change})


def test_missing_keys_are_named():
    record = asdict(training())
    del record["metrics"]
    with pytest.raises(ValueError, match=r"missing \['metrics'\]"):
        validate(record)


def test_an_evaluation_needs_no_training_fields_but_its_own():
    record = asdict(evaluation())
    assert "steps" not in record and "history" not in record
    del record["evaluation"]
    with pytest.raises(ValueError, match=r"evaluation record keys: missing \['evaluation'\]"):
        validate(record)
    with pytest.raises(ValueError, match="trained has keys"):
        validate({**asdict(evaluation()), "trained": {"results": "x"}})


def test_an_invalid_record_is_never_written(tmp_path):
    with pytest.raises(ValueError):
        write_record(tmp_path / "results.json", training(status="running"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ['{"schema_version": 2, "kind": "train', "[1, 2]", "NaN"])
def test_what_is_not_a_record_object_is_a_value_error(tmp_path, text):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ValueError):
        load_record(tmp_path / "results.json")


def test_the_committed_schema_1_run_reads_as_an_unfinished_run_of_unknown_overrides():
    raw = json.loads(COMMITTED.read_text())
    assert raw["schema_version"] == 1
    record = load_record(COMMITTED)
    assert isinstance(record, TrainingRecord)
    assert (record.overrides, record.recipe, record.finished) == (None, False, False)  # 10 of 50 epochs, time limit
    assert record.metrics == raw["metrics"] and record.history == raw["history"] and record.steps == raw["steps"]
    assert (record.monitor, record.monitor_mode, record.seed) == ("val/acc", "max", 2222)
    assert record.extra == {"migrated_from_schema": 1}
