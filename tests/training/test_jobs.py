"""python -m hgrn.jobs: a list of trainings in sweep syntax, run N at a time in directories of their own; a call that
stops them by their time limit leaves them to be resumed by the next call, and finished ones are not run again."""

from __future__ import annotations

import json
import os

import pytest

from hgrn import jobs
from hgrn.training.callbacks import duration_seconds


def test_a_line_is_the_product_of_its_sweeps_and_a_file_lists_each_job_once(tmp_path):
    assert jobs.expand("experiment=demo optim.lr=1e-3,1e-2 seed=1,2 ~callbacks.progress") == [
        ["experiment=demo", f"optim.lr={lr}", f"seed={seed}", "~callbacks.progress"]
        for lr in ("0.001", "0.01")
        for seed in (1, 2)
    ]
    assert jobs.expand("experiment=demo '+callbacks.x={_target_: a.B, p: 1}' seed=1,2")[1] == [
        "experiment=demo", "+callbacks.x={_target_: a.B, p: 1}", "seed=2"
    ]  # fmt: skip
    listed = tmp_path / "jobs.txt"
    listed.write_text("# the study\nexperiment=demo seed=1,2\n\nexperiment=demo seed=2  # again\n")
    assert jobs.read_jobs(listed) == [["experiment=demo", "seed=1"], ["experiment=demo", "seed=2"]]
    assert jobs.job_dir(tmp_path, ["experiment=mqar/hgrn2", "optim.lr=0.001"]).name == (
        "experiment-mqar-hgrn2_optim.lr-0.001"
    )
    long = [f"data.data_dir={tmp_path}", *(f"model.option_{i}=1" for i in range(20))]
    names = {jobs.job_dir(tmp_path, [*long, f"seed={seed}"]).name for seed in (1, 2)}
    assert len(names) == 2 and all(len(name) <= 120 and name.startswith("data.data_dir") for name in names)


def test_jobs_stopped_by_their_time_limit_are_resumed_by_the_next_call_and_then_left_alone(listops_dir, tmp_path):
    line = (
        f"experiment=demo data.data_dir={listops_dir} data.num_workers=0 model.d_model=16 model.n_layers=1 "
        "trainer.limit_train_batches=6 trainer.limit_val_batches=1 +trainer.limit_test_batches=1 "
        "trainer.max_epochs=20 logger=none ~callbacks.progress seed=1,2"
    )
    (tmp_path / "jobs.txt").write_text(line + "\n")
    call = [str(tmp_path / "jobs.txt"), "--work", str(tmp_path / "runs"), "--concurrent", "2"]

    jobs.main([*call, "--max-time", "00:00:00:01"])  # 120 steps each: a second of fitting stops them
    dirs = sorted(path for path in (tmp_path / "runs").iterdir() if path.is_dir())
    assert [f"seed-{seed}" in d.name for d, seed in zip(dirs, (1, 2), strict=True)] == [True, True]
    first = [json.loads((d / "results.json").read_text()) for d in dirs]
    assert [record["finished"] for record in first] == [False, False]
    assert all(jobs.state(d) == "resume" for d in dirs)

    jobs.main(call)
    second = [json.loads((d / "results.json").read_text()) for d in dirs]
    assert [(record["finished"], record["steps"]) for record in second] == [(True, 120), (True, 120)]
    assert all(f"resume={d}" in (d / ".hydra" / "overrides.yaml").read_text() for d in dirs)  # resumed in place
    assert all(jobs.state(d) == "done" for d in dirs)

    jobs.main(call)  # nothing left to run: the runs are not touched
    assert [json.loads((d / "results.json").read_text()) for d in dirs] == second


