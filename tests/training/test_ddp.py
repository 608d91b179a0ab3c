"""DDP on the CPU (trainer=ddp_cpu, two gloo processes): at the same global batch it trains as one process does, and
its validation and test metrics count every example once; the multi-device trainer configs compose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from hgrn.models.backbone import Block
from hgrn.training.resume import resume_problem
from tests.training.test_resume import TINY, finish, run_dirs, start_training


class RecordLosses(L.Callback):
    """Rank 0 writes to `path` every step's training loss over the global batch (the mean of the ranks' means)."""

    def __init__(self, path: str) -> None:
        self.path, self.losses = Path(path), []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        self.losses.append(float(pl_module.all_gather(outputs["loss"].detach()).mean()))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.write_text(json.dumps(self.losses))


def test_two_processes_train_as_one_at_the_same_global_batch(listops_dir, tmp_path):
    def start(name: str, trainer: str, batch_size: int) -> tuple:
        record = f"+callbacks.losses={{_target_: tests.training.test_ddp.RecordLosses, path: '{tmp_path / name}.json'}}"
        run = [f"trainer={trainer}", f"data.batch_size={batch_size}", "trainer.max_steps=6", "logger=none", record]
        return start_training(tmp_path / name, name, *TINY, f"data.data_dir={listops_dir}", *run)

    runs = {"one": start("one", "cpu", 16), "two": start("two", "ddp_cpu", 8)}
    for training in runs.values():
        finish(training)

    one, two = (json.loads((tmp_path / f"{name}.json").read_text()) for name in runs)
    assert len(one) == len(two) == 6
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-5, atol=1e-6)
    (one_dir,), (two_dir,) = run_dirs(tmp_path / "one"), run_dirs(tmp_path / "two")
    weights = [
        torch.load(d / "checkpoints" / "step-00000006.ckpt", weights_only=True)["state_dict"]
        for d in (one_dir, two_dir)
    ]
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-3, atol=1e-4)  # Adam magnifies float noise of ~0 grads
    one, two = (json.loads((d / "results.json").read_text()) for d in (one_dir, two_dir))
    assert one["config"]["effective"] == {"world_size": 1, "batch_size": 16, "lr": 0.003}
    assert two["config"]["effective"] == {"world_size": 2, "batch_size": 16, "lr": 0.003}
    assert two["metrics"]["test/acc"] == one["metrics"]["test/acc"]  # 200 test examples, each counted once
    assert two["metrics"]["val/acc_best"] == one["metrics"]["val/acc_best"]
    assert two["metrics"]["test/loss"] == pytest.approx(one["metrics"]["test/loss"], rel=1e-5)


@pytest.mark.parametrize("trainer", ["ddp_cpu", "ddp", "fsdp"])
def test_the_multi_device_trainers_compose(make_config, trainer):
    cfg = make_config("experiment=demo", f"trainer={trainer}", "trainer.devices=4")
    assert cfg.trainer.devices == 4 and cfg.trainer.use_distributed_sampler is False
    strategy = cfg.trainer.strategy
    if trainer == "ddp_cpu":
        assert instantiate(strategy).process_group_backend == "gloo"
    if trainer == "fsdp":
        policy = instantiate(strategy.auto_wrap_policy)
        assert isinstance(policy, ModuleWrapPolicy) and policy._module_classes == {Block}


def test_two_processes_stop_together_at_their_time_limit_and_test(listops_dir, tmp_path):
    """max_time 0: rank zero's clock stops both processes after the first optimiser step; each leaves fit, the
    test runs over both ranks and the step checkpoint is one to resume from."""
    run = ["trainer=ddp_cpu", "data.batch_size=8", "logger=none", "trainer.max_time=00:00:00:00"]
    finish(start_training(tmp_path, "limited", *TINY, f"data.data_dir={listops_dir}", *run))
    (run_dir,) = run_dirs(tmp_path)
    record = json.loads((run_dir / "results.json").read_text())
    assert record["steps"] == 1 and record["finished"] is False and 0 <= record["metrics"]["test/acc"] <= 1
    assert resume_problem(run_dir / "checkpoints" / "step-00000001.ckpt") is None
