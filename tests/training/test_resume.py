"""Resuming a run: killed with SIGKILL mid-epoch, or stopped mid-epoch by its time limit, and resumed, it ends in the
same directory with weights, optimiser state, metrics and learning curve bitwise identical to an unbroken run; a
checkpoint that does not load is skipped for the one before it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch

from hgrn.config import ConfigError, compose
from hgrn.training.build import build_trainer
from hgrn.training.config_check import check_config
from hgrn.training.resume import (
    WANDB_ID_FILE,
    StepCheckpoint,
    changed_overrides,
    checkpoint_to_resume,
    pin_wandb_run,
    resume_problem,
    run_to_resume,
)
from hgrn.training.run import train

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "experiment=demo",
    "model.d_model=16",
    "model.n_layers=1",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "callbacks.step.every_n_train_steps=2",
    "~callbacks.progress",
]


class PauseAt(L.Callback):
    """The crash: at optimiser step `step`, touch `marker` and wait there to be killed."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            self.marker.touch()
            time.sleep(600)


def start_training(cwd: Path, name: str, *overrides: str) -> tuple[subprocess.Popen, Path]:
    """`python -m hgrn.train` in `cwd` (runs land in cwd/outputs/<experiment name>/), its output in cwd/<name>.log;
    this test module is importable there (the pause callback)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    cwd.mkdir(parents=True, exist_ok=True)
    log = cwd / f"{name}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hgrn.train", *overrides], cwd=cwd, env=env, stdout=out, stderr=out
        )
    return process, log


def finish(training: tuple[subprocess.Popen, Path], timeout: float = 180) -> None:
    process, log = training
    assert process.wait(timeout=timeout) == 0, log.read_text()[-5000:]


def run_dirs(cwd: Path) -> list[Path]:
    return sorted(path for path in (cwd / "outputs" / "demo").iterdir() if path.is_dir())


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Bitwise equality through nested dicts, lists and tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_a_killed_run_resumes_to_the_result_of_an_unbroken_one(listops_dir, tmp_path):
    config = [*TINY, f"data.data_dir={listops_dir}", "logger=none", "+trainer.limit_test_batches=2"]
    marker = tmp_path / "paused"
    pause = f"+callbacks.pause={{_target_: tests.training.test_resume.PauseAt, step: 9, marker: '{marker}'}}"
    unbroken = start_training(tmp_path / "unbroken", "train", *config)
    crashing, log = start_training(tmp_path / "resumed", "crash", *config, pause)
    deadline = time.monotonic() + 120
    while not marker.exists() and crashing.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), log.read_text()[-5000:]
    crashing.send_signal(signal.SIGKILL)  # in epoch 1 (steps 7-12), one step after the step-8 checkpoint
    assert crashing.wait(timeout=30) == -signal.SIGKILL
    (run_dir,) = run_dirs(tmp_path / "resumed")
    assert not (run_dir / "results.json").exists()
    assert torch.load(run_dir / "checkpoints" / "step-00000008.ckpt", weights_only=True)["global_step"] == 8

    finish(start_training(tmp_path / "resumed", "resume", *config, "resume=auto"))
    finish(unbroken)

    assert run_dirs(tmp_path / "resumed") == [run_dir]  # resumed in place, no second run directory
    (reference,) = run_dirs(tmp_path / "unbroken")
    final = "checkpoints/step-00000012.ckpt"  # the end of training
    ours, theirs = (torch.load(d / final, weights_only=True) for d in (run_dir, reference))
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert_same(ours[key], theirs[key], key)
    ours, theirs = (json.loads((d / "results.json").read_text()) for d in (run_dir, reference))
    assert ours["metrics"] == theirs["metrics"]
    assert ours["history"] == theirs["history"] and [row["epoch"] for row in ours["history"]] == [0, 1]
    assert ours["steps"] == 12 and ours["throughput"]["fit_wall_seconds"] > ours["throughput"]["train_step_seconds"]


def test_a_run_stopped_by_its_time_limit_resumes_mid_epoch_to_the_result_of_an_unbroken_one(
    listops_dir, tmp_path, monkeypatch
):
    """A clock that advances one second per reading (at the fit's start and after each optimiser step) stops the run
    at max_time=9 s after step 9, inside epoch 1 (steps 7-12). The resumed run, with the same limit, gets a clock of
    its own and finishes; Lightning's max_time would have closed epoch 1 at step 9 and stopped the resumed run at
    once."""
    config = [*TINY, f"data.data_dir={listops_dir}", "logger=none", "+trainer.limit_test_batches=2"]
    unbroken, timed = tmp_path / "unbroken", tmp_path / "timed"
    reference = train(compose(*config, f"paths.output_dir={unbroken}"))

    limited = [*config, f"paths.output_dir={timed}", "trainer.max_time=00:00:00:09"]
    fake_clock(monkeypatch)
    stopped = train(compose(*limited))
    assert stopped.steps == 9 and not stopped.finished and stopped.planned_steps == 12
    assert [row["epoch"] for row in stopped.history] == [0]  # no validation, epoch 1 not closed
    resume_point = timed / "checkpoints" / "step-00000009.ckpt"
    assert resume_problem(resume_point) is None and torch.load(resume_point, weights_only=True)["epoch"] == 1
    assert json.loads((timed / "results.json").read_text())["finished"] is False

    fake_clock(monkeypatch)
    resumed = train(compose(*limited, f"resume={timed}"))
    assert resumed.steps == 12 and resumed.finished
    assert_same_end(timed, unbroken)
    assert resumed.metrics == reference.metrics and resumed.history == reference.history


def test_an_mqar_run_drawing_fresh_training_data_resumes_mid_epoch_to_the_result_of_an_unbroken_one(
    tmp_path, monkeypatch
):
    """data.fresh_train_data draws each epoch's set when Lightning asks for the epoch's loader: the resumed epoch 1
    must serve epoch 1's set from its tenth batch on, not epoch 0's or a new one."""
    config = [
        "experiment=mqar/attention",
        "model.d_model=16",
        "data.seq_len=64",
        "data.num_kv_pairs=4",
        "data.batch_size=16",
        "data.train_examples=96",  # 6 steps an epoch
        "data.test_examples=32",
        "data.fresh_train_data=true",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        "trainer.max_epochs=2",
        "callbacks.step.every_n_train_steps=2",
        "~callbacks.progress",
        "logger=none",
    ]
    unbroken, timed = tmp_path / "unbroken", tmp_path / "timed"
    reference = train(compose(*config, f"paths.output_dir={unbroken}"))
    limited = [*config, f"paths.output_dir={timed}", "trainer.max_time=00:00:00:09"]
    fake_clock(monkeypatch)
    stopped = train(compose(*limited))
    assert stopped.steps == 9 and not stopped.finished
    fake_clock(monkeypatch)
    resumed = train(compose(*limited, f"resume={timed}"))
    assert resumed.steps == 12 and resumed.finished
    assert_same_end(timed, unbroken)
    assert resumed.history == reference.history


def fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock that advances one second per reading (at the fit's start and after each optimiser step)."""
    ticks = iter(range(1000))
    monkeypatch.setattr(
        "hgrn.training.callbacks.time",
        SimpleNamespace(monotonic=lambda: float(next(ticks)), perf_counter=time.perf_counter),
    )


def assert_same_end(resumed: Path, unbroken: Path) -> None:
    """Weights, optimiser state and schedule at step 12 (the end of training) bitwise equal."""
    final = "checkpoints/step-00000012.ckpt"
    ours, theirs = (torch.load(d / final, weights_only=True) for d in (resumed, unbroken))
    for key in ("state_dict", "optimizer_states", "lr_schedulers"):
        assert_same(ours[key], theirs[key], key)


def test_a_time_limit_is_checked_before_training(make_config, tmp_path):
    with pytest.raises(ConfigError, match=r"trainer: max_time='4h': give DD:HH:MM:SS"):
        build_trainer(make_config("experiment=demo", "trainer.max_time=4h"), [StepCheckpoint(tmp_path)], [])
    with pytest.raises(ConfigError, match=r"^trainer: max_time needs callbacks\.step"):
        build_trainer(make_config("experiment=demo", "trainer.max_time=00:01:00:00"), [], [])


def test_a_truncated_newest_checkpoint_is_skipped_for_the_one_before(make_config, listops_dir, tmp_path):
    config = [*TINY, f"data.data_dir={listops_dir}", "trainer.max_epochs=1", "trainer.limit_train_batches=4"]
    train(make_config(*config))
    checkpoints = tmp_path / "checkpoints"
    newest = checkpoints / "step-00000004.ckpt"
    newest.write_bytes(newest.read_bytes()[:1000])  # as a copy or a full disk leaves it
    os.utime(newest)  # and the newest by time
    with pytest.warns(UserWarning, match=r"skipping .*step-00000004.ckpt: it does not load"):
        found = checkpoint_to_resume(make_config(*config, "resume=auto"), tmp_path)
    assert found is not None and torch.load(found, weights_only=True)["global_step"] == 4
    assert Path(found).name != newest.name

    resumed = train(make_config(*config, "trainer.max_epochs=2", "resume=auto"))
    assert resumed.steps == 8 and [row["epoch"] for row in resumed.history] == [0, 1]


def test_auto_finds_the_run_that_checkpointed_last(tmp_path):
    runs = tmp_path / "outputs" / "demo"
    fresh = runs / "2026-01-03_00-00-00"
    assert run_to_resume("auto", fresh) == fresh  # nothing to resume: a new run
    for name in ("2026-01-02_00-00-00", "2026-01-01_00-00-00"):  # the older run checkpointed last
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "checkpoints" / "last.ckpt").write_bytes(b"")
        time.sleep(0.01)
    assert run_to_resume("auto", fresh) == runs / "2026-01-01_00-00-00"
    assert run_to_resume(str(runs / "2026-01-02_00-00-00"), fresh) == runs / "2026-01-02_00-00-00"
    with pytest.raises(ConfigError, match="is not a run directory"):
        run_to_resume(str(tmp_path / "absent"), fresh)


