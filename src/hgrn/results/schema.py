"""The records a run leaves behind, versioned and validated: results.json of a training run, evaluation.json of an
evaluation (perplexity, lm-eval, ImageNet, a checkpoint's test pass). Both kinds are read by `load_record`.

Tables are rendered only from these files. A record exists only for a run that finished its process: it is written
once, at the end, atomically, with mode 0644 (colleagues render tables from it), with status "completed"; a killed run
leaves none (its checkpoints stay, for resuming). A record that does not validate raises ValueError naming the key.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from hgrn.io import atomic_write
from hgrn.results.migrate import from_version_1

SCHEMA_VERSION = 2
RECORD_MODE = 0o644
TRAINED_KEYS = ("results", "experiment", "overrides", "seed", "recipe", "finished", "monitor", "monitor_mode", "best")


@dataclass
class TrainingRecord:
    """One training run. `overrides` are Hydra's task overrides (None: not recorded, e.g. a run composed in Python);
    `recipe`: none of them changes the model, data or budget (hgrn.results.identity); `finished`: training ran its
    whole budget (`planned_steps` optimiser steps, or its recipe's early stop).

    metrics: test metrics at the best validation checkpoint, and `<monitor>_best`, the monitor's best value.
    metrics_last: test metrics of the weights at the end of training (empty when never measured).
    history: the learning curve, one row per validation (its `val/*` metrics) with the epoch's training means
        (`train/*`, Lightning's `train/*_epoch`) in the row of the epoch's last step; `step` is the optimiser step.
    """

    experiment: str
    overrides: list[str] | None
    seed: int | None
    recipe: bool
    finished: bool
    task: str  # the LightningModule: ClassificationTask | LanguageModelingTask | ...
    monitor: str  # the validation metric that chose the best checkpoint, e.g. val/acc
    monitor_mode: str  # max | min
    metrics: dict[str, float]
    metrics_last: dict[str, float]
    config: dict[str, Any]  # the full resolved Hydra config
    parameters: int
    throughput: dict[str, float]  # train_samples_per_s, train_tokens_per_s, train_step_seconds, fit_wall_seconds
    wall_seconds: float  # every process of the run, resumed ones included
    peak_memory_bytes: int
    steps: int
    planned_steps: int | None  # the budget in optimiser steps (None: unbounded)
    epochs: int
    best_checkpoint: str | None
    history: list[dict[str, float]]
    versions: dict[str, str]
    git: dict[str, Any]  # commit, dirty
    hardware: dict[str, Any]  # accelerator, device name, device count, cpu count
    started_at: str
    finished_at: str
    status: str = "completed"
    kind: str = "training"
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    peak_memory_bytes_per_process: list[int] = field(default_factory=list)  # rank order; peak_memory_bytes: their max

    def best(self) -> float | None:
        """The validation monitor's best value (None when the run never validated)."""
        return self.metrics.get(f"{self.monitor}_best")


@dataclass
class EvaluationRecord:
    """One evaluation of a checkpoint. `evaluation` names what was measured (test, perplexity, lm-eval, imagenet);
    `trained`: the training record of the run that made the checkpoint (TRAINED_KEYS, copied when the evaluation
    ran; None when the checkpoint has none beside it); `recipe`: the evaluation's own overrides are neutral."""

    experiment: str
    evaluation: str
    checkpoint: str | None
    overrides: list[str] | None
    recipe: bool
    trained: dict[str, Any] | None
    metrics: dict[str, float]
    parameters: int | None
    config: dict[str, Any]
    versions: dict[str, str]
    git: dict[str, Any]
    hardware: dict[str, Any]
    finished_at: str
    status: str = "completed"
    kind: str = "evaluation"
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)


Record = TrainingRecord | EvaluationRecord
KINDS: dict[str, type[TrainingRecord] | type[EvaluationRecord]] = {
    "training": TrainingRecord,
    "evaluation": EvaluationRecord,
}


def _accepts(hint: Any, value: Any) -> bool:
    """Whether a JSON value fits a field's type hint, elements of lists and values of dicts included."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return any(_accepts(arg, value) for arg in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    if origin is list:
        return isinstance(value, list) and all(_accepts(args[0], v) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_accepts(args[1], v) for v in value.values())
    return isinstance(value, hint)


def validate(record: Any) -> Record:
    """A loaded record as its dataclass; a schema-1 results.json is migrated (hgrn.results.migrate). Raises
    ValueError naming what is wrong: version, kind, missing or unknown keys, a wrong type, a non-finite metric."""
    if not isinstance(record, dict):
        raise ValueError(f"a record is a JSON object; got {type(record).__name__}")
    if record.get("schema_version") == 1:
        record = from_version_1(record)
    if record.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"schema_version={record.get('schema_version')!r}; this code reads versions 1 and 2")
    kind = record.get("kind")
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; a record is one of {sorted(KINDS)}")
    cls = KINDS[kind]
    hints = get_type_hints(cls)
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing, unknown = sorted(required - set(record)), sorted(set(record) - set(hints))
    if missing or unknown:
        raise ValueError(f"{kind} record keys: missing {missing}, unknown {unknown}")
    for name, value in record.items():
        if not _accepts(hints[name], value):
            raise ValueError(f"key {name!r} should be {hints[name]}; got {value!r}"[:300])
    if record["status"] != "completed":
        raise ValueError(f"status is {record['status']!r}, not 'completed'")
    for name in ("metrics", "metrics_last"):
        bad = sorted(k for k, v in record.get(name, {}).items() if not math.isfinite(v))
        if bad:
            raise ValueError(f"{name} {bad} are not finite numbers")
    if kind == "training" and record["monitor_mode"] not in ("min", "max"):
        raise ValueError(f"monitor_mode={record['monitor_mode']!r}; it is 'min' or 'max'")
    if kind == "evaluation" and record["trained"] is not None and sorted(record["trained"]) != sorted(TRAINED_KEYS):
        raise ValueError(f"trained has keys {sorted(record['trained'])}; expected {sorted(TRAINED_KEYS)}")
    return cls(**record)


def write_record(path: Path | str, record: Record) -> Path:
    """Validate, then write atomically (hgrn.io.atomic_write: readers never see a half-written record) with mode
    0644 whatever the umask, so that colleagues can render tables from it."""
    path = Path(path)
    data = asdict(record)
    validate(json.loads(json.dumps(data)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        os.fchmod(f.fileno(), RECORD_MODE)
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def load_record(path: Path | str) -> Record:
    """Read and validate a results.json or evaluation.json. Raises OSError (unreadable) or ValueError (not JSON, or
    not a valid record: the message names what is wrong)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error.msg} at line {error.lineno}); truncated?") from None
    return validate(data)
