"""Bad input gets one line and loses nothing: each case a new user hit has its own test with the exact message, the
command line says it in one line and leaves no run directory, and a fuzz over the override grammar never gets past
the checks with anything but a ConfigError."""

from __future__ import annotations

import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hgrn.config import ConfigError, compose
from hgrn.training.build import build_callbacks, build_datamodule, build_loggers, build_task, build_trainer
from hgrn.training.config_check import check_config, check_hardware

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=abc", r"^optim.lr='abc' (has the wrong type|must be a number > 0)"),
        ("optim.lr=-1", r"^optim.lr=-1 must be a number > 0$"),
        ("data.batch_size=0", r"^data.batch_size=0 must be a whole number >= 1$"),
        ("data.batch_size=-1", r"^data.batch_size=-1 must be a whole number >= 1$"),
        ("seed=abc", r"^seed='abc' must be a whole number >= 0$"),
        ("model.mixer=foo", r"^model: mixer='foo' is not a known token mixer; choose one of"),
        ("ckpt_path=/absent/last.ckpt", r"^ckpt_path=/absent/last.ckpt is not a file; give a run's checkpoints/last"),
    ],
)
def test_each_bad_value_is_one_line_naming_the_key(override, message, make_config):
    with pytest.raises(ConfigError, match=message) as caught:
        check_config(make_config("experiment=demo", override))
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_a_gpu_recipe_on_a_cpu_machine_says_trainer_cpu(make_config):
    with pytest.raises(
        ConfigError, match=r"needs a CUDA GPU and this machine has none; run on the CPU with trainer=cpu"
    ):
        check_hardware(make_config("experiment=lra/hgrn2/listops"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "trainer.limit_test_batches=2",
            r"Could not override 'trainer.limit_test_batches'. To append .* use \+trainer",
        ),
        ("data.batch_size=[1", r"an override does not parse \(.*\); write key=value"),
        ("model=lm/absent", r"Could not find 'model/lm/absent'"),
    ],
)
def test_overrides_that_do_not_compose_are_one_line(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as caught:
        compose("experiment=demo", override, f"paths.output_dir={tmp_path}")
    assert "\n" not in str(caught.value)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_a_failed_start_prints_one_line_and_leaves_no_run_directory(tmp_path):
    """Missing data is found after the loggers started (an offline W&B run included): all of it is removed."""
    run = run_cli("hgrn.train", "experiment=demo", f"paths.data_dir={tmp_path / 'absent'}", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ListOps split not found" in errors[0], run.stderr
    assert "wandb sync" not in run.stdout + run.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_bad_override_on_the_command_line_is_refused_before_hydra_starts(tmp_path):
    run = run_cli("hgrn.train", "experiment=demo", "optim.lr=-1", cwd=tmp_path)
    assert (run.returncode, run.stderr.strip()) == (2, "error: optim.lr=-1 must be a number > 0")
    assert not (tmp_path / "outputs").exists()


def test_the_package_carries_its_configs(tmp_path):
    """`pip install .` (not editable) then `hgrn-train experiment=demo` from any directory needs conf/ inside."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("hgrn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    in_repo = {f"hgrn/conf/{p.relative_to(ROOT / 'conf')}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert in_repo and in_repo <= names


def test_make_names_the_python_it_needs(tmp_path):
    run = subprocess.run(
        ["make", "-C", str(ROOT), "-W", "requirements.txt", ".venv/.installed", "PYTHON=/bin/false"],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "error: this needs Python >= 3.11 and found '/bin/false'; install one or run make PYTHON=" in run.stderr


VALUES = ["abc", "-1", "0", "1e9", "", "[1", "[1,2]", "{a: 1}", "null", "true", "1.5", "${nope}", "é", "-0.5", "3"]


def leaf_keys(cfg) -> list[str]:
    container = OmegaConf.to_container(cfg, resolve=False)
    keys = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            elif key != "_target_":
                keys.append(f"{prefix}{key}")

    walk(container, "")
    return keys


def test_fuzz_the_override_grammar(make_config, capsys):
    """Random keys of the demo config (and unknown ones) with random values: every outcome is a config that checks,
    or one ConfigError line; never another exception."""
    rng = random.Random(0)
    keys = [k for k in leaf_keys(make_config("experiment=demo")) if not k.startswith("paths.")]
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(150):
        key = rng.choice([*keys, "model.depth", "optim.momentum", "nope"])
        prefix = rng.choice(["", "", "", "+", "~"])
        override = f"{prefix}{key}" if prefix == "~" else f"{prefix}{key}={rng.choice(VALUES)}"
        try:
            cfg = make_config("experiment=demo", override)
            check_config(cfg)
            build_task(cfg, build_datamodule(cfg))  # what passes the checks builds, or says why in one line
            loggers = build_loggers(cfg)
            build_trainer(cfg, build_callbacks(cfg, loggers), loggers)
            outcomes["accepted"] += 1
        except ConfigError as error:
            assert "\n" not in str(error), (override, str(error))
            outcomes["refused"] += 1
    with capsys.disabled():
        print(f"\noverride fuzz: {sum(outcomes.values())} cases, {outcomes}")
    assert outcomes["refused"] > 50
