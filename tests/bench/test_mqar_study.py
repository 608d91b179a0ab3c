"""The MQAR study's cost benchmark runs real trainings side by side (here two tiny ones on the CPU) and turns their
steps/s into the study's hours."""

from __future__ import annotations

import contextlib
import json
import math

import pytest

from hgrn.bench import mqar_study


def test_two_runs_side_by_side_give_the_study_hours(tmp_path):
    argv = ["--trainer", "cpu", "--models", "hgrn2", "--pairs", "64:4", "--d-model", "16", "--steps", "6",
            "--warmup", "2", "--concurrent", "2", "--lrs", "2", "--cells", "5", "--profile",
            "--work", str(tmp_path / "runs"), "--out", str(tmp_path), "--", "data.batch_size=16",
            "data.train_examples=320", "data.test_examples=32", "data.vocab_size=128"]  # fmt: skip
    mqar_study.main(argv)
    (written,) = tmp_path.glob("mqar-study-*.json")
    (row,) = json.loads(written.read_text())["rows"]
    assert "error" not in row, row
    assert row["overrides"][-1] == "model.mixer_options.expand_ratio=16"  # Zoology's min(d_model, 128)
    assert row["steps_per_run"] == 64 * math.ceil(320 / 16)  # the recipe's 64 epochs
    assert len(row["per_run_steps_per_s"]) == 2 and row["steps_per_s"] == pytest.approx(sum(row["per_run_steps_per_s"]))
    assert row["study_gpu_hours"] == pytest.approx(row["steps_per_run"] * 2 * 5 / row["steps_per_s"] / 3600)
    text = written.with_suffix(".md").read_text()
    assert "| hgrn2 | 64:4 | 16 | false | 2 |" in text and "## hgrn2 64:4 d 16 compile=false: bare step" in text


def test_a_failed_run_is_reported_with_its_log(tmp_path):
    work = ["--work", str(tmp_path / "runs"), "--out", str(tmp_path)]
    argv = ["--trainer", "cpu", "--models", "attention", "--pairs", "64:4", "--d-model", "16", "--steps", "4",
            "--warmup", "1", *work, "--", "data.vocab_size=64"]  # fmt: skip
    mqar_study.main(argv)
    (row,) = json.loads(next(tmp_path.glob("mqar-study-*.json")).read_text())["rows"]
    assert "vocab_size must exceed seq_len=64" in row["error"] and ".log)" in row["error"]


def test_a_malformed_pair_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        mqar_study.parse_args(["--pairs", "256-16"])
    assert "--pairs 256-16: write each as seq_len:num_kv_pairs" in capsys.readouterr().err


def test_no_runs_side_by_side_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        mqar_study.parse_args(["--concurrent", "0", "2"])
    assert "--concurrent 0 2: each must be at least 1" in capsys.readouterr().err


def test_mps_wraps_the_runs_side_by_side_and_labels_their_row(tmp_path, monkeypatch):
    events = []

    @contextlib.contextmanager
    def daemon(root, enabled):
        events.append("start" if enabled else "not enabled")
        yield
        events.append("quit")

    monkeypatch.setattr(mqar_study, "mps_daemon", daemon)
    monkeypatch.setattr(mqar_study, "run_training", lambda command, run_dir: events.append("run"))
    monkeypatch.setattr(mqar_study, "summarise", lambda run_dir, warmup: {"steps_per_s": 10.0})
    argv = ["--trainer", "cpu", "--models", "attention", "--pairs", "64:4", "--d-model", "16", "--steps", "4",
            "--warmup", "1", "--concurrent", "2", "--mps", "--work", str(tmp_path), "--out", str(tmp_path)]  # fmt: skip
    mqar_study.main(argv)
    assert events == ["start", "run", "run", "quit"]
    (written,) = tmp_path.glob("mqar-study-*.md")
    assert "| attention | 64:4 | 16 | false | 2 (MPS) | 10.0, 10.0 | 20.0 |" in written.read_text()


def test_mps_with_the_profile_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        mqar_study.parse_args(["--mps", "--profile"])
    assert "--mps with --profile" in capsys.readouterr().err
