"""What every task shares: optimiser and schedule from config, metric logging. Non-finite losses and gradients are
the DivergenceGuard callback's (hgrn.training.guard)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from hgrn import ops
from hgrn.models.backbone import compile_module
from hgrn.training.optim import fused_by_default, param_groups

SPLITS = ("train", "val", "test")
OptimizerFactory = Callable[[list[dict]], Optimizer]
ScheduleFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler | dict[str, Any]]


class TaskModule(L.LightningModule):
    """A LightningModule around `self.model`; subclasses build the model and implement `shared_step`.

    optim: a partial optimiser (Hydra `_partial_: true`), called with the parameter groups.
    sched: a partial schedule called with the optimizer, and total_steps=the run's optimiser steps when it takes
        total_steps and the config does not fix it; it returns a scheduler stepped every optimiser step, or
        Lightning's scheduler dict (e.g. interval 'epoch'); or None.
    monitor/monitor_mode: the validation metric that selects the best checkpoint (tested at the end).
    fp32_evaluation: validation and test run without autocast, in the weights' float32, whatever the trainer's
        mixed precision does for training (Zoology trains under bf16 autocast and evaluates in fp32).
    """

    model: nn.Module

    def __init__(
        self,
        optim: OptimizerFactory,
        sched: ScheduleFactory | None = None,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        fp32_evaluation: bool = False,
    ) -> None:
        super().__init__()
        if monitor_mode not in ("min", "max"):
            raise ValueError(f"monitor_mode={monitor_mode!r} must be 'min' or 'max'")
        self.optim_factory, self.sched_factory = optim, sched
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.fp32_evaluation = fp32_evaluation
        self._logged_metrics: dict[str, set[str]] = {split: set() for split in SPLITS}  # this epoch's, per split
        # whether this training step's own values are logged: training_step asks step_values_read; a step called
        # outside a trainer (a benchmark's bare step) logs nothing, as Lightning's self.log there would not either
        self._step_values_read = False

    def shared_step(self, batch: dict[str, Tensor], split: str) -> Tensor:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        # A non-finite loss is caught before the optimiser step by hgrn.training.guard.DivergenceGuard
        # (callbacks.guard), which also sees non-finite gradients and knows the run's checkpoints.
        self._step_values_read = self.step_values_read(batch_idx)
        return self.shared_step(batch, "train")

    def step_values_read(self, batch_idx: int) -> bool:
        """Whether anything reads this training step's own logged values: the loggers, which Lightning writes every
        `log_every_n_steps` optimiser steps (its LearningRateMonitor asks the logger connector the same question), or
        a progress bar that shows them (after every batch; every `metrics_every_n_steps` for
        hgrn.training.callbacks.ProgressBar). Other steps neither compute nor log them: each `self.log` call costs
        host time (two of them: ~10% of a tiny MQAR model's training step on a CPU, measured), and a small model's
        GPU step waits on the host."""
        trainer = self.trainer
        if trainer.fast_dev_run or trainer._logger_connector.should_update_logs:
            return True
        bar = trainer.progress_bar_callback
        return bar is not None and bar.is_enabled and (batch_idx + 1) % getattr(bar, "metrics_every_n_steps", 1) == 0

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        with self.evaluation_precision():
            self.shared_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        with self.evaluation_precision():
            self.shared_step(batch, "test")

    def evaluation_precision(self) -> AbstractContextManager:
        """Inside the trainer's autocast: switch it off for fp32_evaluation, else leave it as it is."""
        return torch.autocast(self.device.type, enabled=False) if self.fp32_evaluation else nullcontext()

    def build_optimizer(self, clips_gradients: bool | None = None) -> Optimizer:
        """The optimiser over the model's parameter groups (hgrn.training.optim.param_groups); fused where
        `fused_by_default` says (one kernel per step instead of several per parameter group, and a step it can skip
        on the device: hgrn.training.guard). clips_gradients: whether the run clips (default: its trainer's
        gradient_clip_val; a benchmark without a trainer passes its config's)."""
        if clips_gradients is None:
            clips_gradients = self._trainer is not None and bool(self._trainer.gradient_clip_val)
        fused = fused_by_default(self.optim_factory, self.device, clips_gradients)
        return self.optim_factory(param_groups(self.model), **({"fused": True} if fused else {}))

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer()
        if self.sched_factory is None:
            return optimizer
        configured = getattr(self.sched_factory, "keywords", {})  # a recipe may fix the schedule's length itself
        steps = {}
        if "total_steps" in inspect.signature(self.sched_factory).parameters and "total_steps" not in configured:
            steps["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.sched_factory(optimizer, **steps)
        if isinstance(scheduler, dict):
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def add_split_metrics(self, name: str, make: Callable[[], nn.Module]) -> None:
        """One metric object per split, as attributes train_<name>, val_<name>, test_<name> (logged per epoch)."""
        for split in SPLITS:
            setattr(self, f"{split}_{name}", make())

    def split_metric(self, split: str, name: str) -> nn.Module:
        return getattr(self, f"{split}_{name}")

    def log_loss_and_accuracy(
        self, split: str, loss: Tensor, logits: Tensor, labels: Tensor, weight: Tensor | float = 1.0
    ) -> None:
        """Accumulate this split's loss (weighted mean) and accuracy over the epoch, and log them: per step while
        training (on the steps that read them), and per epoch from the metric objects. A batch without labels (only a
        token task's can be) leaves the accuracy."""
        predictions = logits.argmax(-1)
        if len(labels):
            self.split_metric(split, "acc").update(predictions, labels)
        step_values = split == "train" and self._step_values_read
        step_accuracy = (predictions == labels).float().mean() if step_values and len(labels) else None
        self.split_metric(split, "loss").update(loss.detach(), weight=weight)
        self.log_epoch_metric(split, "loss", loss.detach())
        self.log_epoch_metric(split, "acc", step_accuracy)

    def log_epoch_metric(self, split: str, name: str, step_value: Tensor | None = None, prog_bar: bool = True) -> None:
        """Log the split's metric object `name` (updated by the caller), which Lightning computes, syncs across
        processes and resets at the epoch's end: `<split>/<name>`, or `train/<name>_epoch` while training, where the
        batch's own `step_value` is logged as `train/<name>_step` on the steps that read it (`step_values_read`; the
        keys of Lightning's on_step + on_epoch logging). The object is handed to Lightning once per epoch, not per
        step: each `self.log` call walks the logged object's attributes to move it to the device, and an on_step
        metric object runs its forward, which recomputes the metric on the batch alone (py-spy on the CPU: 1 ms per
        step for a loss and an accuracy)."""
        if split == "train" and step_value is not None and self._step_values_read:
            self.log(f"train/{name}_step", step_value, on_step=True, on_epoch=False, prog_bar=prog_bar)
        if name not in self._logged_metrics[split]:
            self._logged_metrics[split].add(name)
            key = f"train/{name}_epoch" if split == "train" else f"{split}/{name}"
            self.log(key, self.split_metric(split, name), on_step=False, on_epoch=True, prog_bar=prog_bar)

    def on_train_epoch_start(self) -> None:
        self._logged_metrics["train"].clear()

    def on_validation_epoch_start(self) -> None:
        self._logged_metrics["val"].clear()

    def on_test_epoch_start(self) -> None:
        self._logged_metrics["test"].clear()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


class WeightedMean(Metric):
    """The running weighted mean of a split's loss: sum(value * weight) / sum(weight), summed across processes.
    torchmetrics' MeanMetric reads the device twice per update for its NaN filter, and with the filter off
    (nan_strategy='disable') it drops the weights; a non-finite training loss is the DivergenceGuard's to stop,
    and an evaluation's NaN shows as a NaN mean."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: Tensor | float = 1.0) -> None:
        weight = torch.broadcast_to(torch.as_tensor(weight, device=value.device), value.shape)
        self.total += (value.double() * weight).sum()
        self.weight += weight.double().sum()

    def compute(self) -> Tensor:
        return (self.total / self.weight).float()


def accuracy_metric(num_classes: int, **options: Any) -> MulticlassAccuracy:
    """A split's accuracy without torchmetrics' input checks (a host read of the labels' unique values per step;
    the loss already rejects a label outside the classes)."""
    return MulticlassAccuracy(num_classes, validate_args=False, **options)


COMPILE_CHOICES = (False, "parts", "blocks", "graphs")


def compile_model(model: nn.Module, compile: bool | str) -> None:
    """task.compile, in place: false leaves `model` eager; 'parts' compiles each block's norms and GLU (the token
    mixer eager), 'blocks' each block whole (one graph: the recurrence kernels are custom ops), 'graphs' as
    'blocks' with CUDA graphs (torch.compile's mode='reduce-overhead'; on a GPU, for fixed-shape batches such as LM
    blocks and MQAR: each new shape records anew), through model.compile_blocks (CausalLM, Backbone); a model
    without it (timm's) is compiled whole. Measured on an H200 (results/bench/NOTES.md): ListOps HGRN1 gains from
    'blocks', ListOps HGRN2 and MQAR ran fastest eager (before the recurrences were custom ops), the ViTs gain from
    'blocks' and more from 'graphs' (the ImageNet recipe's choice: their steps are bound by the host's launches), the
    LM anchor runs fastest with 'graphs'."""
    if compile not in COMPILE_CHOICES:
        raise ValueError(f"compile={compile!r}: choose false, parts, blocks or graphs")
    mode = "reduce-overhead" if compile == "graphs" else None
    if compile and hasattr(model, "compile_blocks"):
        model.compile_blocks(whole=compile != "parts", mode=mode)
    elif compile:
        ops.start_compile_workers()
        compile_module(model, mode)
