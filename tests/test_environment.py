"""environment.yml (conda users) and requirements.txt (the Makefile's venv, CI) must describe the same stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def conda_environment() -> tuple[list[str], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return conda, pip


def test_environment_yml_mirrors_requirements_txt():
    conda, pip = conda_environment()
    assert "python=3.11" in conda
    assert [p for p in pip if p != "-e ."] == requirement_lines(ROOT / "requirements.txt")
    assert "-e ." in pip
    pinned = {line.split("==")[0] for line in pip if "==" in line}
    assert {"torch", "torchvision", "lightning", "hydra-core", "wandb", "timm", "datasets", "lm-eval"} <= pinned


def test_environment_yml_pip_requirements_resolve(tmp_path):
    """A dry run of pip over environment.yml's pip section: the pins exist and are mutually compatible."""
    _, pip = conda_environment()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(p for p in pip if p != "-e .") + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "-r", str(requirements)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
