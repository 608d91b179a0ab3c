"""Building a run from a composed config: datamodule, task (backbone + head sized by the data), callbacks, loggers
and trainer. The training and evaluation entry points, the benchmarks and the tests all build through here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from hgrn.config import ConfigError
from hgrn.data.spec import data_spec
from hgrn.training.base import TaskModule
from hgrn.training.callbacks import TimeLimit
from hgrn.training.resume import StepCheckpoint


@contextmanager
def config_errors(where: str) -> Iterator[None]:
    """A constructor that rejects its config values (before any data is read) is the config's error: one line that
    names the group, as ConfigError, instead of Hydra's wrapped traceback."""
    try:
        yield
    except (InstantiationException, TypeError, ValueError) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
        raise ConfigError(f"{where}: {str(cause).strip().splitlines()[0]}") from None


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The datamodule, constructed only: no data is read before the trainer asks for it."""
    with config_errors("data"):
        return instantiate(cfg.data)


@config_errors("task")
def build_task(cfg: DictConfig, datamodule: L.LightningDataModule) -> TaskModule:
    """The LightningModule of a composed config: backbone from `model`, head from what the datamodule says."""
    return instantiate(
        cfg.task,
        _convert_="all",  # plain dicts in the checkpoint's hyper-parameters, loadable with weights_only
        backbone=OmegaConf.to_container(cfg.model, resolve=True),
        data=data_spec(datamodule),
        optim=instantiate(cfg.optim),
        sched=instantiate(cfg.sched) if cfg.get("sched") else None,
    )


@config_errors("logger")
def build_loggers(cfg: DictConfig) -> list[Logger]:
    return [instantiate(node) for node in (cfg.get("logger") or {}).values()]


@config_errors("callbacks")
def build_callbacks(cfg: DictConfig, loggers: list[Logger]) -> list[L.Callback]:
    """The `callbacks` group, by name; a learning-rate monitor only where a logger can receive it."""
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]
    return [c for c in callbacks if loggers or not isinstance(c, LearningRateMonitor)]


@config_errors("trainer")
def build_trainer(cfg: DictConfig, callbacks: list[L.Callback], loggers: list[Logger]) -> L.Trainer:
    """The Trainer; `trainer.max_time` becomes a TimeLimit callback (a stop that resumes exactly), not Lightning's."""
    max_time = cfg.trainer.get("max_time")
    if max_time is not None:
        steps = [c for c in callbacks if isinstance(c, StepCheckpoint)]
        if not steps:
            raise ConfigError(
                "max_time needs callbacks.step, the checkpoint a run stopped by its time limit resumes from"
            )
        limit = OmegaConf.to_container(max_time) if isinstance(max_time, DictConfig) else max_time
        callbacks = [*callbacks, TimeLimit(limit, steps[0])]
    return instantiate(
        cfg.trainer,
        max_time=None,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=cfg.paths.output_dir,
    )


def find_callback(callbacks: list[L.Callback], kind: type, key: str) -> Any:
    """The one callback of this type that a run's record needs; a ConfigError names the key when it is missing."""
    found = [c for c in callbacks if isinstance(c, kind)]
    if len(found) != 1:
        raise ConfigError(f"callbacks.{key} ({kind.__name__}) is needed exactly once to record the run; restore it")
    return found[0]
