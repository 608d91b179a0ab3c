"""Fixtures for pipeline tests: composed configs and a small generated ListOps set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from hgrn.config import compose, group_options
from hgrn.data.lra.listops_generate import GeneratorSettings, write_splits

EXPERIMENTS = group_options("experiment")
TINY_MQAR = [
    "data.vocab_size=64",
    "data.seq_len=32",
    "data.num_kv_pairs=4",
    "data.train_examples=256",
    "data.test_examples=64",
    "data.batch_size=32",
]


@pytest.fixture(scope="session")
def listops_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4000/200/200 ListOps expressions of depth <= 3 and 5-80 tokens (as `make demo`), in the release format."""
    out = tmp_path_factory.mktemp("listops")
    settings = GeneratorSettings(min_length=5, max_length=80, max_depth=3)
    write_splits(out, {"train": 4000, "val": 200, "test": 200}, seed=0, settings=settings, workers=1)
    return out


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose `train.yaml` with overrides; the run directory is the test's tmp_path, logging goes to CSV."""

    def make(*overrides: str, logger: str = "csv") -> DictConfig:
        return compose(f"paths.output_dir={tmp_path}", f"logger={logger}", *overrides)

    return make
