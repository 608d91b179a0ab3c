"""Where a run ran: package versions, git commit, hardware. Recorded in every results.json."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = (
    "hgrn",
    "torch",
    "triton",
    "lightning",
    "hydra-core",
    "timm",
    "wandb",
    "datasets",
    "lm-eval",
    "torchmetrics",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_state(directory: Path | str = ".") -> dict[str, Any]:
    """The commit and whether the tree had uncommitted changes; None fields outside a git checkout."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info.update(accelerator="cuda", device=torch.cuda.get_device_name(), device_count=torch.cuda.device_count())
    else:
        info.update(accelerator="cpu", device=platform.processor() or platform.machine(), device_count=1)
    return info


def peak_memory_bytes() -> int:
    """Peak GPU memory allocated by torch on CUDA; the process's peak resident memory otherwise."""
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
