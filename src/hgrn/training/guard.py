"""Stop (or skip) a diverging step before the optimiser applies it, and say where to resume from.

A non-finite training loss or gradient, applied once, turns every weight into NaN and every later checkpoint into
garbage. `DivergenceGuard` looks at both before each optimiser step: the loss as it reaches backward, the gradients
once they are complete (after accumulation and, under DDP, after the all-reduce, so every rank decides alike).

- mode=stop (default): raise FloatingPointError naming the step, loss or gradient, the first offending parameter, and
  the newest checkpoint that exists to resume from (`hgrn.config.exit_on_user_error` prints it as one line).
- mode=skip: drop the step's gradients so the optimiser leaves the weights alone, count the skip (logged as
  train/skipped_steps), and stop as above once more than max_skips steps were skipped in the run.

Under fp16 mixed precision the gradient scaler already skips steps with overflowing gradients and lowers its scale,
so only the loss is checked there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.nn.utils import get_total_norm
from torch.optim import Optimizer

from hgrn.config import ConfigError
from hgrn.training.resume import resumable_step

log = logging.getLogger(__name__)
MODES = ("stop", "skip")
CONFIG_KEY = "callbacks.guard"
SKIP_FIXES = "lower optim.lr or set trainer.gradient_clip_val"
STOP_FIXES = f"{SKIP_FIXES}, or skip such steps with {CONFIG_KEY}.mode=skip"


class DivergenceGuard(L.Callback):
    """mode: "stop" raises at the first non-finite loss or gradient; "skip" skips such optimiser steps and raises
    once more than max_skips were skipped (the count is kept in checkpoints, so it spans resumed runs)."""

    def __init__(self, mode: Literal["stop", "skip"] = "stop", max_skips: int = 10) -> None:
        if mode not in MODES:
            raise ConfigError(f"{CONFIG_KEY}.mode={mode!r} must be 'stop' or 'skip'")
        if max_skips < 0:
            raise ConfigError(f"{CONFIG_KEY}.max_skips={max_skips!r} must be a whole number >= 0")
        self.mode, self.max_skips = mode, max_skips
        self.skipped = 0
        self._batch_idx = 0
        self._losses: list[Tensor] = []  # the losses since the last optimiser step, kept on the device
        self._stepped: dict[int, list[tuple[str, nn.Parameter]]] = {}  # per optimiser, found once (not every step)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        # Kept, not read: reading it here would stop the host until the forward pass is done. It is read with the
        # gradients at the optimiser step, where under DDP every rank raises (or skips) together.
        self._losses.append(loss.detach().float().sum())

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        losses, self._losses = self._losses, []
        fp16_scaler = getattr(trainer.precision_plugin, "scaler", None) is not None
        if id(optimizer) not in self._stepped:
            self._stepped[id(optimizer)] = stepped_parameters(pl_module, optimizer)
        found = step_problem(pl_module, self._stepped[id(optimizer)], losses, check_gradients=not fp16_scaler)
        if found is None:
            return
        what, detail = found
        where = (
            f"{what} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx}), {detail}"
        )
        if self.mode == "stop":
            raise FloatingPointError(f"{where}; {resume_advice(trainer, STOP_FIXES)}")
        self.skipped += 1
        if self.skipped > self.max_skips:
            raise FloatingPointError(
                f"{where}; {self.skipped} steps skipped, more than {CONFIG_KEY}.max_skips={self.max_skips}; "
                f"{resume_advice(trainer, SKIP_FIXES)}"
            )
        log.warning("skipped optimiser step %d of at most %d: %s", self.skipped, self.max_skips, where)
        optimizer.zero_grad(set_to_none=True)  # torch optimisers leave a parameter without a gradient alone

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.mode == "skip":
            pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


def step_problem(
    pl_module: nn.Module,
    stepped: list[tuple[str, nn.Parameter]],
    losses: list[Tensor],
    check_gradients: bool = True,
) -> tuple[str, str] | None:
    """What is wrong with the optimiser step about to be applied, or None: a non-finite loss among `losses` (scalars,
    one per micro-batch: ("training loss is nan", whether a weight was already broken, then an earlier step is the
    cause)), else, with check_gradients, a non-finite gradient ("training gradient is inf", "first in parameter
    <name>"). One reduction and one host read for the whole step; the names are looked up only on failure."""
    grads = [(n, p.grad) for n, p in stepped if p.grad is not None] if check_gradients else []
    values = list(losses)
    if grads:  # the largest |gradient|: NaN or inf if any element is
        values.append(get_total_norm([g for _, g in grads], norm_type=math.inf).float())
    if not values:
        return None
    read = torch.stack([v.to(values[0].device) for v in values]).tolist()
    bad_loss = next((v for v in read[: len(losses)] if not math.isfinite(v)), None)
    if bad_loss is not None:
        name = first_nonfinite((n, p.detach()) for n, p in pl_module.named_parameters())
        detail = f"parameter {name} already non-finite" if name else "every parameter finite"
        return f"training loss is {bad_loss}", detail
    if grads and not math.isfinite(read[-1]):
        return f"training gradient is {read[-1]}", f"first in parameter {first_nonfinite(grads)}"
    return None


def stepped_parameters(pl_module: nn.Module, optimizer: Optimizer) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of each parameter of pl_module that the optimiser steps."""
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return [(n, p) for n, p in pl_module.named_parameters() if id(p) in stepped]


def first_nonfinite(named: Iterable[tuple[str, Tensor]]) -> str | None:
    """The name of the first tensor holding a NaN or an infinity."""
    return next((name for name, tensor in named if not torch.isfinite(tensor).all()), None)


def newest_checkpoint(trainer: L.Trainer) -> Path | None:
    """The checkpoint in the run's checkpoint folders that got furthest (global step), preferring last.ckpt and then
    the newest file on a tie; files resume would refuse (unreadable, cut mid-batch: `resumable_step`) are passed
    over. Read only when a run stops, memory-mapped."""
    folders = {Path(c.dirpath) for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.dirpath}
    steps = {path: resumable_step(path) for folder in folders for path in folder.glob("*.ckpt")}
    ranked = {
        path: (step, path.name == "last.ckpt", path.stat().st_mtime_ns)
        for path, step in steps.items()
        if step is not None
    }
    return max(ranked, key=ranked.__getitem__, default=None)


def resume_advice(trainer: L.Trainer, fixes: str) -> str:
    """Where the last good weights are: a checkpoint on disk, since the weights in memory are not saved."""
    newest = newest_checkpoint(trainer)
    if newest is not None:
        return f"{fixes}, then resume with ckpt_path={newest}"
    if trainer.ckpt_path:
        started = f"ckpt_path={trainer.ckpt_path}"
        return f"no checkpoint of this run exists yet: {fixes}, then resume from the one it started from, {started}"
    return f"no checkpoint of this run exists yet, so it must restart: {fixes} and run it again"