def test_end_shortens_the_stretches_that_start_late_and_starts_none_after_it(tmp_path, monkeypatch, capsys):
    assert jobs.stretch_limit("00:00:16:00", float("inf")) == "00:00:16:00"
    assert jobs.stretch_limit("00:00:16:00", 300.7) == "00:00:05:00"
    assert jobs.stretch_limit("00:00:02:00", 300.7) == "00:00:02:00"
    assert jobs.stretch_limit(None, 2 * 86400 + 3723.2) == "02:01:02:03"
    assert jobs.stretch_limit(None, float("inf")) is None
    (tmp_path / "jobs.txt").write_text("experiment=demo seed=1,2\n")
    call = [str(tmp_path / "jobs.txt"), "--work", str(tmp_path / "runs"), "--max-time", "00:00:16:00"]
    limits = []
    monkeypatch.setattr(jobs, "run", lambda job, run_dir, max_time, resume: limits.append(max_time) or "done")
    jobs.main([*call, "--end", "600"])
    assert len(limits) == 2 and all(590 <= duration_seconds(limit) <= 600 for limit in limits)
    jobs.main([*call, "--end", "0"])
    assert len(limits) == 2 and "2 not started (deadline)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        jobs.main([*call[:-1], "16:00"])
    assert "--max-time: max_time='16:00': give DD:HH:MM:SS" in capsys.readouterr().err


def test_a_failed_job_is_left_until_asked_to_retry(tmp_path, capsys):
    (tmp_path / "jobs.txt").write_text("experiment=demo data.batch_size=0\n")  # a config error: exit status 2
    call = [str(tmp_path / "jobs.txt"), "--work", str(tmp_path / "runs")]
    with pytest.raises(SystemExit):
        jobs.main(call)
    (note,) = (tmp_path / "runs").glob("*.failed")
    assert note.read_text().startswith("exit status 2; its output is in ")
    assert "data.batch_size" in note.with_suffix(".log").read_text()
    jobs.main(call)  # not run again
    assert "1 jobs: 0 done, 1 failed before (--retry-failed runs them again), 0 to run" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        jobs.main([*call, "--retry-failed"])
    assert "1 failed (exit status 2)" in capsys.readouterr().out


def test_a_missing_job_file_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        jobs.main([str(tmp_path / "nope.txt"), "--work", str(tmp_path)])
    assert "nope.txt: no such file; write one line of python -m hgrn.train overrides per job" in capsys.readouterr().err


def test_mps_daemon_names_its_pipes_to_child_processes_and_quits_on_the_way_out(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    control = tmp_path / "bin" / "nvidia-cuda-mps-control"  # a stand-in that records how it was called
    control.parent.mkdir()
    control.write_text(f'#!/bin/sh\necho "$* [$(cat)] $CUDA_MPS_PIPE_DIRECTORY" >> {calls}\n')
    control.chmod(0o755)
    monkeypatch.setenv("PATH", f"{control.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    with pytest.raises(RuntimeError, match="inside"), jobs.mps_daemon(tmp_path / "work"):
        assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == str(tmp_path / "work" / "mps-pipe")
        assert (tmp_path / "work" / "mps-log").is_dir()
        raise RuntimeError("a failure inside still quits the daemon")
    pipes = tmp_path / "work" / "mps-pipe"
    assert calls.read_text().splitlines() == [f"-d [] {pipes}", f" [quit] {pipes}"]
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ


def test_mps_without_the_driver_tool_or_with_a_daemon_running_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="nvidia-cuda-mps-control is not on PATH"), jobs.mps_daemon(tmp_path):
        pass
    calls = tmp_path / "calls.txt"
    control = tmp_path / "nvidia-cuda-mps-control"  # -d fails, as when a daemon already serves these pipes
    control.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" != -d ]\n')
    control.chmod(0o755)
    with pytest.raises(SystemExit, match="already running"), jobs.mps_daemon(tmp_path / "work"):
        pass
    assert calls.read_text().splitlines() == ["-d"]  # the other daemon is not told to quit
    with jobs.mps_daemon(tmp_path / "off", enabled=False):  # without --mps: no tool called, nothing set or made
        assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ
    assert calls.read_text().splitlines() == ["-d"] and not (tmp_path / "off").exists()
