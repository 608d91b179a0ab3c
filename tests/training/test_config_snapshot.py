"""Every experiment resolves to the config it had before the architecture refactor (commit 328a5a8), so moving
recipes, renaming and regrouping configs cannot change what a paper-table run trains.

The snapshot (snapshots/experiments-resolved.json) was written by composing each experiment at that commit with
`paths.output_dir=RUN_DIR paths.data_dir=DATA_DIR` and WANDB_MODE=disabled, and resolving it. The refactor's
deliberate changes are listed here, and nothing else may differ; a later change to a recipe updates the snapshot in
the same commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hgrn.config import compose, group_options

SNAPSHOT = json.loads((Path(__file__).parent / "snapshots" / "experiments-resolved.json").read_text())
# The refactor's renames: the attention baseline has one name everywhere; ListOps moved into hgrn.data.lra.
RENAMED_EXPERIMENTS = {"lra/transformer/": "lra/attention/", "mqar/transformer": "mqar/attention"}
RENAMED_TARGETS = {"hgrn.data.listops.ListOpsDataModule": "hgrn.data.lra.listops.ListOpsDataModule"}
ADDED_GROUPS = {"callbacks"}  # were built in code before; now a config group
ADDED_KEYS = {"resume": None}  # added after the refactor: resume=auto|<run dir> (hgrn.training.resume)
# Trainer keys added after the refactor, alike in every experiment: the datamodules shard every split themselves
# (hgrn.data.sampler, not Lightning's DistributedSampler), checkpoint files are written atomically, and num_nodes
# can be set for several hosts.
ADDED_TRAINER_KEYS = {
    "num_nodes": 1,
    "use_distributed_sampler": False,
    "plugins": [{"_target_": "hgrn.training.resume.AtomicCheckpointIO"}],
}


def renamed(name: str) -> str:
    for old, new in RENAMED_EXPERIMENTS.items():
        name = name.replace(old, new)
    return name


def before_refactor(experiment: str) -> dict:
    config = json.loads(json.dumps(SNAPSHOT[experiment]))
    config["name"] = config["logger"]["wandb"]["name"] = renamed(config["name"])
    config["data"]["_target_"] = RENAMED_TARGETS.get(config["data"]["_target_"], config["data"]["_target_"])
    return config


def test_the_experiments_are_those_of_the_snapshot():
    assert sorted(renamed(e) for e in SNAPSHOT) == group_options("experiment")


@pytest.mark.parametrize("experiment", sorted(SNAPSHOT))
def test_experiment_resolves_as_before_the_refactor(experiment, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # as when the snapshot was taken (`make` exports offline)
    cfg = compose(f"experiment={renamed(experiment)}", "paths.output_dir=RUN_DIR", "paths.data_dir=DATA_DIR")
    now = OmegaConf.to_container(cfg, resolve=True)
    assert set(now) - set(SNAPSHOT[experiment]) == ADDED_GROUPS | set(ADDED_KEYS)
    assert {k: now.pop(k) for k in ADDED_KEYS} == ADDED_KEYS
    assert {k: now["trainer"].pop(k) for k in ADDED_TRAINER_KEYS} == ADDED_TRAINER_KEYS
    assert {k: v for k, v in now.items() if k not in ADDED_GROUPS} == before_refactor(experiment)
