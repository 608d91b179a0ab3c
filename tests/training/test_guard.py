"""DivergenceGuard: a non-finite loss or gradient is caught before the optimiser step, stops the run (naming the step,
the parameter and the checkpoint to resume) or is skipped and counted up to callbacks.guard.max_skips."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from hgrn.config import ConfigError, exit_on_user_error
from hgrn.training.classification import ClassificationTask
from hgrn.training.guard import DivergenceGuard, newest_checkpoint, read_problem, step_values, stepped_parameters
from hgrn.training.optim import adamw, fused_by_default
from hgrn.training.run import train

SHORT = ["experiment=demo", "data.num_workers=0", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2"]
# the optimiser that skips a bad step on the device, the host judging it a step later (a GPU's default; here on the CPU)
ON_DEVICE = ["+optim.fused=true"]


def nan_loss_at(steps: Callable[[int], bool]) -> Callable:
    """A ClassificationTask.shared_step whose training loss is NaN at the global steps `steps` selects."""
    original = ClassificationTask.shared_step

    def shared_step(self, batch, split):
        loss = original(self, batch, split)
        return loss * float("nan") if split == "train" and steps(self.global_step) else loss

    return shared_step


# ------------------------------------------------------------------------------------------------ whole runs


@pytest.mark.parametrize("optimiser", [[], ON_DEVICE], ids=["read-at-the-step", "skipped-on-device"])
def test_stop_names_the_step_and_the_newest_checkpoint(make_config, listops_dir, tmp_path, monkeypatch, optimiser):
    monkeypatch.setattr(ClassificationTask, "shared_step", nan_loss_at(lambda step: step == 5))
    with pytest.raises(FloatingPointError) as error:
        train(make_config(*SHORT, f"data.data_dir={listops_dir}", "trainer.max_epochs=2", *optimiser))
    message = str(error.value)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert re.fullmatch(
        r"training loss is nan at step 5 \(epoch 1, batch 1\), every parameter finite; lower optim\.lr or set "
        r"trainer\.gradient_clip_val, or skip such steps with callbacks\.guard\.mode=skip, then resume with "
        rf"ckpt_path={re.escape(str(last))}",
        message,
    ), message
    assert last.is_file() and torch.load(last, weights_only=False)["global_step"] == 4
    assert not (tmp_path / "results.json").exists()


def test_stop_before_any_checkpoint_says_the_run_must_restart(make_config, listops_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ClassificationTask, "shared_step", nan_loss_at(lambda step: step == 1))
    with pytest.raises(SystemExit) as exit_, exit_on_user_error():
        train(make_config(*SHORT, f"data.data_dir={listops_dir}", "trainer.max_epochs=1"))
    assert exit_.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert re.fullmatch(
        r"error: training loss is nan at step 1 \(epoch 0, batch 1\), every parameter finite; no checkpoint of this "
        r"run exists yet, so it must restart: lower optim\.lr .* and run it again",
        line,
    ), line
    assert not list((tmp_path / "checkpoints").glob("*.ckpt")) and not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("optimiser", [[], ON_DEVICE], ids=["read-at-the-step", "skipped-on-device"])
def test_a_nan_gradient_names_its_parameter(make_config, listops_dir, tmp_path, monkeypatch, optimiser):
    victim = {}

    def poison_one_gradient(self):
        if self.global_step == 2:
            name, parameter = list(self.named_parameters())[-2]  # not the first: the message must find it
            parameter.grad.view(-1)[0] = float("nan")
            victim["name"] = name

    monkeypatch.setattr(ClassificationTask, "on_after_backward", poison_one_gradient, raising=False)
    with pytest.raises(FloatingPointError) as error:
        train(make_config(*SHORT, f"data.data_dir={listops_dir}", "trainer.max_epochs=1", *optimiser))
    assert re.match(
        rf"training gradient is nan at step 2 \(epoch 0, batch 2\), first in parameter {re.escape(victim['name'])}; "
        r".*no checkpoint of this run exists yet",
        str(error.value),
    ), str(error.value)


def test_skip_finishes_the_run_with_finite_weights_and_logs_the_count(make_config, listops_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ClassificationTask, "shared_step", nan_loss_at(lambda step: step in (1, 5)))
    skip = ["callbacks.guard.mode=skip", "callbacks.guard.max_skips=2", "trainer.log_every_n_steps=1"]
    result = train(make_config(*SHORT, *skip, f"data.data_dir={listops_dir}", "trainer.max_epochs=2"))
    assert result.steps == 8 and (tmp_path / "results.json").is_file()
    # the run's final state (last.ckpt is the best-checkpoint callback's latest save, which a worse epoch skips)
    saved = torch.load(tmp_path / "checkpoints" / "step-00000008.ckpt", weights_only=False)
    assert all(torch.isfinite(weight).all() for weight in saved["state_dict"].values())
    assert saved["callbacks"]["DivergenceGuard"] == {"skipped": 2}
    with (tmp_path / "csv" / "version_0" / "metrics.csv").open() as f:
        counts = {
            int(row["step"]): float(row["train/skipped_steps"])
            for row in csv.DictReader(f)
            if row.get("train/skipped_steps")
        }
    assert counts[0] == 0 and counts[1] == 1 and counts[4] == 1 and counts[7] == 2, counts


def test_skip_stops_once_more_than_max_skips_were_skipped(make_config, listops_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ClassificationTask, "shared_step", nan_loss_at(lambda step: True))
    skip = ["callbacks.guard.mode=skip", "callbacks.guard.max_skips=2"]
    with pytest.raises(FloatingPointError) as error:
        train(make_config(*SHORT, *skip, f"data.data_dir={listops_dir}", "trainer.max_epochs=1"))
    assert re.fullmatch(
        r"training loss is nan at step 2 \(epoch 0, batch 2\), every parameter finite; 3 steps skipped, more than "
        r"callbacks\.guard\.max_skips=2; no checkpoint of this run exists yet, so it must restart: lower optim\.lr or "
        r"set trainer\.gradient_clip_val and run it again",
        str(error.value),
    ), str(error.value)
    assert not (tmp_path / "results.json").exists()


# ------------------------------------------------------------------------------------------------ the parts


class Toy(L.LightningModule):
    """A linear regression whose loss is NaN at the global steps in `nan_steps`, recording its weights per step."""

    def __init__(self, nan_steps: set[int], fused: bool = False) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.nan_steps, self.fused = nan_steps, fused
        self.weights: list[torch.Tensor] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.weights.append(self.layer.weight.detach().clone())
        loss = self.layer(batch).pow(2).mean()
        return loss * float("nan") if self.global_step in self.nan_steps else loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=0.1, weight_decay=0.1, fused=self.fused)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.randn(16, 4), batch_size=4)


def toy_trainer(guard: DivergenceGuard, steps: int, accelerator: str = "cpu") -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        callbacks=[guard],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator=accelerator,
        devices=1,
    )


def fit_toy(guard: DivergenceGuard, nan_steps: set[int], steps: int, fused: bool = False) -> Toy:
    toy = Toy(nan_steps, fused)
    toy_trainer(guard, steps).fit(toy)
    return toy


@pytest.mark.parametrize("fused", [False, True], ids=["read-at-the-step", "skipped-on-device"])
def test_a_skipped_step_leaves_the_weights_alone(fused):
    guard = DivergenceGuard(mode="skip", max_skips=1)
    toy = fit_toy(guard, {1}, steps=3, fused=fused)
    before_skip, after_skip, after_good_step = toy.weights[1], toy.weights[2], toy.layer.weight.detach()
    assert torch.equal(before_skip, after_skip)  # no update, not even AdamW's weight decay
    assert not torch.equal(after_skip, after_good_step) and torch.isfinite(after_good_step).all()
    assert guard.skipped == 1


def step_problem(model, stepped, losses, check_gradients=True):
    """The guard's verdict on the step about to be applied, read at once."""
    values, names = step_values(stepped, losses, check_gradients)
    return None if values is None else read_problem(values.tolist(), len(losses), names, model)


