"""What a run is: its experiment, its overrides and its seed, and whether the overrides kept the experiment's recipe.

A run follows its recipe when none of its command-line overrides (Hydra's task overrides) changes the model, the
data or the training budget. Each override key falls in one of four classes:

- identity: `experiment` and `seed` (the seed is recorded on its own; tables average over seeds);
- neutral: where and how a run executes or what it logs, not what it computes: `paths`, `logger`, `hydra`,
  `resume`, `data.num_workers`, `data.data_dir`, `trainer.devices`, `trainer.num_nodes` (a recipe's total batch is
  divided over the processes), `trainer.log_every_n_steps`, `trainer.enable_progress_bar`, the progress bar,
  resume-point, Ctrl-C and learning-rate-monitor callbacks, the GPU trainers `trainer=gpu|ddp|fsdp` (one or
  several GPUs, the same bf16 precision) and `task.compile` (the same computation, fused: only rounding differs);
- tunable: `optim.*` and `sched.*`, the optimiser settings a sweep varies: runs that differ only there are one
  sweep, and a table shows its best setting by the validation monitor;
- everything else deviates: the model, the data (`data.batch_size` included), the task, the trainer's budget and
  precision (`trainer.max_epochs`, `max_steps`, `limit_*_batches`, `fast_dev_run`, `precision`,
  `val_check_interval`, ...), any other callback, `name`, and `ckpt_path` (training that starts from other weights).

The rules are data (the tuples below), so a table that accepts more (the expand-ratio ablation accepts runs that
deviate only in `model.mixer_options.expand_ratio`) passes its own keys to `deviations`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

IDENTITY = ("experiment", "seed")
NEUTRAL = (
    "paths",
    "logger",
    "hydra",
    "resume",
    "data.num_workers",
    "data.data_dir",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.max_time",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "task.compile",
    "callbacks.progress",
    "callbacks.step",
    "callbacks.interrupt",
    "callbacks.lr_monitor",
)
NEUTRAL_CHOICES = {"trainer": ("gpu", "ddp", "fsdp")}
TUNABLE = ("optim", "sched")

_OVERRIDE = re.compile(r"^(?P<op>\+\+|\+|~)?(?P<key>[^=@]+)(?:@[^=]*)?(?:=(?P<value>.*))?$")
_TAG_LENGTH = 64  # W&B's limit on one tag


def override_key(override: str) -> tuple[str, str | None]:
    """("model.d_model", "16") for "model.d_model=16"; ("callbacks.progress", None) for "~callbacks.progress"."""
    match = _OVERRIDE.match(override.strip())
    if match is None:
        raise ValueError(f"{override!r} is not a Hydra override; write key=value, e.g. optim.lr=1e-3")
    return match["key"].strip(), match["value"]


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def is_neutral(override: str, also: Sequence[str] = ()) -> bool:
    """Whether an override leaves what the run computes unchanged (`also`: keys a caller counts as neutral too)."""
    key, value = override_key(override)
    if key in NEUTRAL_CHOICES:
        return value in NEUTRAL_CHOICES[key]
    return _under(key, (*IDENTITY, *NEUTRAL, *also))


def tuned(overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides that set tunable optimiser settings: the run's point in a sweep (sorted)."""
    return tuple(sorted(o for o in overrides if _under(override_key(o)[0], TUNABLE)))


def deviations(overrides: Sequence[str], allowed: Sequence[str] = ()) -> tuple[str, ...]:
    """The overrides that change the model, the data or the budget (`allowed`: keys a table accepts as well)."""
    return tuple(o for o in overrides if not is_neutral(o, allowed) and not tuned([o]))


def follows_recipe(overrides: Sequence[str] | None, allowed: Sequence[str] = ()) -> bool:
    """True when the overrides are known and none deviates (None: not recorded, so not known to follow it)."""
    return overrides is not None and not deviations(overrides, allowed)


def shown_overrides(overrides: Sequence[str] | None) -> tuple[str, ...]:
    """The overrides worth showing beside a run's numbers: those that deviate or tune (experiment and seed are shown
    on their own)."""
    return tuple(o for o in overrides or () if not is_neutral(o))


def wandb_group(experiment: str, sweep_dir: str | None) -> str:
    """A single run is grouped with its experiment's runs; every run of one multirun sweep in one group."""
    return experiment if sweep_dir is None else f"{experiment}/{Path(sweep_dir).name}"


def wandb_tags(experiment: str, overrides: Sequence[str] | None) -> list[str]:
    """The experiment, whether the run follows its recipe, its seed override and each override worth showing (W&B
    caps a tag at 64 characters)."""
    recipe = "recipe" if follows_recipe(overrides) else "deviates"
    seeds = [o for o in overrides or () if override_key(o)[0] == "seed"]
    return [tag[:_TAG_LENGTH] for tag in (experiment, recipe, *seeds, *shown_overrides(overrides))]
