"""lm-eval's own command line (`cli_evaluate`, through `python -m hgrn.eval.lm_eval`, which registers the adapter)
evaluates a checkpoint offline on the local task YAMLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from hgrn.eval.task_data import DATA_ENV
from hgrn.eval.tasks import TASKS_DIR


def test_lm_eval_command_line_evaluates_a_checkpoint_offline(lm_checkpoint, eval_data, tmp_path):
    command = [
        sys.executable,
        "-m",
        "hgrn.eval.lm_eval",
        "run",
        "--model",
        "hgrn",
        "--model_args",
        f"pretrained={lm_checkpoint}",
        "--device",
        "cpu",
        "--batch_size",
        "4",
        "--include_path",
        str(TASKS_DIR),
        "--tasks",
        "piqa",
        "--limit",
        "2",
        "--output_path",
        str(tmp_path / "out"),
    ]
    offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", DATA_ENV: str(eval_data)}
    done = subprocess.run(command, env={**os.environ, **offline}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    assert 0 <= results["piqa"]["acc,none"] <= 1 and 0 <= results["piqa"]["acc_norm,none"] <= 1
