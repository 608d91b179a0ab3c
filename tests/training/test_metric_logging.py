"""What a training step costs the host for its bookkeeping: each split's metric objects go to Lightning once per
epoch (the epoch means still cover every batch), a step's own values are logged only on the steps whose logs are
written or shown, the throughput monitor waits for the GPU only where its windows close, and the progress bar reads
the logged values every N steps, not after every step."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torchmetrics import Metric

from hgrn.config import ConfigError, compose
from hgrn.training.base import TaskModule
from hgrn.training.callbacks import ProgressBar, ThroughputMonitor
from hgrn.training.run import train
from tests.training.test_guard import Toy
from tests.training.test_run_record import BATCHES, tiny


class StepLosses(L.Callback):
    """Each epoch's training losses, and how many validations ran (the sanity check's included). Made by Hydra from
    the config; the test finds it in `made`."""

    made: ClassVar[list[StepLosses]] = []

    def __init__(self) -> None:
        self.losses: dict[int, list[float]] = {}
        self.validations = 0
        StepLosses.made.append(self)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        self.losses.setdefault(trainer.current_epoch, []).append(float(outputs["loss"]))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validations += 1


def test_metric_objects_are_logged_once_per_epoch_and_average_every_batch(listops_dir, make_config, monkeypatch):
    metric_logs: list[str] = []
    log = TaskModule.log

    def counting_log(self: TaskModule, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(value, Metric):
            metric_logs.append(name)
        log(self, name, value, *args, **kwargs)

    monkeypatch.setattr(TaskModule, "log", counting_log)
    monkeypatch.setattr(StepLosses, "made", [])
    callback = "+callbacks.steps={_target_: tests.training.test_metric_logging.StepLosses}"
    record = train(make_config(*tiny(listops_dir, "trainer.max_epochs=2"), callback))
    (steps,) = StepLosses.made

    assert [len(steps.losses[epoch]) for epoch in (0, 1)] == [BATCHES, BATCHES]
    train_logs = [name for name in metric_logs if name.startswith("train/")]
    assert sorted(train_logs) == sorted(["train/acc_epoch", "train/loss_epoch"] * 2)  # per epoch, not per step
    val_logs = [name for name in metric_logs if name.startswith("val/")]
    assert sorted(val_logs) == sorted(["val/acc", "val/loss"] * steps.validations)
    epoch_means = {int(row["epoch"]): row["train/loss"] for row in record.history if "train/loss" in row}
    for epoch, losses in steps.losses.items():  # one label per sequence: every batch weighs the same
        assert epoch_means[epoch] == pytest.approx(sum(losses) / len(losses), rel=1e-5)


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        (["callbacks.progress.metrics_every_n_steps=3"], {2, 3, 5, 7, 8, 11}),  # ours: each 3rd batch of an epoch
        (["~callbacks.progress"], set(range(12))),  # Lightning's default bar shows them after every batch
        (["~callbacks.progress", "+trainer.enable_progress_bar=false"], {3, 7, 11}),  # the CSV's steps alone
    ],
    ids=["our-bar", "lightning-bar", "no-bar"],
)
def test_step_values_are_logged_on_the_steps_that_read_them(listops_dir, tmp_path, monkeypatch, progress, expected):
    """`train/loss_step` reaches `self.log` on the steps whose logs Lightning writes (every 4th optimiser step here)
    or whose values a progress bar shows, and nowhere else; the CSV is the same as with every step logged."""
    logged: list[int] = []
    log = TaskModule.log

    def recording_log(self: TaskModule, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        if name == "train/loss_step":
            logged.append(self.global_step)
        log(self, name, value, *args, **kwargs)

    monkeypatch.setattr(TaskModule, "log", recording_log)
    overrides = [
        o
        for o in tiny(listops_dir, "trainer.max_epochs=2", "trainer.log_every_n_steps=4")
        if o != "~callbacks.progress"
    ]
    train(compose(f"paths.output_dir={tmp_path / 'read'}", "logger=csv", *overrides, *progress))
    assert set(logged) == expected and len(logged) == len(expected)

    monkeypatch.setattr(TaskModule, "step_values_read", lambda self, batch_idx: True)
    train(compose(f"paths.output_dir={tmp_path / 'every'}", "logger=csv", *overrides, *progress))
    csv = [(tmp_path / run / "csv" / "version_0" / "metrics.csv").read_text() for run in ("read", "every")]
    assert csv[0] == csv[1] and "train/loss_step" in csv[0]


def test_the_throughput_monitor_waits_for_the_gpu_only_where_a_window_closes(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: syncs.append(1))
    monitor = ThroughputMonitor()
    masks = [torch.ones(4, 10, dtype=torch.bool).tril() for _ in range(5)]
    for batch_idx, mask in enumerate(masks):
        monitor.on_train_batch_start(None, None, {}, batch_idx)
        monitor.on_train_batch_end(None, None, None, {"inputs": torch.zeros(4, 10), "mask": mask}, batch_idx)
    assert (len(syncs), monitor.tokens, monitor.samples) == (0, 0, 20)  # the tokens are still counted on the device
    monitor.on_validation_start(None, None)
    assert (len(syncs), monitor.tokens) == (1, sum(int(m.sum()) for m in masks))
    assert monitor.step_seconds > 0
    monitor.on_train_epoch_end(None, None)  # no window open: nothing to wait for
    assert len(syncs) == 1
    monitor.on_train_batch_start(None, None, {}, 5)
    monitor.on_train_batch_end(None, None, None, {"inputs": torch.zeros(3, 7)}, 5)
    assert monitor.state_dict()["tokens"] == 50 + 21 and len(syncs) == 2  # a checkpoint closes the window


def test_the_progress_bar_reads_the_logged_values_every_n_steps(monkeypatch):
    reads: list[int] = []

    def get_metrics(self: RichProgressBar, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        reads.append(trainer.global_step)
        return {}

    monkeypatch.setattr(RichProgressBar, "get_metrics", get_metrics)
    counts = {}
    for every in (1, 4):
        reads.clear()
        trainer = L.Trainer(max_steps=8, callbacks=[ProgressBar(metrics_every_n_steps=every)], logger=False,
                            enable_checkpointing=False, enable_model_summary=False, accelerator="cpu")  # fmt: skip
        trainer.fit(Toy(set()))  # two epochs of 4 batches
        counts[every] = list(reads)
    assert len(counts[1]) >= 8 and set(range(1, 9)) <= set(counts[1])  # Lightning's bar: after every batch
    assert set(counts[4]) & {1, 2, 3, 5, 6, 7} <= {1} and {4, 8} <= set(counts[4])  # the first, then each 4th


def test_a_progress_bar_that_never_reads_is_one_clear_error(make_config):
    with pytest.raises(ConfigError, match=r"callbacks.progress.metrics_every_n_steps=0 must be at least 1"):
        train(make_config("experiment=demo", "callbacks.progress.metrics_every_n_steps=0"))
