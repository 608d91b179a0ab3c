"""What `python -m hgrn.train` and `python -m hgrn.evaluate` do with a composed config, callable without the
command line (tests, notebooks): train -> test the last weights and the best validation checkpoint -> results.json,
or load a checkpoint -> evaluate -> evaluation.json. Both records say which run they are: the experiment, the
command line's overrides, the seed, and whether those kept the experiment's recipe (hgrn.results.identity)."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from hgrn.config import ConfigError
from hgrn.results import EvaluationRecord, TrainingRecord, write_record
from hgrn.results.environment import git_state, hardware, package_versions, peak_memory_bytes
from hgrn.results.evaluation import EVALUATION_FILE, evaluation_record
from hgrn.results.identity import follows_recipe, wandb_group, wandb_tags
from hgrn.training.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_task,
    build_trainer,
    find_callback,
)
from hgrn.training.callbacks import ThroughputMonitor, TimeLimitReached, ValidationHistory
from hgrn.training.config_check import check_config, check_hardware
from hgrn.training.image_classification import ImageClassificationTask, scaled_lr
from hgrn.training.resume import (
    ResumeState,
    StepCheckpoint,
    checkpoint_to_resume,
    pin_wandb_run,
    wandb_logger_nodes,
)


def train(cfg: DictConfig, overrides: Sequence[str] | None = None) -> TrainingRecord:
    """Fit, test the last weights and the best validation checkpoint, and write results.json into the run directory.

    overrides: the command line's overrides; by default the task overrides of the Hydra run this is part of (None
    outside one: a run composed in Python is then not known to follow its recipe and stays out of the paper tables).
    """
    check_config(cfg)
    check_hardware(cfg)
    overrides = hydra_overrides() if overrides is None else list(overrides)
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path = checkpoint_to_resume(cfg, run_dir)  # ckpt_path, or with `resume` the run's newest usable checkpoint
    pin_wandb_run(cfg, run_dir)
    label_wandb_run(cfg, overrides)

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
    lr = cfg.optim.get("lr")
    if isinstance(task, ImageClassificationTask) and lr is not None:
        lr = scaled_lr(lr, per_step, task.lr_reference_batch)  # DeiT's rule, as the task's optimiser applies it
    resolved["effective"] = {"world_size": world, "batch_size": per_step, "lr": lr}
    rank_zero_info(f"effective batch {per_step} (data.batch_size x {world} processes x accumulate_grad_batches)")
    for logger in loggers:
        logger.log_hyperparams(resolved)

    with contextlib.suppress(TimeLimitReached):  # it saved a step checkpoint to resume from and said so
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    planned = planned_steps(trainer)
    best_path = best.best_model_path or None
    metrics_last = _test(trainer, task, datamodule, ckpt_path=None)  # the weights as training left them
    if best_path is None or saved_at_step(best_path) == trainer.global_step:
        metrics = dict(metrics_last)  # no validation, or the best checkpoint holds the last weights: one test pass
    else:
        metrics = _test(trainer, task, datamodule, ckpt_path=best_path)
    if best.best_model_score is not None:
        metrics[f"{task.monitor}_best"] = float(best.best_model_score)
    peaks = peaks_per_process(trainer)
    result = TrainingRecord(
        experiment=cfg.name,
        overrides=overrides,
        seed=cfg.seed,
        recipe=follows_recipe(overrides),
        finished=finished_budget(trainer, planned),
        task=type(task).__name__,
        monitor=task.monitor,
        monitor_mode=task.monitor_mode,
        metrics=metrics,
        metrics_last=metrics_last,
        config=resolved,
        parameters=task.num_parameters(),
        throughput=throughput.summary(),
        wall_seconds=time.perf_counter() - clock + throughput.resumed_seconds,  # the earlier processes' fit too
        peak_memory_bytes=max(peaks),
        peak_memory_bytes_per_process=peaks,
        steps=trainer.global_step,
        planned_steps=planned,
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
        path = write_record(run_dir / "results.json", result)
        report(result.experiment, result.metrics, path, loggers, extra=_training_rows(result))
    return result


def _test(
    trainer: L.Trainer, task: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None
) -> dict[str, float]:
    """The test metrics of the task's current weights (ckpt_path None) or of a checkpoint."""
    results = trainer.test(task, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0]
    return {name: float(value) for name, value in results.items()}


def saved_at_step(path: str) -> int:
    """The optimiser step a checkpoint was saved at (its tensors memory-mapped, not read)."""
    return int(torch.load(path, map_location="cpu", mmap=True, weights_only=True)["global_step"])


