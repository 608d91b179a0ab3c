"""Resuming a run where it stopped, in its own directory, so that the result is the one an unbroken run would give.

- Where: `resume=auto` (the experiment's run under outputs/<name>/ that checkpointed last) or `resume=<run dir>`.
  `ResumeRunDir`, a Hydra callback in train.yaml, points hydra.run.dir there before Hydra creates a directory.
- From what: the newest checkpoint of the run that loads and was taken between two batches
  (`checkpoint_to_resume`); one that is truncated, unreadable or cut mid-batch is skipped with a warning.
- Written how: every N optimiser steps and at the end (`StepCheckpoint`), each file complete or absent
  (`AtomicCheckpointIO`: temporary file beside the target, fsync, rename).
- With what: Lightning restores the weights, optimiser, schedule, precision scaler, loop progress and callback
  states (best score, learning curve, throughput); `ResumeState` adds what it leaves out: every rank's RNG states,
  the running sums of the training epoch's metrics and the trainer's latest metrics, and it makes sure the data
  loader gets its position in the epoch (hgrn.data.sampler).
- Logged where: the same W&B run, whose id is kept in the run directory (`pin_wandb_run`).
"""

from __future__ import annotations

import random
import secrets
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from hydra.experimental.callback import Callback as HydraCallback
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_only, rank_zero_warn
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from torchmetrics import Metric

from hgrn.config import ConfigError
from hgrn.io import atomic_write

CHECKPOINTS = "checkpoints"
WANDB_ID_FILE = "wandb_run_id"


