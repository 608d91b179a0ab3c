"""DDP on the CPU (trainer=ddp_cpu, two gloo processes): at the same global batch it trains as one process does, and
its validation and test metrics count every example once; the multi-device trainer configs compose."""

from __future__ import annotations

import json

import pytest
import torch
from hydra.utils import instantiate
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from hgrn.bench import ddp_scaling
from hgrn.models.backbone import Block
from hgrn.training.resume import resume_problem
from tests.training.test_resume import TINY, finish, run_dirs, start_training


def test_two_processes_train_as_one_at_the_same_global_batch(listops_dir, tmp_path):
    """hgrn.bench.ddp_scaling with two gloo processes against one: the same loss over the global batch at every step,
    the same weights, every validation and test example counted once, and each process's peak memory recorded."""
    tiny = [o for o in TINY if not o.startswith("experiment=")]
    bench = ["--experiment", "demo", "--trainer", "ddp_cpu", "--baseline-trainer", "cpu", "--global-batch", "16"]
    bench += ["--steps", "6", "--warmup", "1", "--work", str(tmp_path / "runs"), "--out", str(tmp_path / "bench")]
    ddp_scaling.main([*bench, "--", *tiny, f"data.data_dir={listops_dir}"])

    (report,) = (tmp_path / "bench").glob("ddp-scaling-*.json")
    (row,) = json.loads(report.read_text())["rows"]
    one, two = row["one"], row["many"]
    assert len(one["losses"]) == len(two["losses"]) == 6
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-5, atol=1e-6)
    assert row["comparison"]["test_max_abs_diff"] < 1e-5 and row["comparison"]["efficiency"] > 0
    assert len(two["peak_memory_gib"]) == 2 and len(one["peak_memory_gib"]) == 1
    assert "| demo | ddp_cpu | 2 | 16 |" in report.with_suffix(".md").read_text()
    (stamp,) = (tmp_path / "runs").iterdir()
    one_dir, two_dir = stamp / "1-device", stamp / "2-device"
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
    assert two["peak_memory_bytes"] == max(two["peak_memory_bytes_per_process"])


def test_one_device_alone_gives_the_baseline_row(listops_dir, tmp_path):
    """Where N devices are not to be had: the one-device run of the same command, recorded for a later comparison."""
    tiny = [o for o in TINY if not o.startswith("experiment=")]
    bench = ["--experiment", "demo", "--devices", "1", "--baseline-trainer", "cpu", "--steps", "4", "--warmup", "1"]
    bench += ["--work", str(tmp_path / "runs"), "--out", str(tmp_path / "bench")]
    ddp_scaling.main([*bench, "--", *tiny, f"data.data_dir={listops_dir}"])
    (report,) = (tmp_path / "bench").glob("ddp-scaling-*.json")
    (row,) = json.loads(report.read_text())["rows"]
    assert "many" not in row and "comparison" not in row and len(row["one"]["losses"]) == 4
    text = report.with_suffix(".md").read_text()
    assert "| demo | cpu | 1 |" in text and "(cpu, one device only)" in text


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


def test_the_scaling_bench_refuses_runs_of_different_global_batches():
    one = {"global_batch": 16, "world_size": 1, "steps_per_s": 2.0, "losses": [1.0], "test": {"test/acc": 0.5}}
    many = {**one, "global_batch": 32, "world_size": 2}
    with pytest.raises(ValueError, match="pass --global-batch"):
        ddp_scaling.compare(one, many)
    scaling = ddp_scaling.compare(one, {**many, "global_batch": 16, "steps_per_s": 3.0, "test": {"test/acc": 0.25}})
    assert scaling["efficiency"] == 0.75 and scaling["test_max_abs_diff"] == 0.25


def test_the_step_log_groups_accumulated_micro_batches_by_their_optimiser_step(tmp_path):
    """Two micro-batches per optimiser step: global_step advances on the second, whose loss still belongs to it."""
    from types import SimpleNamespace

    log = ddp_scaling.StepLog(str(tmp_path / "steps.json"))
    trainer = SimpleNamespace(global_step=0, is_global_zero=True)
    module = SimpleNamespace(all_gather=lambda t: t)
    log.on_train_start(trainer, module)
    for global_step, loss in zip([0, 1, 1, 2], [1.0, 3.0, 5.0, 7.0], strict=True):
        trainer.global_step = global_step
        log.on_train_batch_end(trainer, module, {"loss": torch.tensor(loss)})
    log.on_train_end(trainer, module)
    rows = json.loads((tmp_path / "steps.json").read_text())
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 2.0), (2, 6.0)]


def test_a_failed_run_is_reported_by_the_line_naming_its_error():
    hydra_tail = (
        "[2026-12-05 15:41:55][hydra.utils][ERROR] - Error getting object at hgrn.data.lm.datamodule.LMDataModule\n"
        "ModuleNotFoundError: No module named 'zstandard'\n"
        "\n"
        "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    )
    assert ddp_scaling.failure_line(hydra_tail) == "ModuleNotFoundError: No module named 'zstandard'"
    usage = "usage: train.py [--help]\nerror: unrecognized arguments: --x\n[precompile][WARNING] - compiling failed\n"
    assert ddp_scaling.failure_line(usage) == "error: unrecognized arguments: --x"
    assert ddp_scaling.failure_line("step 3\nKilled\n") == "Killed"
    assert ddp_scaling.failure_line("") == "(no output)"
