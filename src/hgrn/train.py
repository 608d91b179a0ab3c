"""The single training entry point: compose config -> build datamodule, model and task -> fit -> test at the best
validation checkpoint -> results.json.

    python -m hgrn.train experiment=lra/listops model=hgrn2 model.d_model=64
    hgrn-train -m experiment=mqar/hgrn2 optim.lr=1e-4,5e-4,1e-3        # Hydra multirun sweep
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from hgrn.data.errors import DataNotFoundError
from hgrn.results import RunResult, write_results
from hgrn.results.environment import git_state, hardware, package_versions, peak_memory_bytes
from hgrn.training.base import TaskModule
from hgrn.training.callbacks import InterruptCheckpoint, ThroughputMonitor, ValidationHistory
from hgrn.training.config_check import ConfigError, check_config

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
DATA_PROPERTIES = ("num_classes", "vocab_size", "input_dim", "max_length", "pair")


def data_spec(datamodule: L.LightningDataModule) -> dict[str, Any]:
    """What the model head needs to know about the data, read off the datamodule before any data is loaded."""
    return {name: getattr(datamodule, name) for name in DATA_PROPERTIES if getattr(datamodule, name, None) is not None}


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


def train(cfg: DictConfig) -> RunResult:
    check_config(cfg)
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    datamodule = instantiate(cfg.data)
    task = build_task(cfg, datamodule)
    checkpoints = run_dir / "checkpoints"
    best = ModelCheckpoint(checkpoints, "best", task.monitor, mode=task.monitor_mode, save_last=True)
    throughput, history = ThroughputMonitor(), ValidationHistory()
    callbacks = [best, throughput, history, InterruptCheckpoint(checkpoints / "interrupted.ckpt"), RichProgressBar()]
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values()]
    if loggers:
        callbacks.append(LearningRateMonitor("step"))
        for logger in loggers:
            logger.log_hyperparams(resolved)
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=run_dir)

    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
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
        wall_seconds=time.perf_counter() - clock,
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
        report(result, path, loggers)
    return result


def report(result: RunResult, path: Path, loggers: list) -> None:
    """A short table of the run's numbers, and where its records are."""
    console = Console()
    table = Table(title=result.experiment)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(result.metrics.items()):
        table.add_row(name, f"{value:.4f}")
    table.add_row("parameters", f"{result.parameters:,}")
    table.add_row("steps", str(result.steps))
    table.add_row("train tokens/s", f"{result.throughput['train_tokens_per_s']:,.0f}")
    table.add_row("wall time (s)", f"{result.wall_seconds:.1f}")
    console.print(table)
    console.print(f"results.json: {path}")
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger.experiment.dir:
            console.print(f"W&B run ({logger.experiment.settings.mode}): {Path(logger.experiment.dir).parent}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        result = train(cfg)
    except (ConfigError, DataNotFoundError, FloatingPointError) as error:  # the user's to fix: say what, not where
        Console(stderr=True).print(f"[bold red]error:[/] {error}")
        raise SystemExit(2) from None
    monitor = f"{cfg.task.get('monitor', 'val/loss')}_best"
    return result.metrics.get(monitor)


if __name__ == "__main__":
    main()
