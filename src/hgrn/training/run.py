"""What `python -m hgrn.train` and `python -m hgrn.evaluate` do with a composed config, callable without the
command line (tests, notebooks): train -> test at the best validation checkpoint -> results.json, or load a
checkpoint -> evaluate -> evaluation.json."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from hgrn.config import ConfigError
from hgrn.io import atomic_write
from hgrn.results import RunResult, write_results
from hgrn.results.environment import git_state, hardware, package_versions, peak_memory_bytes
from hgrn.training.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_task,
    build_trainer,
    find_callback,
)
from hgrn.training.callbacks import ThroughputMonitor, ValidationHistory
from hgrn.training.config_check import check_config, check_hardware
from hgrn.training.resume import ResumeState, StepCheckpoint, checkpoint_to_resume, pin_wandb_run


def train(cfg: DictConfig) -> RunResult:
    """Fit, test the best validation checkpoint, and write results.json into the run directory."""
    check_config(cfg)
    check_hardware(cfg)
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path = checkpoint_to_resume(cfg, run_dir)  # ckpt_path, or with `resume` the run's newest usable checkpoint
    pin_wandb_run(cfg, run_dir)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule)
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg, loggers)
    best = find_callback([c for c in callbacks if not isinstance(c, StepCheckpoint)], ModelCheckpoint, "checkpoint")
    throughput = find_callback(callbacks, ThroughputMonitor, "throughput")
    history = find_callback(callbacks, ValidationHistory, "history")
    find_callback(callbacks, ResumeState, "resume_state")  # without it a resumed epoch would restart at its first batch
    trainer = build_trainer(cfg, callbacks, loggers)
    world = trainer.num_nodes * trainer.num_devices
    per_step = cfg.data.batch_size * world * trainer.accumulate_grad_batches  # examples per optimiser step
    resolved["effective"] = {"world_size": world, "batch_size": per_step, "lr": cfg.optim.get("lr")}  # lr unscaled
    rank_zero_info(f"effective batch {per_step} (data.batch_size x {world} processes x accumulate_grad_batches)")
    for logger in loggers:
        logger.log_hyperparams(resolved)

    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    best_path = best.best_model_path or None
    test_metrics = trainer.test(task, datamodule=datamodule, ckpt_path=best_path, verbose=False)[0]

    metrics = {k: float(v) for k, v in test_metrics.items()}
    if best.best_model_score is not None:
        metrics[f"{task.monitor}_best"] = float(best.best_model_score)
    result = RunResult(
        experiment=cfg.name,
        task=type(task).__name__,
        metrics=metrics,
        config=resolved,
        parameters=task.num_parameters(),
        throughput=throughput.summary(),
        wall_seconds=time.perf_counter() - clock + throughput.resumed_seconds,  # the earlier processes' fit too
        peak_memory_bytes=peak_memory_bytes(),
        steps=trainer.global_step,
        epochs=trainer.current_epoch,
        best_checkpoint=best_path,
        history=history.rows,
        versions=package_versions(),
        git=git_state(Path(__file__).parent),
        hardware=hardware(),
        started_at=started.isoformat(timespec="seconds"),
        finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    if trainer.is_global_zero:
        path = write_results(run_dir / "results.json", result)
        report(result.experiment, result.metrics, path, loggers, extra=_training_rows(result))
    return result


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Load `cfg.ckpt_path` into the experiment's task, run its test loop on `cfg.data`, write evaluation.json.

    The model is the checkpoint's (its saved hyper-parameters rebuild it); data, trainer and loggers come from the
    config, so a checkpoint can be evaluated on any datamodule whose inputs fit its head.
    """
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("ckpt_path is required: the .ckpt to evaluate, e.g. ckpt_path=<run>/checkpoints/best.ckpt")
    check_config(cfg)  # ckpt_path must be a file
    check_hardware(cfg)
    checkpoint = Path(cfg.ckpt_path)
    run_dir = Path(cfg.paths.output_dir)
    task_class = get_class(cfg.task._target_)
    task = task_class.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True, optim=None, sched=None)
    datamodule = build_datamodule(cfg)
    loggers = build_loggers(cfg)
    trainer = build_trainer(cfg, build_callbacks(cfg, loggers), loggers)
    metrics = {k: float(v) for k, v in trainer.test(task, datamodule=datamodule, verbose=False)[0].items()}
    record = {
        "experiment": cfg.name,
        "checkpoint": str(checkpoint.resolve()),
        "task": task_class.__name__,
        "metrics": metrics,
        "parameters": task.num_parameters(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": package_versions(),
        "git": git_state(Path(__file__).parent),
        "hardware": hardware(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if trainer.is_global_zero:
        path = run_dir / "evaluation.json"
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            json.dump(record, f, indent=2, sort_keys=True)
        report(f"{cfg.name}: {checkpoint.name}", metrics, path, loggers)
    return record


def _training_rows(result: RunResult) -> list[tuple[str, str]]:
    return [
        ("parameters", f"{result.parameters:,}"),
        ("steps", str(result.steps)),
        ("train tokens/s", f"{result.throughput['train_tokens_per_s']:,.0f}"),
        ("wall time (s)", f"{result.wall_seconds:.1f}"),
    ]


def report(
    title: str, metrics: dict[str, float], path: Path, loggers: list[Logger], extra: list[tuple[str, str]] = ()
) -> None:
    """A short table of the run's numbers, and where its records are."""
    console = Console()
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        table.add_row(name, f"{value:.4f}")
    for row in extra:
        table.add_row(*row)
    console.print(table)
    console.print(f"record: {path}")
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger.experiment.dir:
            console.print(f"W&B run ({logger.experiment.settings.mode}): {Path(logger.experiment.dir).parent}")