def planned_steps(trainer: L.Trainer) -> int | None:
    """The run's budget in optimiser steps, as Lightning estimates it from max_epochs, max_steps and the batches
    per epoch (None when unbounded)."""
    estimate = trainer.estimated_stepping_batches
    return int(estimate) if estimate != float("inf") and estimate > 0 else None


def finished_budget(trainer: L.Trainer, planned: int | None) -> bool:
    """Whether training ran its whole budget, or met an early-stopping rule of its config (a threshold or patience,
    e.g. MQAR's validation accuracy > 0.99); a time limit, a non-finite metric or an interruption leaves it
    unfinished."""
    met_its_rule = (EarlyStoppingReason.STOPPING_THRESHOLD, EarlyStoppingReason.PATIENCE_EXHAUSTED)
    stopped = any(isinstance(c, EarlyStopping) and c.stopping_reason in met_its_rule for c in trainer.callbacks)
    return stopped or (planned is not None and trainer.global_step >= planned)


def peaks_per_process(trainer: L.Trainer) -> list[int]:
    """Every process's peak memory (peak_memory_bytes), in rank order: one all-gather, which every rank reaches."""
    peak = peak_memory_bytes()
    if trainer.world_size == 1:
        return [peak]
    gathered = trainer.strategy.all_gather(torch.tensor(peak, device=trainer.strategy.root_device))
    return [int(p) for p in gathered.flatten().tolist()]


def hydra_overrides() -> list[str] | None:
    """The task overrides of the Hydra run (or multirun job) in progress; None outside one."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def hydra_sweep_dir() -> str | None:
    """The multirun's sweep folder when this process is one of its jobs; None otherwise."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return str(HydraConfig.get().sweep.dir)


def label_wandb_run(cfg: DictConfig, overrides: Sequence[str] | None) -> None:
    """Group and tag the run's W&B loggers where the config leaves them unset: one group per experiment, or per
    multirun sweep; tags from the experiment, its recipe status and the overrides (hgrn.results.identity)."""
    for node in wandb_logger_nodes(cfg):
        with open_dict(node):
            node.group = node.get("group") or wandb_group(cfg.name, hydra_sweep_dir())
            node.tags = node.get("tags") or wandb_tags(cfg.name, overrides)


def evaluate(cfg: DictConfig, overrides: Sequence[str] | None = None) -> EvaluationRecord:
    """Load `cfg.ckpt_path` into the experiment's task, run its test loop on `cfg.data`, write evaluation.json.

    The model is the checkpoint's (its saved hyper-parameters rebuild it); data, trainer and loggers come from the
    config, so a checkpoint can be evaluated on any datamodule whose inputs fit its head. overrides: as for train.
    """
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("ckpt_path is required: the .ckpt to evaluate, e.g. ckpt_path=<run>/checkpoints/best.ckpt")
    check_config(cfg)  # ckpt_path must be a file
    check_hardware(cfg)
    overrides = hydra_overrides() if overrides is None else list(overrides)
    checkpoint = Path(cfg.ckpt_path)
    run_dir = Path(cfg.paths.output_dir)
    task_class = get_class(cfg.task._target_)
    task = task_class.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True, optim=None, sched=None)
    datamodule = build_datamodule(cfg)
    label_wandb_run(cfg, overrides)
    loggers = build_loggers(cfg)
    trainer = build_trainer(cfg, build_callbacks(cfg, loggers), loggers)
    record = evaluation_record(
        experiment=cfg.name,
        checkpoint=checkpoint,
        metrics=_test(trainer, task, datamodule, ckpt_path=None),
        evaluation="test",
        overrides=overrides,
        config=OmegaConf.to_container(cfg, resolve=True),
        parameters=task.num_parameters(),
    )
    if trainer.is_global_zero:
        path = write_record(run_dir / EVALUATION_FILE, record)
        report(f"{cfg.name}: {checkpoint.name}", record.metrics, path, loggers)
    return record


def _training_rows(result: TrainingRecord) -> list[tuple[str, str]]:
    """The summary lines under the metrics; tokens/s only for sequence tasks (images count no tokens)."""
    planned = "" if result.planned_steps is None else f" of {result.planned_steps}"
    tokens_per_s = result.throughput["train_tokens_per_s"]
    return [
        ("parameters", f"{result.parameters:,}"),
        ("steps", f"{result.steps}{planned}" + ("" if result.finished else " (unfinished)")),
        ("recipe", "followed" if result.recipe else "changed or not known: stays out of the paper tables"),
        ("train samples/s", f"{result.throughput['train_samples_per_s']:,.0f}"),
        *([("train tokens/s", f"{tokens_per_s:,.0f}")] if tokens_per_s else []),
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
