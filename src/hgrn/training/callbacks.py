"""Callbacks that measure a run for results.json (throughput over training steps, the validation history) and that
stop it so that it can be resumed exactly (Ctrl-C, a time limit)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from hgrn.config import ConfigError
from hgrn.training.resume import StepCheckpoint


class ThroughputMonitor(L.Callback):
    """Samples and tokens per second over the wall time of the training windows, plus the whole fit's wall time. A
    window runs from a training batch's start to the next validation, epoch end, checkpoint or the end of the fit,
    and the GPU is synchronised only there: reading the clock (or a mask's token count) after every step would stop
    the host until the GPU is done, and the next step could not be queued while the GPU finishes this one. Data
    loading inside a window counts (the GPU works on through it); validation and checkpoints do not. The counts are
    kept in checkpoints, so a resumed run reports them over the whole run (`resumed_seconds`: the fit time of the
    processes before, up to their checkpoint)."""

    def __init__(self) -> None:
        self.samples = self.tokens = 0
        self.step_seconds = 0.0
        self.fit_seconds = self.resumed_seconds = 0.0
        self._fit_start = 0.0
        self._window_start: float | None = None  # the open window's start, None between windows
        self._mask_tokens: torch.Tensor | None = None  # the window's masked token count, on the batches' device
        self._restore = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore = stage == "fit"  # Lightning also loads callback states to test a checkpoint; only fit resumes

    def state_dict(self) -> dict[str, float]:
        self._close_window()
        fit_seconds = self.resumed_seconds + time.perf_counter() - self._fit_start
        return {"samples": self.samples, "tokens": self.tokens, "step_seconds": self.step_seconds, "fit": fit_seconds}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        if self._restore:
            self.samples, self.tokens = int(state_dict["samples"]), int(state_dict["tokens"])
            self.step_seconds, self.resumed_seconds = state_dict["step_seconds"], state_dict["fit"]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_window()
        self.fit_seconds = self.resumed_seconds + time.perf_counter() - self._fit_start

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.on_fit_end(trainer, pl_module)  # a fit left by TimeLimitReached is still recorded

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._window_start is None:
            self._window_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        inputs = batch["inputs"]
        self.samples += inputs.shape[0]
        if "mask" in batch:
            count = batch["mask"].sum()
            self._mask_tokens = count if self._mask_tokens is None else self._mask_tokens + count
        elif inputs.ndim <= 3:  # [B, T] ids or [B, T, C] values; images [B, C, H, W] count as samples only
            self.tokens += inputs.shape[0] * inputs.shape[1]

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_window()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close_window()

    def _close_window(self) -> None:
        """Wait for the GPU's queued work, then add the open window's time and masked tokens."""
        if self._window_start is None:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.step_seconds += time.perf_counter() - self._window_start
        self._window_start = None
        if self._mask_tokens is not None:
            self.tokens += int(self._mask_tokens)
            self._mask_tokens = None

    def summary(self) -> dict[str, float]:
        seconds = max(self.step_seconds, 1e-9)
        return {
            "train_samples_per_s": self.samples / seconds,
            "train_tokens_per_s": self.tokens / seconds,
            "train_step_seconds": self.step_seconds,
            "fit_wall_seconds": self.fit_seconds,
        }


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, reading the logged values for display every `metrics_every_n_steps` training
    batches instead of after each: each read turns the logged tensors into numbers, which waits for the GPU to finish
    the step. The bar itself advances every batch."""

    def __init__(self, metrics_every_n_steps: int = 10, **options: Any) -> None:
        if metrics_every_n_steps < 1:
            raise ConfigError(f"callbacks.progress.metrics_every_n_steps={metrics_every_n_steps} must be at least 1")
        super().__init__(**options)
        self.metrics_every_n_steps = metrics_every_n_steps
        self._stale = False
        self._shown: dict[str, Any] | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._stale = (batch_idx + 1) % self.metrics_every_n_steps != 0
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._stale = False

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        if not self._stale or self._shown is None:
            self._shown = super().get_metrics(trainer, pl_module)
        return self._shown


class ValidationHistory(L.Callback):
    """The learning curve, as Lightning's CSV log has it: one row per validation with its `val/*` metrics (read once
    the validation has logged everything, the task's epoch-end metrics included), and in the row of the epoch's
    last step the epoch's training means (`train/loss`, `train/acc`: the CSV's `train/*_epoch`, metrics logged per
    step and per epoch); an epoch that ends without a validation gets a row of its own. `step` is the optimiser step
    (the CSV writes step - 1). The rows are kept in checkpoints, so a resumed run's curve is the whole run's.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._restore = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore = stage == "fit"  # Lightning also loads callback states to test a checkpoint; only fit resumes

    def state_dict(self) -> dict[str, list[dict[str, float]]]:
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict[str, list[dict[str, float]]]) -> None:
        if self._restore:
            self.rows = [dict(row) for row in state_dict["rows"]]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.rows.append({"step": trainer.global_step, "epoch": trainer.current_epoch, **metrics})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        means = {
            k.removesuffix("_epoch"): float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("train/") and k.endswith("_epoch")
        }
        if not means:
            return
        last = self.rows[-1] if self.rows else {}
        if last.get("step") == trainer.global_step and last.get("epoch") == trainer.current_epoch:
            last.update(means)
        else:
            self.rows.append({"step": trainer.global_step, "epoch": trainer.current_epoch, **means})


class InterruptCheckpoint(L.Callback):
    """On Ctrl-C, save the weights as they are and say how to resume (Lightning then exits with status 1)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            trainer.save_checkpoint(self.path)
            print(f"interrupted: resume with ckpt_path={self.path}")


class TimeLimitReached(Exception):
    """Raised by TimeLimit between two optimiser steps once the run's time is up; `train` catches it."""


class TimeLimit(L.Callback):
    """`trainer.max_time` ("DD:HH:MM:SS" or a dict of timedelta fields): this process's time for fitting. When it is
    up, at the end of an optimiser step, the run saves a step checkpoint there and leaves `trainer.fit` by raising
    TimeLimitReached; `train` then tests and writes results.json (finished: false), and `resume` continues at the
    next batch of the same epoch, with a clock of its own.

    Lightning's own max_time stops through `trainer.should_stop`, which closes the epoch early (validation, the epoch
    counted as done), so a resumed run skips the rest of that epoch; its clock is also restored with the run, so a
    resumed run with the same limit stops at once. Under DDP rank zero's clock decides for every rank.
    """

    def __init__(self, max_time: str | Mapping[str, float], checkpoint: StepCheckpoint) -> None:
        self.seconds = duration_seconds(max_time)
        self.checkpoint = checkpoint
        self._start = 0.0
        self._step = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self._step:  # no optimiser step in this batch (gradient accumulation, a skip)
            return
        self._step = trainer.global_step
        if not trainer.strategy.broadcast(time.monotonic() - self._start >= self.seconds):
            return
        self.checkpoint.save_now(trainer)
        planned = trainer.estimated_stepping_batches
        rank_zero_info(
            f"time limit: stopped after {timedelta(seconds=round(self.seconds))} at step {trainer.global_step} of "
            f"{planned:.0f}, checkpoint {self.checkpoint.best_model_path}; "
            f"continue with resume={trainer.default_root_dir}"
        )
        raise TimeLimitReached(trainer.global_step)


def duration_seconds(value: str | Mapping[str, float]) -> float:
    """Seconds of "DD:HH:MM:SS" or of timedelta fields ({hours: 4}); a ValueError that shows the accepted forms."""
    try:
        if isinstance(value, str):
            days, hours, minutes, seconds = (int(part) for part in value.split(":"))
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()
        return timedelta(**value).total_seconds()
    except (TypeError, ValueError):
        raise ValueError(f"max_time={value!r}: give DD:HH:MM:SS (e.g. 00:04:00:00) or {{hours: 4}}") from None