def test_resume_with_nothing_to_resume(make_config, tmp_path):
    assert checkpoint_to_resume(make_config("experiment=demo", "resume=auto"), tmp_path) is None
    with pytest.raises(ConfigError, match="no checkpoint"):
        checkpoint_to_resume(make_config("experiment=demo", f"resume={tmp_path}"), tmp_path)
    with pytest.raises(ConfigError, match="both given"):
        checkpoint_to_resume(make_config("experiment=demo", "resume=auto", f"ckpt_path={__file__}"), tmp_path)
    with pytest.raises(ConfigError, match=r"leave hydra\.run\.dir"):
        checkpoint_to_resume(make_config("experiment=demo", f"resume={tmp_path.parent}"), tmp_path)


def test_a_resumed_run_logs_into_the_same_wandb_run(make_config, tmp_path):
    first = make_config("experiment=demo", logger="wandb")
    pin_wandb_run(first, tmp_path)
    again = make_config("experiment=demo", "resume=auto", logger="wandb")
    pin_wandb_run(again, tmp_path)
    assert first.logger.wandb.id == again.logger.wandb.id == (tmp_path / WANDB_ID_FILE).read_text().strip()
    assert again.logger.wandb.resume == "allow"
    check_config(again)


def test_a_resume_with_other_overrides_is_pointed_out(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- experiment=demo\n- model.d_model=16\n")
    assert changed_overrides(tmp_path, ["experiment=demo", "model.d_model=16", "resume=auto"]) == set()
    assert changed_overrides(tmp_path, ["experiment=demo", "resume=auto"]) == {"model.d_model=16"}
