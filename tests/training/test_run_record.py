"""What a real (tiny, CPU) training run records in results.json: the learning curve exactly as Lightning's CSV log
has it, epoch by epoch; its identity (overrides, seed, recipe, finished); test metrics of the best validation
checkpoint and of the last weights; and after a resume the whole run's curve, throughput and wall time."""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import pytest

from hgrn.config import compose
from hgrn.results import EvaluationRecord, load_record
from hgrn.training.run import evaluate, train

BATCHES = 6  # training batches per epoch; validation after 3 and after 6


def tiny(listops_dir: Path, *more: str) -> list[str]:
    return [
        "experiment=demo",
        f"data.data_dir={listops_dir}",
        "data.num_workers=0",
        "model.d_model=16",
        "model.n_layers=1",
        f"trainer.limit_train_batches={BATCHES}",
        "trainer.val_check_interval=3",
        "trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
        "~callbacks.progress",
        *more,
    ]


class StopAt(L.Callback):
    """Stops training at optimiser step `step`, as a time limit would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def csv_curve(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Per epoch, from every CSV log of the run (a resumed run adds a version): its validations in order and the
    epoch means of its training metrics."""
    curve: dict[int, dict[str, Any]] = defaultdict(lambda: {"val": [], "train": {}})
    for path in sorted((run_dir / "csv").glob("version_*/metrics.csv")):
        for row in csv.DictReader(path.open()):
            values = {
                k: float(v) for k, v in row.items() if v and k.startswith(("val/", "train/")) and "_step" not in k
            }
            epoch = int(row["epoch"]) if row["epoch"] else None
            val = {k: v for k, v in values.items() if k.startswith("val/")}
            train = {k.removesuffix("_epoch"): v for k, v in values.items() if k.endswith("_epoch")}
            if val:
                curve[epoch]["val"].append((int(row["step"]) + 1, val))  # the CSV writes the step before
            if train:
                curve[epoch]["train"] = train
    return dict(curve)


def history_curve(history: list[dict[str, float]]) -> dict[int, dict[str, Any]]:
    curve: dict[int, dict[str, Any]] = defaultdict(lambda: {"val": [], "train": {}})
    for row in history:
        val = {k: v for k, v in row.items() if k.startswith("val/")}
        if val:
            curve[int(row["epoch"])]["val"].append((int(row["step"]), val))
        curve[int(row["epoch"])]["train"].update({k: v for k, v in row.items() if k.startswith("train/")})
    return dict(curve)


def test_the_record_of_a_real_run(listops_dir, tmp_path):
    overrides = [*tiny(listops_dir, "trainer.max_epochs=3"), f"paths.output_dir={tmp_path}", "logger=csv"]
    record = train(compose(*overrides), overrides=overrides)
    assert load_record(tmp_path / "results.json") == record
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644

    curve = history_curve(record.history)
    assert curve == csv_curve(tmp_path)
    assert sorted(curve) == [0, 1, 2] and all(len(epoch["val"]) == 2 for epoch in curve.values())
    assert all(set(epoch["train"]) == {"train/acc", "train/loss"} for epoch in curve.values())

    assert record.overrides == overrides and record.seed == 2222
    assert not record.recipe  # model.d_model and the budget's limits change the recipe
    assert record.finished and record.steps == record.planned_steps == 3 * BATCHES
    assert (record.monitor, record.monitor_mode) == ("val/acc", "max")
    assert set(record.metrics_last) == {"test/acc", "test/loss"}

    # the two test protocols: the best validation checkpoint, and the weights at the end (the last step checkpoint)
    checkpoints = tmp_path / "checkpoints"
    for checkpoint, expected in (("best.ckpt", record.metrics), (f"step-{record.steps:08d}.ckpt", record.metrics_last)):
        eval_dir = tmp_path / f"eval-{checkpoint}"
        eval_overrides = [
            "experiment=demo",
            f"data.data_dir={listops_dir}",
            "+trainer.limit_test_batches=2",
            f"ckpt_path={checkpoints / checkpoint}",
        ]
        evaluation = evaluate(
            compose(*eval_overrides, f"paths.output_dir={eval_dir}", "logger=csv", config_name="eval"), eval_overrides
        )
        assert isinstance(evaluation, EvaluationRecord) and load_record(eval_dir / "evaluation.json") == evaluation
        assert evaluation.metrics["test/acc"] == pytest.approx(expected["test/acc"])
        assert not evaluation.recipe  # limit_test_batches changes the data (ckpt_path alone would not)
        assert evaluation.trained is not None and evaluation.trained["results"] == str(tmp_path / "results.json")
        assert (evaluation.trained["recipe"], evaluation.trained["finished"]) == (False, True)


def test_a_run_stopped_before_its_budget_is_recorded_unfinished(listops_dir, make_config):
    stop = "+callbacks.stop={_target_: tests.training.test_run_record.StopAt, step: 4}"
    record = train(make_config(*tiny(listops_dir, "trainer.max_epochs=2"), stop))
    assert (record.steps, record.planned_steps, record.finished) == (4, 2 * BATCHES, False)
    assert record.overrides is None and not record.recipe  # composed in Python: overrides unknown


def test_a_resumed_run_keeps_the_whole_curve_throughput_and_wall_time(listops_dir, make_config, tmp_path):
    first = train(make_config(*tiny(listops_dir, "trainer.max_epochs=1")))
    config = make_config(*tiny(listops_dir, "trainer.max_epochs=2", "resume=auto"))
    clock = time.perf_counter()
    resumed = train(config)
    second_process = time.perf_counter() - clock
    assert [row["epoch"] for row in resumed.history] == [0, 0, 1, 1]
    assert resumed.history[:2] == first.history
    assert history_curve(resumed.history) == csv_curve(tmp_path)  # both processes' CSV logs
    samples = {name: r.throughput["train_samples_per_s"] * r.throughput["train_step_seconds"] for name, r in
               (("first", first), ("resumed", resumed))}  # fmt: skip
    assert samples["resumed"] == pytest.approx(2 * samples["first"])
    assert resumed.throughput["train_step_seconds"] > first.throughput["train_step_seconds"]
    assert resumed.throughput["fit_wall_seconds"] > first.throughput["fit_wall_seconds"]
    assert resumed.wall_seconds > second_process + first.throughput["fit_wall_seconds"] / 2  # the first's time too
    assert resumed.finished and resumed.steps == resumed.planned_steps == 2 * BATCHES
