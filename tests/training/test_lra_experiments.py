"""Every LRA experiment (each model x task, the papers' recipes) trains one step on CPU on the release-format
fixtures, with the recipe's architecture unchanged (only the batch size and the device are overridden)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from hgrn.training.run import train
from tests.training.conftest import EXPERIMENTS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lra"
TASK_DATA = {
    "listops": "listops",
    "text": "text/imdb",
    "retrieval": "retrieval/aan",
    "image": "image/cifar10",
    "pathfinder": "pathfinder/pathfinder32",
    "pathx": "pathx/pathfinder128",
}
CACHED = {"text", "retrieval", "pathfinder", "pathx"}  # tasks whose loaders take a cache_dir
LRA = [e for e in EXPERIMENTS if e.startswith("lra/")]
# Softmax attention over Path-X's 16384 tokens takes minutes on a CPU (and the LRA table has no Transformer entry
# for Path-X): that one runs with the slow tests.
SLOW = {"lra/attention/pathx"}


def test_every_model_has_every_task():
    assert len(LRA) == 4 * 6
    assert {e.split("/")[1] for e in LRA} == {"hgrn1", "hgrn2", "gla", "attention"}


@pytest.mark.parametrize(
    ("model", "direction"),
    [("hgrn2", "2d_series"), ("gla", "2d_series"), ("attention", "2d_series"), ("hgrn1", "2d")],
)
def test_pathx_scans_the_grid_as_each_official_recipe(model, direction, make_config):
    """HGRN2's Path-X run sets use_series=True (Hgru2_2d_series); HGRN1's own recipe uses the parallel Hgru2d."""
    cfg = make_config(f"experiment=lra/{model}/pathx")
    assert cfg.model.direction == direction
    assert list(cfg.model.grid) == [128, 128]


@pytest.mark.parametrize(("model", "total"), [("hgrn2", 256), ("gla", 256), ("attention", 256), ("hgrn1", 16)])
@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_pathx_total_batch_is_the_recipes_on_any_gpu_count(model, total, gpus, make_config):
    """HGRN2's 256 x 16384 tokens: micro-batches of 32 per GPU (the official 8 x 32), accumulated to 256."""
    cfg = make_config(f"experiment=lra/{model}/pathx", f"trainer.devices={gpus}")
    assert cfg.data.batch_size * gpus * cfg.trainer.accumulate_grad_batches == total
    if total == 256:
        assert cfg.data.batch_size == 32


@pytest.mark.parametrize("experiment", [pytest.param(e, marks=pytest.mark.slow) if e in SLOW else e for e in LRA])
def test_lra_experiment_runs_on_fixtures(experiment, make_config, tmp_path):
    task = experiment.split("/")[-1]
    data_dir = shutil.copytree(FIXTURES / TASK_DATA[task], tmp_path / "data")  # loaders may cache beside the data
    overrides = [
        f"experiment={experiment}",
        "trainer=cpu",
        "trainer.fast_dev_run=true",
        f"data.data_dir={data_dir}",
        "data.batch_size=2",
        "data.num_workers=0",
    ]
    if task in CACHED:
        overrides.append(f"+data.cache_dir={tmp_path / 'cache'}")
    if task == "pathx":  # 16,384 tokens per image: one layer keeps the CPU reference scans to seconds
        overrides.append("model.n_layers=1")
    result = train(make_config(*overrides))
    assert result.experiment == experiment
    assert 0.0 <= result.metrics["test/acc"] <= 1.0


@pytest.mark.parametrize(("devices", "nodes", "per_device"), [(1, 1, 128), (8, 1, 16), (8, 2, 8), (4, 4, 8)])
def test_a_recipes_total_batch_is_split_over_every_process(devices, nodes, per_device, make_config):
    cfg = make_config("experiment=lra/hgrn2/listops", f"trainer.devices={devices}", f"trainer.num_nodes={nodes}")
    assert cfg.data.batch_size == per_device


def test_a_total_batch_that_the_processes_do_not_divide_is_refused(make_config):
    from hgrn.config import ConfigError
    from hgrn.training.config_check import check_config

    with pytest.raises(ConfigError, match=r"cannot split 128 evenly over 6 processes"):
        check_config(make_config("experiment=lra/hgrn2/listops", "trainer.devices=3", "trainer.num_nodes=2"))


def _listops_tasks(make_config, device: str = "cpu") -> dict:
    """The ListOps recipe's task eager (False) and with task.compile=parts, from the same initial weights."""
    from hgrn.training.build import build_datamodule, build_task

    tasks = {}
    for flag in (False, "parts"):
        data = f"data.data_dir={FIXTURES / 'listops'}"
        cfg = make_config("experiment=lra/hgrn2/listops", data, f"task.compile={flag}")
        torch.manual_seed(0)
        tasks[flag] = build_task(cfg, build_datamodule(cfg)).to(device)
    return tasks


def test_compile_wraps_the_norms_and_glus_in_place(make_config):
    """task.compile=parts: the backbone's batch norms and GLUs compiled in place, the token mixers eager, parameter
    names (checkpoints, resume) those of the eager model."""
    tasks = _listops_tasks(make_config)
    assert [n for n, _ in tasks[False].named_parameters()] == [n for n, _ in tasks["parts"].named_parameters()]
    block = tasks["parts"].model.backbone.blocks[0]
    assert block.mixer_norm._compiled_call_impl is not None and block.glu._compiled_call_impl is not None
    assert block.mixer._compiled_call_impl is None
    assert tasks[False].model.backbone.blocks[0].glu._compiled_call_impl is None


def test_compiled_listops_step_matches_the_eager_one(make_config):
    """The compiled norms and GLUs give the eager model's loss and gradients, at two padded lengths (the second
    recompiles with a dynamic length). On the CPU in fp32 (Inductor's C++ backend), in training mode."""
    tasks = _listops_tasks(make_config)
    for length in (30, 47):
        inputs = torch.randint(3, 18, (4, length))
        batch = {"inputs": inputs, "mask": torch.ones_like(inputs, dtype=torch.bool), "labels": torch.arange(4)}
        results = []
        for task in tasks.values():
            task.zero_grad()
            torch.manual_seed(1)  # the same position dropout in both
            loss = task.shared_step(batch, "train")
            loss.backward()
            results.append((loss.detach(), [p.grad for p in task.parameters()]))
        torch.testing.assert_close(results[1][0], results[0][0])
        # biases in front of a batch norm have a true gradient of 0: compare against the largest gradient
        scale = max(g.abs().max() for g in results[0][1])
        for compiled, eager in zip(results[1][1], results[0][1], strict=True):
            torch.testing.assert_close(compiled / scale, eager / scale, rtol=0, atol=1e-5)
