"""results.json: versioned schema, validated on write and on read, written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from hgrn.results import SCHEMA_VERSION, RunResult, load_results, validate, write_results


def example() -> RunResult:
    return RunResult(
        experiment="demo",
        task="ClassificationTask",
        metrics={"test/acc": 0.5, "val/acc_best": 0.52},
        config={"model": {"mixer": "hgrn2"}},
        parameters=1000,
        throughput={"train_samples_per_s": 10.0, "train_tokens_per_s": 1000.0},
        wall_seconds=12.5,
        peak_memory_bytes=2**20,
        steps=100,
        epochs=2,
        best_checkpoint="checkpoints/best.ckpt",
        history=[{"step": 50, "epoch": 0, "val/acc": 0.4}],
        versions={"torch": "2.14.1"},
        git={"commit": "abc", "dirty": False},
        hardware={"accelerator": "cpu"},
        started_at="2026-11-21T00:00:00+00:00",
        finished_at="2026-11-21T00:01:00+00:00",
    )


def test_round_trip(tmp_path):
    path = write_results(tmp_path / "run" / "results.json", example())
    assert load_results(path) == example()
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 0}, "schema_version=0"),
        ({"status": "running"}, "status is 'running'"),
        ({"parameters": "many"}, "'parameters' should be"),
        ({"steps": True}, "'steps' should be"),
        ({"metrics": {"test/acc": "high"}}, "metrics must be numbers"),
        ({"best_checkpoint": 3}, "'best_checkpoint' should be"),
        ({"surprise": 1}, r"unknown \['surprise'\]"),
    ],
)
def test_invalid_records_are_rejected_naming_the_key(change, message):
    with pytest.raises(ValueError, match=message):
        validate({**asdict(example()), **change})


def test_missing_keys_are_named():
    record = asdict(example())
    del record["metrics"]
    with pytest.raises(ValueError, match=r"missing \['metrics'\]"):
        validate(record)


def test_an_invalid_result_is_never_written(tmp_path):
    bad = example()
    bad.status = "running"
    with pytest.raises(ValueError):
        write_results(tmp_path / "results.json", bad)
    assert not (tmp_path / "results.json").exists()
