"""The LRA task registry (the Hydra group conf/data/lra) and the interface every task's datamodule shares."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.utils import get_class

from hgrn.data.lra.image import CIFAR10DataModule
from hgrn.data.lra.listops import ListOpsDataModule
from hgrn.data.lra.pathfinder import PathfinderDataModule, PathXDataModule
from hgrn.data.lra.retrieval import AANDataModule
from hgrn.data.lra.text import IMDbDataModule

LRA_CONF = Path(__file__).resolve().parents[2] / "conf" / "data" / "lra"
EXPECTED = {
    "listops": ListOpsDataModule,
    "text": IMDbDataModule,
    "retrieval": AANDataModule,
    "image": CIFAR10DataModule,
    "pathfinder": PathfinderDataModule,
    "pathx": PathXDataModule,
}


def datamodule_class(task: str) -> type:
    """The class a task's config builds: its `_target_`, imported as Hydra imports it."""
    target = yaml.safe_load((LRA_CONF / f"{task}.yaml").read_text())["_target_"]
    return get_class(target)


def test_registry_maps_the_six_task_names_to_datamodules() -> None:
    assert sorted(path.stem for path in LRA_CONF.glob("*.yaml")) == sorted(EXPECTED)
    assert {task: datamodule_class(task) for task in EXPECTED} == EXPECTED


def test_importing_the_package_loads_no_task_module() -> None:
    code = "import sys, hgrn.data.lra; print(sorted(m for m in sys.modules if m.startswith('hgrn.data')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['hgrn.data', 'hgrn.data.lra']"


@pytest.mark.parametrize(
    ("task", "kwargs", "expected"),
    [
        ("listops", {}, (10, 18, None, 2048)),
        ("text", {}, (2, 258, None, 4096)),
        ("retrieval", {}, (2, 258, None, 4000)),
        ("image", {}, (10, 257, None, 1024)),
        ("image", {"grayscale": False, "augment": True}, (10, None, 3, 1024)),
        ("pathfinder", {}, (2, 257, None, 1024)),
        ("pathx", {}, (2, 257, None, 16384)),
    ],
)
def test_model_facing_properties_need_no_data(task: str, kwargs: dict, expected: tuple, tmp_path: Path) -> None:
    module = datamodule_class(task)(tmp_path / "absent", batch_size=8, num_workers=0, pin_memory=False, **kwargs)
    assert (module.num_classes, module.vocab_size, module.input_dim, module.max_length) == expected