@pytest.mark.parametrize("accelerator", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_a_stop_on_the_device_path_comes_a_step_later_from_the_same_weights(accelerator):
    """The fused optimiser skipped the bad step; the host raises before the next step is applied."""
    toy = Toy({1}, fused=True)
    with pytest.raises(FloatingPointError, match=r"training loss is nan at step 1 \(epoch 0, batch 1\)"):
        toy_trainer(DivergenceGuard(mode="stop"), 5, accelerator).fit(toy)
    assert len(toy.weights) == 3  # step 2's forward and backward ran, its optimiser step did not
    # the weights before the bad step (Lightning hands the module back on the CPU, the record stays on the device)
    assert torch.equal(toy.layer.weight.detach().cpu(), toy.weights[1].cpu())
    assert torch.equal(toy.weights[2], toy.weights[1])


def test_the_last_step_is_judged_when_training_ends():
    guard = DivergenceGuard(mode="skip", max_skips=5)
    fit_toy(guard, {2}, steps=3, fused=True)
    assert guard.skipped == 1


def test_step_problem_finds_the_first_nonfinite_gradient_by_name():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    stepped = stepped_parameters(model, torch.optim.SGD(model.parameters(), lr=0.1))
    model(torch.ones(1, 2)).sum().backward()
    assert step_problem(model, stepped, []) is None
    model[1].weight.grad[0, 1] = float("inf")
    model[1].bias.grad[0] = float("nan")
    assert step_problem(model, stepped, []) == ("training gradient is nan", "first in parameter 1.weight")
    model[1].bias.grad.zero_()
    assert step_problem(model, stepped, []) == ("training gradient is inf", "first in parameter 1.weight")
    assert step_problem(model, stepped, [], check_gradients=False) is None  # fp16: the grad scaler's job


def test_a_parameter_the_optimiser_does_not_step_is_not_checked():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    stepped = stepped_parameters(model, torch.optim.SGD(model[1].parameters(), lr=0.1))
    assert [name for name, _ in stepped] == ["1.weight", "1.bias"]
    model(torch.ones(1, 2)).sum().backward()
    model[0].weight.grad[0, 0] = float("nan")  # a frozen layer's gradient is not the step's
    assert step_problem(model, stepped, []) is None


def test_step_problem_reports_the_first_nonfinite_loss_of_the_step_before_its_gradients():
    model = nn.Sequential(nn.Linear(2, 2))
    stepped = stepped_parameters(model, torch.optim.SGD(model.parameters(), lr=0.1))
    model(torch.ones(1, 2)).sum().backward()
    finite = [torch.tensor(1.5), torch.tensor(0.5)]
    assert step_problem(model, stepped, finite) is None
    losses = [torch.tensor(1.5), torch.tensor(float("inf")), torch.tensor(float("nan"))]  # accumulated micro-batches
    model[0].weight.grad[0, 0] = float("nan")
    assert step_problem(model, stepped, losses) == ("training loss is inf", "every parameter finite")
    with torch.no_grad():
        model[0].bias[1] = float("nan")
    assert step_problem(model, stepped, losses, check_gradients=False) == (
        "training loss is inf",
        "parameter 0.bias already non-finite",
    )


def training_checkpoint(step: int, mid_batch: bool = False) -> dict:
    """The parts of a Lightning checkpoint that resume looks at (hgrn.training.resume.resume_problem)."""
    progress = {"started": step + mid_batch, "processed": step}
    loops = {"fit_loop": {"epoch_loop.batch_progress": {"total": progress}}}
    return {"global_step": step, "state_dict": {}, "optimizer_states": [], "loops": loops}


def test_the_checkpoint_to_resume_got_furthest(tmp_path: Path):
    """Furthest by step among the checkpoints resume accepts (a mid-batch one, though further, is passed over)."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    trainer = L.Trainer(callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=folder)], logger=False)
    assert newest_checkpoint(trainer) is None
    saved = {"best.ckpt": 8, "step-00000012.ckpt": 12, "last.ckpt": 12, "interrupted.ckpt": 11, "newer.ckpt": 10}
    for age, (name, step) in enumerate([*saved.items(), ("mid-batch.ckpt", 13)]):
        torch.save(training_checkpoint(step, mid_batch=name == "mid-batch.ckpt"), folder / name)
        os.utime(folder / name, (1_000_000 + age, 1_000_000 + age))  # later in the list: written later
    (folder / "broken.ckpt").write_bytes(b"cut short")
    assert newest_checkpoint(trainer) == folder / "last.ckpt"  # furthest, and last.ckpt wins the tie at step 12
    (folder / "last.ckpt").unlink()
    assert newest_checkpoint(trainer) == folder / "step-00000012.ckpt"


@pytest.mark.parametrize(("mode", "max_skips"), [("halt", 1), ("skip", -1)])
def test_a_bad_setting_is_a_config_error(mode: str, max_skips: int):
    with pytest.raises(ConfigError, match=r"callbacks\.guard\.(mode|max_skips)="):
        DivergenceGuard(mode=mode, max_skips=max_skips)


def test_the_default_config_stops():
    from hgrn.config import compose

    guard = compose("paths.output_dir=RUN").callbacks.guard
    assert (guard.mode, guard.max_skips) == ("stop", 10)


def test_a_gpu_run_gets_the_fused_optimiser_unless_it_clips_or_its_config_chooses():
    """Fused (the guard's skip on the device) on a GPU; not where Lightning's mixed precision would refuse to clip
    gradients for it, nor where the config says, nor for an optimiser without a fused implementation."""
    from functools import partial

    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    for factory in (partial(torch.optim.AdamW, lr=1e-3), partial(adamw, lr=1e-3)):
        assert fused_by_default(factory, gpu, clips_gradients=False)
        assert not fused_by_default(factory, gpu, clips_gradients=True)
        assert not fused_by_default(factory, cpu, clips_gradients=False)
    assert not fused_by_default(partial(torch.optim.AdamW, lr=1e-3, fused=False), gpu, clips_gradients=False)
    assert not fused_by_default(partial(torch.optim.RMSprop, lr=1e-3), gpu, clips_gradients=False)
