"""A job of a Hydra multirun, from the command line with W&B offline: its results.json holds the job's overrides,
and its offline W&B run sits where `wandb sync` takes it, grouped by the sweep and tagged with what the job changed.
(The tables never read W&B: hgrn.results reads results.json files only.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_sweep_job_records_its_overrides_and_is_one_wandb_group(listops_dir, tmp_path):
    overrides = [
        "experiment=demo",
        f"data.data_dir={listops_dir}",
        "data.num_workers=0",
        "model.d_model=16",
        "model.n_layers=1",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
        "optim.lr=0.002",
    ]
    sweep = tmp_path / "sweep_2026-12-02"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    command = [sys.executable, "-m", "hgrn.train", "-m", *overrides, f"hydra.sweep.dir={sweep}"]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-5000:]
    assert "anonymous setting" not in run.stdout + run.stderr  # hgrn.training.loggers.WandbLogger drops the argument

    job = sweep / "0"
    record = json.loads((job / "results.json").read_text())
    assert record["overrides"] == overrides and record["recipe"] is False and record["finished"] is True

    run_id = (job / "wandb_run_id").read_text().strip()
    (offline,) = (job / "wandb").glob(f"offline-run-*-{run_id}")  # `wandb sync <this folder>` uploads it
    tags = tags_of_group((offline / f"run-{run_id}.wandb").read_bytes(), "demo/sweep_2026-12-02")
    shown = [o for o in overrides if o.startswith(("model.", "trainer.", "+trainer.", "optim."))]
    assert tags == ["demo", "deviates", *shown]  # neither the data folder nor the workers: they change nothing


def tags_of_group(log: bytes, group: str) -> list[str]:
    """The tags of the run recorded with this group in an offline run's log (ValueError: no run of that group). In
    the protobuf record the group is field 6, then the name field 8 and each tag field 10, all short strings: key
    byte, length byte, bytes."""
    start = log.index(b"\x32" + bytes([len(group)]) + group.encode())
    position, tags = start + 2 + len(group), []
    while log[position] in (0x42, 0x52):  # field 8 (name) or 10 (a tag), wire type 2
        key, length = log[position], log[position + 1]
        value = log[position + 2 : position + 2 + length].decode()
        if key == 0x52:
            tags.append(value)
        position += 2 + length
    return tags
