"""The entry points: train and evaluate are thin CLIs over hgrn.training, recipes cannot run alone, callbacks are a
config group, and a checkpoint evaluates to the numbers its run reported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from hgrn.config import ConfigError, check_overrides, compose
from hgrn.training.build import build_callbacks, build_loggers
from hgrn.training.config_check import check_config
from hgrn.training.run import evaluate, train

SRC = Path(__file__).resolve().parents[2] / "src" / "hgrn"
TESTS = Path(__file__).resolve().parents[1]


def python_files() -> list[Path]:
    return sorted([*SRC.rglob("*.py"), *TESTS.rglob("*.py")])


def test_no_module_imports_the_command_line_entry_points():
    entry_import = re.compile(
        r"^\s*((from|import) hgrn\.(train|evaluate)\b|from hgrn import .*\b(train|evaluate)\b)", re.M
    )
    assert [path for path in python_files() if entry_import.search(path.read_text())] == []


def test_every_resolver_is_registered_once_in_the_config_module():
    registrations = {}
    for path in python_files():
        for name in re.findall(r"register_new_resolver\(\s*['\"](\w+)['\"]", path.read_text()):
            registrations.setdefault(name, []).append(path.relative_to(SRC.parents[1]))
    assert registrations == {"div": [Path("src/hgrn/config.py")], "lookup": [Path("src/hgrn/config.py")]}


def test_a_recipe_selected_as_an_experiment_is_refused_in_one_line():
    run = subprocess.run(
        [sys.executable, "-m", "hgrn.train", "experiment=lra/recipe/listops"], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: experiment=lra/recipe/listops is a recipe (conf/recipe/lra/listops.yaml), not an experiment; run one "
        "that adds a model to it, e.g. experiment=lra/attention/listops"
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("experiment=recipe/lra/text", r"is a recipe \(conf/recipe/lra/text.yaml\)"),
        ("+recipe=lra/listops", r"recipes \(conf/recipe/\) are parts of experiments, not runs"),
        ("recipe=mqar", r"recipes \(conf/recipe/\) are parts of experiments"),
        ("experiment=lra/hgrn2/listop", r"experiment=lra/hgrn2/listop does not exist; did you mean lra/hgrn2/listops"),
        ("experiment=demo,mqar/hgrn9", r"experiment=mqar/hgrn9 does not exist"),
    ],
)
def test_overrides_that_cannot_compose_a_run_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        check_overrides([override])


def test_valid_experiment_overrides_pass():
    check_overrides(["experiment=demo", "experiment=lra/hgrn2/listops,mqar/attention", "model.d_model=8"])


def test_callbacks_are_a_config_group(make_config, listops_dir):
    stop = "+callbacks.stop={_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val/acc, mode: max}"
    cfg = make_config("experiment=demo", stop)
    check_config(cfg)
    kinds = [type(c) for c in build_callbacks(cfg, loggers=[])]
    assert EarlyStopping in kinds and ModelCheckpoint in kinds
    assert LearningRateMonitor not in kinds  # Lightning refuses it without a logger
    assert LearningRateMonitor in [type(c) for c in build_callbacks(cfg, build_loggers(cfg))]
    with pytest.raises(ConfigError, match=r"callbacks.checkpoint.every is not an argument of .*ModelCheckpoint"):
        check_config(make_config("experiment=demo", "+callbacks.checkpoint.every=3"))
    with pytest.raises(ConfigError, match=r"callbacks.throughput \(ThroughputMonitor\) is needed"):
        train(make_config("experiment=demo", f"data.data_dir={listops_dir}", "~callbacks.throughput"))


def test_evaluate_reproduces_the_test_metrics_of_the_trained_checkpoint(make_config, listops_dir, tmp_path):
    data = [f"data.data_dir={listops_dir}", "data.num_workers=0", "trainer.limit_train_batches=8"]
    trained = train(make_config("experiment=demo", *data, "trainer.max_epochs=1", "trainer.limit_val_batches=4"))
    eval_dir = tmp_path / "eval"
    overrides = ["experiment=demo", *data, f"ckpt_path={trained.best_checkpoint}", f"paths.output_dir={eval_dir}"]
    record = evaluate(compose(*overrides, "logger=csv", config_name="eval"))
    assert record.metrics["test/acc"] == pytest.approx(trained.metrics["test/acc"])
    assert record.metrics["test/loss"] == pytest.approx(trained.metrics["test/loss"], rel=1e-5)
    assert record.parameters == trained.parameters
    assert (eval_dir / "evaluation.json").stat().st_mode & 0o777 == 0o644


def test_evaluate_needs_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path is required"):
        evaluate(compose("experiment=demo", f"paths.output_dir={tmp_path}", config_name="eval"))
    with pytest.raises(ConfigError, match=r"ckpt_path=.*absent.ckpt is not a file"):
        evaluate(compose("experiment=demo", f"paths.output_dir={tmp_path}", f"ckpt_path={tmp_path}/absent.ckpt",
                         config_name="eval"))  # fmt: skip
