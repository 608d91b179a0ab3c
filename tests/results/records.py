"""Synthetic records for the results tests: a valid training record, changed where a test needs it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from hgrn.results import TrainingRecord, write_record
from hgrn.results.identity import follows_recipe

LISTOPS = "lra/hgrn2/listops"


def training(**changes: Any) -> TrainingRecord:
    """A finished recipe run of LRA ListOps unless `changes` say otherwise; `recipe` follows `overrides`."""
    record = TrainingRecord(
        experiment=LISTOPS,
        overrides=[f"experiment={LISTOPS}", "trainer.devices=1"],
        seed=2222,
        recipe=True,
        finished=True,
        task="ClassificationTask",
        monitor="val/acc",
        monitor_mode="max",
        metrics={"test/acc": 0.5, "test/loss": 1.5, "val/acc_best": 0.52},
        metrics_last={"test/acc": 0.49, "test/loss": 1.6},
        config={"model": {"mixer": "hgrn2"}, "trainer": {"max_epochs": 50}},
        parameters=1000,
        throughput={"train_samples_per_s": 10.0, "train_tokens_per_s": 1000.0},
        wall_seconds=12.5,
        peak_memory_bytes=2**20,
        steps=100,
        planned_steps=100,
        epochs=2,
        best_checkpoint="checkpoints/best.ckpt",
        history=[{"step": 50, "epoch": 0, "val/acc": 0.4, "train/acc": 0.3, "train/loss": 2.0}],
        versions={"torch": "2.14.1"},
        git={"commit": "abc", "dirty": False},
        hardware={"accelerator": "cpu"},
        started_at="2026-11-21T00:00:00+00:00",
        finished_at="2026-11-21T00:01:00+00:00",
    )
    record = replace(record, **changes)
    if "overrides" in changes and "recipe" not in changes:
        record.recipe = follows_recipe(record.overrides)
    return record


def write_run(root: Path, name: str, *, acc: float, best: float | None = None, **changes: Any) -> Path:
    """root/name/results.json with test accuracy `acc` (last weights: acc - 0.01) and val/acc_best `best`."""
    metrics = {"test/acc": acc, "test/loss": 1.0, **({} if best is None else {"val/acc_best": best})}
    record = training(metrics=metrics, metrics_last={"test/acc": acc - 0.01}, **changes)
    return write_record(root / name / "results.json", record)
