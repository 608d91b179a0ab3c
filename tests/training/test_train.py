"""End to end on the CPU: fast_dev_run of each task type, a short ListOps run that learns, results.json, crashes
and resumption."""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest
import torch

from hgrn.data.errors import DataNotFoundError
from hgrn.results import SCHEMA_VERSION, load_record
from hgrn.training.run import train
from tests.training.conftest import TINY_MQAR

DEMO_ON = ["experiment=demo", "data.num_workers=0"]


def test_fast_dev_run_classification(make_config, listops_dir, tmp_path):
    result = train(make_config(*DEMO_ON, f"data.data_dir={listops_dir}", "trainer.fast_dev_run=true"))
    assert set(result.metrics) >= {"test/acc", "test/loss"}
    assert load_record(tmp_path / "results.json").metrics == result.metrics


@pytest.mark.parametrize("model", ["hgrn2", "hgrn1", "gla", "attention"])
def test_fast_dev_run_language_modeling_on_mqar(model, make_config, tmp_path):
    result = train(make_config(f"experiment=mqar/{model}", "trainer=cpu", *TINY_MQAR, "trainer.fast_dev_run=true"))
    assert 0.0 <= result.metrics["test/acc"] <= 1.0 and result.metrics["test/ppl"] > 1
    assert result.task == "LanguageModelingTask"


def test_short_listops_run_beats_the_majority_class(make_config, listops_dir, tmp_path):
    """Measured on 2 CPU cores: test accuracy 0.475 after 5 epochs (36 s) where the majority class is 0.15."""
    labels = [int(line.rsplit("\t", 1)[1]) for line in (listops_dir / "basic_test.tsv").read_text().splitlines()[1:]]
    majority = Counter(labels).most_common(1)[0][1] / len(labels)
    result = train(make_config(*DEMO_ON, f"data.data_dir={listops_dir}", "trainer.max_epochs=5"))
    assert result.metrics["test/acc"] >= majority + 0.15, (result.metrics, majority)
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["status"] == "completed" and record["schema_version"] == SCHEMA_VERSION
    assert record["config"]["model"]["mixer"] == "hgrn2" and record["parameters"] == result.parameters
    assert len(record["history"]) == 5 and record["history"][-1]["epoch"] == 4
    assert record["throughput"]["train_tokens_per_s"] > 0 and record["peak_memory_bytes"] > 0
    assert record["best_checkpoint"].endswith("best.ckpt")


def test_a_crashed_run_leaves_no_results_and_can_be_resumed(make_config, listops_dir, tmp_path, monkeypatch):
    config = [*DEMO_ON, f"data.data_dir={listops_dir}", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2"]
    train(make_config(*config, "trainer.max_epochs=1"))
    (tmp_path / "results.json").unlink()
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.exists()

    from hgrn.training.classification import ClassificationTask

    original = ClassificationTask.shared_step

    def nan_loss(self, batch, split):
        return original(self, batch, split) * float("nan")

    monkeypatch.setattr(ClassificationTask, "shared_step", nan_loss)
    with pytest.raises(FloatingPointError, match=r"training loss is nan at step 4 .*last.ckpt"):
        train(make_config(*config, "trainer.max_epochs=2", f"ckpt_path={last}"))
    assert not (tmp_path / "results.json").exists()

    monkeypatch.setattr(ClassificationTask, "shared_step", original)
    resumed = train(make_config(*config, "trainer.max_epochs=2", f"ckpt_path={last}"))
    assert resumed.steps == 8 and resumed.epochs == 2
    assert torch.load(last, weights_only=False)["global_step"] == 8


def test_missing_dataset_names_the_directory_and_the_make_target(make_config, tmp_path):
    with pytest.raises(DataNotFoundError, match=r"absent.*make data-listops"):
        train(make_config(*DEMO_ON, f"data.data_dir={tmp_path / 'absent'}"))
    assert not (tmp_path / "results.json").exists()


def test_ctrl_c_keeps_the_weights_and_writes_no_results(make_config, listops_dir, tmp_path, monkeypatch):
    from hgrn.training.classification import ClassificationTask

    original = ClassificationTask.shared_step

    def interrupt_at_step_3(self, batch, split):
        if split == "train" and self.global_step == 3:
            raise KeyboardInterrupt
        return original(self, batch, split)

    monkeypatch.setattr(ClassificationTask, "shared_step", interrupt_at_step_3)
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores further Ctrl-C while it shuts down
    try:
        with pytest.raises(SystemExit):
            train(make_config(*DEMO_ON, f"data.data_dir={listops_dir}", "trainer.limit_val_batches=2"))
    finally:
        signal.signal(signal.SIGINT, handler)
    saved = torch.load(tmp_path / "checkpoints" / "interrupted.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    assert not (tmp_path / "results.json").exists()
