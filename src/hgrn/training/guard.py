"""Stop (or skip) a diverging step before the optimiser applies it, and say where to resume from.

A non-finite training loss or gradient, applied once, turns every weight into NaN and every later checkpoint into
garbage. `DivergenceGuard` looks at both before each optimiser step: the loss as it reaches backward, the gradients
once they are complete (after accumulation and, under DDP, after the all-reduce, so every rank decides alike).

- mode=stop (default): raise FloatingPointError naming the step, loss or gradient, the first offending parameter, and
  the newest checkpoint that exists to resume from (`hgrn.config.exit_on_user_error` prints it as one line).
- mode=skip: drop the step's gradients so the optimiser leaves the weights alone, count the skip (logged as
  train/skipped_steps), and stop as above once more than max_skips steps were skipped in the run.

With an optimiser that can skip a step on the device (torch's fused Adam / AdamW, which the tasks build on a GPU
where the run does not clip gradients: `hgrn.training.optim.fused_by_default`), the check never stops the host: the
step's verdict goes to the optimiser as `found_inf` (as a gradient scaler hands it over: a bad step leaves weights,
moments and step count alone), and the host reads it one step later, before the next optimiser step, so the GPU
always has the next step queued. A stop then comes one step later but from the same weights; a skip is counted one
step later. Otherwise the check is read at the step itself (one host read per step).

Under fp16 mixed precision the gradient scaler already skips steps with overflowing gradients and lowers its scale,
so only the loss is checked there, at the step itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
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
        self._pending: StepCheck | None = None  # the last step's check, judged before the next step
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        # Kept, not read: reading it here would stop the host until the forward pass is done. It is read with the
        # gradients at the optimiser step, where under DDP every rank raises (or skips) together.
        self._losses.append(loss.detach().float().sum())

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        self._settle(trainer, pl_module)  # the step before this one: done on the GPU, as this one's backward is queued
        losses, self._losses = self._losses, []
        fp16_scaler = getattr(trainer.precision_plugin, "scaler", None) is not None
        if id(optimizer) not in self._stepped:
            self._stepped[id(optimizer)] = stepped_parameters(pl_module, optimizer)
        values, names = step_values(self._stepped[id(optimizer)], losses, check_gradients=not fp16_scaler)
        if values is None:
            return
        check = StepCheck((trainer.global_step, trainer.current_epoch, self._batch_idx), len(losses), names, values)
        if fp16_scaler or not skips_on_device(optimizer):
            if self._judge(trainer, pl_module, check):
                optimizer.zero_grad(set_to_none=True)  # torch optimisers leave a parameter without a gradient alone
            return
        optimizer.found_inf = (~torch.isfinite(values)).any().float()  # read by the fused step: 1 skips it
        self._pending = check

    def _settle(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Judge the step whose check is still on its way (waiting for it alone)."""
        check, self._pending = self._pending, None
        if check is not None:
            self._judge(trainer, pl_module, check)

    def _judge(self, trainer: L.Trainer, pl_module: L.LightningModule, check: StepCheck) -> bool:
        """Whether the checked step is to be skipped (counted); raise where the run must stop."""
        found = read_problem(check.read(), check.n_losses, check.names, pl_module)
        if found is None:
            return False
        what, detail = found
        step, epoch, batch = check.where
        where = f"{what} at step {step} (epoch {epoch}, batch {batch}), {detail}"
        if self.mode == "stop":
            raise FloatingPointError(f"{where}; {resume_advice(trainer, STOP_FIXES)}")
        self.skipped += 1
        if self.skipped > self.max_skips:
            raise FloatingPointError(
                f"{where}; {self.skipped} steps skipped, more than {CONFIG_KEY}.max_skips={self.max_skips}; "
                f"{resume_advice(trainer, SKIP_FIXES)}"
            )
        log.warning("skipped optimiser step %d of at most %d: %s", self.skipped, self.max_skips, where)
        return True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._settle(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.mode == "skip":
            pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        if self._trainer is not None:  # a checkpoint: count the step in flight first
            self._settle(self._trainer, self._trainer.lightning_module)
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


@dataclass
class StepCheck:
    """One optimiser step's check: where it was (global step, epoch, batch), how many of `values` are losses, the
    names of the gradients after them, and `values` ([losses..., largest |element| of each gradient], NaN or inf
    where a value is), copied towards the host without waiting; `read` waits for that copy alone."""

    where: tuple[int, int, int]
    n_losses: int
    names: list[str]
    values: Tensor
    ready: torch.cuda.Event | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.values.is_cuda:
            host = torch.empty(self.values.shape, dtype=self.values.dtype, pin_memory=True)
            self.values = host.copy_(self.values, non_blocking=True)
            self.ready = torch.cuda.Event()
            self.ready.record()

    def read(self) -> list[float]:
        if self.ready is not None:
            self.ready.synchronize()
        return self.values.tolist()


def step_values(
    stepped: list[tuple[str, nn.Parameter]], losses: list[Tensor], check_gradients: bool = True
) -> tuple[Tensor | None, list[str]]:
    """([the step's losses (one per micro-batch)..., the largest |element| of each gradient] as one fp32 device
    tensor, or None when there is nothing to check; the gradients' names in that order): one reduction per kind of
    gradient, no host read."""
    grads = [(n, p.grad) for n, p in stepped if p.grad is not None] if check_gradients else []
    kinds: dict[tuple, list[tuple[str, Tensor]]] = {}
    for name, grad in grads:
        kinds.setdefault((grad.device, grad.dtype), []).append((name, grad))
    parts = [loss.reshape(1).float() for loss in losses]
    parts += [torch.stack(torch._foreach_norm([g for _, g in kind], math.inf)).float() for kind in kinds.values()]
    if not parts:
        return None, []
    device = parts[0].device
    return torch.cat([part.to(device) for part in parts]), [name for kind in kinds.values() for name, _ in kind]


def read_problem(read: list[float], n_losses: int, names: list[str], pl_module: nn.Module) -> tuple[str, str] | None:
    """What was wrong with a step, from its `step_values` read back, or None: a non-finite loss ("training loss is
    nan", whether a weight was already broken, then an earlier step is the cause), else a non-finite gradient
    ("training gradient is nan" if any is NaN, else inf; "first in parameter <name>", in the module's order)."""
    bad_loss = next((v for v in read[:n_losses] if not math.isfinite(v)), None)
    if bad_loss is not None:
        name = first_nonfinite((n, p.detach()) for n, p in pl_module.named_parameters())
        detail = f"parameter {name} already non-finite" if name else "every parameter finite"
        return f"training loss is {bad_loss}", detail
    bad = {name: value for name, value in zip(names, read[n_losses:], strict=True) if not math.isfinite(value)}
    if not bad:
        return None
    first = next(name for name, _ in pl_module.named_parameters() if name in bad)
    value = math.nan if any(math.isnan(v) for v in bad.values()) else math.inf
    return f"training gradient is {value}", f"first in parameter {first}"


def skips_on_device(optimizer: Optimizer) -> bool:
    """Whether the optimiser skips a step on the device when told so through `found_inf` (as a gradient scaler tells
    it): torch's Adam and AdamW built with fused=True."""
    return isinstance(optimizer, torch.optim.Adam) and all(group.get("fused") for group in optimizer.param_groups)


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
