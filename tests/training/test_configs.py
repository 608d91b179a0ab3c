"""Every experiment composes and builds; bad configs fail before any data is loaded, naming the key."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hgrn.config import ConfigError
from hgrn.training.build import build_datamodule, build_task
from hgrn.training.config_check import check_config
from tests.training.conftest import EXPERIMENTS


def test_there_are_experiments():
    assert {"demo", "mqar/hgrn2", "mqar/hgrn1", "mqar/gla", "mqar/attention"} <= set(EXPERIMENTS)


# Building a 1B-parameter model on the CPU takes 20-25 s each: those two run with -m slow (make test-gpu); CI still
# composes and builds every other experiment, the 150m / 370m Pile models of the same code among them.
BIG = {"lm/pile/hgrn1-1b", "lm/pile/hgrn2-1b"}


@pytest.mark.parametrize(
    "experiment", [pytest.param(e, marks=pytest.mark.slow) if e in BIG else e for e in EXPERIMENTS]
)
def test_experiment_composes_and_builds(experiment, make_config):
    cfg = make_config(f"experiment={experiment}", logger="wandb")
    check_config(cfg)
    task = build_task(cfg, build_datamodule(cfg))
    assert task.num_parameters() > 0
    assert all(instantiate(node) is not None for node in cfg.logger.values())
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert trainer_kwargs["_target_"] == "lightning.Trainer"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+learning_rate=0.1", r"unknown top-level config keys \['learning_rate'\]"),
        ("model.d_model=wide", r"model.d_model: Value 'wide' of type 'str' could not be converted to Integer"),
        ("+model.depth=3", r"model.depth"),
        ("+data.batch_sise=8", r"data.batch_sise is not an argument of hgrn.data.lra.listops.ListOpsDataModule"),
        ("data.batch_size=eight", r"data.batch_size='eight' has the wrong type"),
        ("trainer.max_epochs=many", r"trainer.max_epochs='many' has the wrong type"),
        ("+task.pool=max", r"task.pool is not an argument of hgrn.training.ClassificationTask"),
        ("+task.backbone={}", r"task.backbone is set by the training script"),
        ("+optim.momentum=0.9", r"optim.momentum is not an argument of torch.optim.AdamW"),
        ("model.mixer=mamba", r"mixer='mamba' is not a known token mixer"),
        ("+model.mixer_options.expand=2", r"mixer_options \['expand'\] are not options of mixer 'hgrn2'"),
        ("model.mixer_options.expand_ratio=3", r"expand_ratio=3 must divide d_model=64"),
    ],
)
def test_bad_config_fails_before_data_is_loaded_and_names_the_key(override, message, make_config, tmp_path):
    cfg = make_config("experiment=demo", f"paths.data_dir={tmp_path / 'absent'}", override)
    with pytest.raises((ConfigError, ValueError), match=message):
        check_config(cfg)