class ResumeRunDir(HydraCallback):
    """With `resume` set, run in the directory being resumed instead of a new outputs/<name>/<time>/. A hydra.run.dir
    given on the command line wins (Lightning's DDP launcher passes the parent's to its child processes)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        resume = config.get("resume")
        explicit = any(o.startswith("hydra.run.dir=") for o in config.hydra.overrides.hydra)
        if resume is None or explicit:
            return
        run_dir = run_to_resume(str(resume), Path(config.hydra.run.dir))
        with read_write(config.hydra.run):
            config.hydra.run.dir = str(run_dir)
        changed = changed_overrides(run_dir, list(config.hydra.overrides.task))
        if changed:  # Hydra is about to replace the run's .hydra/overrides.yaml with this command line's
            warnings.warn(f"resume: overrides differ from the run's last start: {sorted(changed)}", stacklevel=1)


def changed_overrides(run_dir: Path, overrides: list[str]) -> set[str]:
    """Overrides in one of the run's last start (.hydra/overrides.yaml) and this one but not both, `resume` aside:
    a resumed run should repeat the command that started it."""
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        return set()
    before, now = ({o for o in group if not o.startswith("resume=")} for group in (OmegaConf.load(saved), overrides))
    return before ^ now


def run_to_resume(resume: str, fresh: Path) -> Path:
    """`auto`: of the runs beside `fresh` (outputs/<name>/*), the one whose newest checkpoint is newest, else `fresh`
    itself (nothing to resume: a new run). Otherwise `resume` is the run directory."""
    if resume != "auto":
        if not Path(resume).is_dir():
            raise ConfigError(f"resume={resume} is not a run directory; give outputs/<name>/<time> or resume=auto")
        return Path(resume)
    runs = {path.parents[1]: path.stat().st_mtime_ns for path in sorted(fresh.parent.glob(f"*/{CHECKPOINTS}/*.ckpt"))}
    return max(runs, key=runs.__getitem__, default=fresh)


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> str | None:
    """What `trainer.fit` starts from: `ckpt_path` as given, or with `resume` the newest usable checkpoint of the run
    directory (None with `resume=auto` and no checkpoint yet: a new run)."""
    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")
    if resume is None:
        return ckpt_path
    if ckpt_path is not None:
        raise ConfigError(f"resume={resume} and ckpt_path={ckpt_path} both given; resume finds the checkpoint itself")
    if resume != "auto" and Path(resume).resolve() != run_dir.resolve():
        raise ConfigError(f"resume={resume} but the run directory is {run_dir}; leave hydra.run.dir to resume")
    candidates = sorted(run_dir.glob(f"{CHECKPOINTS}/*.ckpt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for path in candidates:
        problem = resume_problem(path)
        if problem is None:
            return str(path)
        rank_zero_warn(f"resume: skipping {path}: {problem}")
    if candidates or resume != "auto":
        raise ConfigError(f"resume={resume}: no checkpoint in {run_dir / CHECKPOINTS} can be resumed from")
    return None


def resume_problem(path: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None. Tensors are memory-mapped, not read: a truncated file fails
    on its missing zip directory, and a checkpoint saved inside a batch (Ctrl-C) would replay that batch twice."""
    return _inspect(path)[1]


def resumable_step(path: Path) -> int | None:
    """The global step a checkpoint resumes at, or None where `resume_problem` finds a reason not to resume from it."""
    checkpoint, problem = _inspect(path)
    return None if problem is not None else int(checkpoint["global_step"])


def _inspect(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the checkpoint, memory-mapped, or None; why it cannot be resumed from, or None)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # any failure to read means: not this one
        return None, f"it does not load ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    missing = {"state_dict", "optimizer_states", "loops"} - set(checkpoint)
    if missing:
        return checkpoint, f"it holds no training state ({', '.join(sorted(missing))} missing)"
    batches = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]
    if batches["started"] != batches["processed"]:
        return checkpoint, "it was saved inside a training batch"
    return checkpoint, None


def pin_wandb_run(cfg: DictConfig, run_dir: Path) -> None:
    """Give every W&B logger of the run the id kept in the run directory (made on the first start), with
    resume="allow", so a resumed run logs into the same W&B run. Only rank zero writes the id: it alone logs."""
    nodes = wandb_logger_nodes(cfg)
    if not nodes:
        return
    path = run_dir / WANDB_ID_FILE
    if path.is_file():
        run_id = path.read_text().strip()
    elif rank_zero_only.rank == 0:
        run_id = secrets.token_hex(4)
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(run_id + "\n")
    else:
        return
    for node in nodes:
        with open_dict(node):
            node.id = node.get("id") or run_id
            node.resume = "allow"


def wandb_logger_nodes(cfg: DictConfig) -> list[DictConfig]:
    """The config nodes of the run's W&B loggers (none, usually one)."""
    loggers = (cfg.get("logger") or {}).values()
    return [node for node in loggers if node is not None and str(node.get("_target_")).endswith("WandbLogger")]


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save straight into a hidden file beside the target, fsynced, then renamed over it: a checkpoint is
    complete or absent, even when the process is killed while writing (Lightning's own writer buffers the whole
    checkpoint in memory and may leave a partial file)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            torch.save(checkpoint, f)


class StepCheckpoint(ModelCheckpoint):
    """Resume points: a checkpoint every `every_n_train_steps` optimiser steps and one when training ends, as
    step-<step>.ckpt; the newest `keep` are kept. Its own class so that `train` tells it from the best-validation
    ModelCheckpoint."""

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 1000, keep: int = 2) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="step-{step:08d}",
            auto_insert_metric_name=False,
            monitor="step",
            mode="max",
            save_top_k=keep,
            every_n_train_steps=every_n_train_steps,
        )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save_now(trainer)

    def save_now(self, trainer: L.Trainer) -> None:
        """A resume point at the current optimiser step (called between two batches), unless one exists already."""
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


class ResumeState(L.Callback):
    """Saves, per rank, what Lightning's checkpoints leave out and an exact continuation needs: the RNG states
    (dropout, drop-path), the running sums of the training epoch's metric objects (an epoch interrupted half-way still
    reports the mean over all its batches) and the trainer's latest metrics (the learning curve's rows carry the
    previous epoch's training means). They are put back at on_train_start, after Lightning's own restore and the
    loaders' setup, when nothing but training draws random numbers.

    It also hands the data loader its saved position: Lightning does so only when it builds the training loader after
    restoring the loops, and a task whose configure_optimizers reads trainer.estimated_stepping_batches (TaskModule)
    makes it build the loader before.
    """

    KEY = "hgrn_resume"

    def __init__(self) -> None:
        self._pending: list[dict[str, Any]] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        mine = {
            "rng": rng_states(),
            "metrics": training_metric_states(pl_module),
            "logged": {key: _to_cpu(value) for key, value in trainer.callback_metrics.items()},
        }
        checkpoint[self.KEY] = gather(mine)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == "fit":  # Lightning also restores callbacks to test a checkpoint
            self._pending = checkpoint.get(self.KEY)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.fit_loop._load_combined_loader_states()  # a no-op where Lightning has loaded them already
        states, self._pending = self._pending, None
        if states is None:
            return
        if len(states) != trainer.world_size:
            saved = f"saved by {len(states)} processes, resumed by {trainer.world_size}"
            rank_zero_warn(f"resume: {saved}: RNG states and metric sums not restored")
            return
        mine = states[trainer.global_rank]
        load_training_metric_states(pl_module, mine["metrics"])
        trainer.callback_metrics.update(
            {key: _to_device(value, pl_module.device) for key, value in mine["logged"].items()}
        )
        set_rng_states(mine["rng"])


def gather(obj: Any) -> list[Any]:
    """obj from every rank, in rank order (a collective: Lightning saves checkpoints on all ranks at once)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def rng_states() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA generator states, in types that load with torch.load(weights_only=True)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def training_metric_states(pl_module: L.LightningModule) -> dict[str, dict[str, Any]]:
    """The accumulated state of the task's training metric objects (`train_*`, TaskModule.add_split_metrics), on
    the CPU; validation and test metrics start empty at every evaluation, so they need none."""
    return {
        name: {
            "state": {key: _to_cpu(value) for key, value in metric.metric_state.items()},
            "updates": metric._update_count,
        }
        for name, metric in pl_module.named_modules()
        if isinstance(metric, Metric) and name.startswith("train_")
    }


def load_training_metric_states(pl_module: L.LightningModule, saved: dict[str, dict[str, Any]]) -> None:
    modules = dict(pl_module.named_modules())
    for name, entry in saved.items():
        metric = modules[name]
        for key, value in entry["state"].items():
            setattr(metric, key, _to_device(value, pl_module.device))
        metric._update_count = entry["updates"]
        metric._computed = None


def _to_cpu(value: Any) -> Any:
    return [v.detach().cpu() for v in value] if isinstance(value, list) else value.detach().cpu()


def _to_device(value: Any, device: torch.device) -> Any:
    return [v.to(device) for v in value] if isinstance(value, list) else value.to(device)
