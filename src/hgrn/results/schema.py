"""results.json: the one machine-readable record a run leaves behind, versioned and validated.

Tables are rendered only from these files. A file exists only for a run that finished: it is written once, at the
end, atomically, with status "completed"; a killed run leaves none (its checkpoints stay, for resuming).
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from hgrn.io import atomic_write

SCHEMA_VERSION = 1


@dataclass
class RunResult:
    experiment: str
    task: str  # classification | language_modeling
    metrics: dict[str, float]  # final test metrics at the best validation checkpoint, and val/<monitor>_best
    config: dict[str, Any]  # the full resolved Hydra config
    parameters: int
    throughput: dict[str, float]  # train_samples_per_s, train_tokens_per_s, train_step_seconds, fit_wall_seconds
    wall_seconds: float
    peak_memory_bytes: int
    steps: int
    epochs: int
    best_checkpoint: str | None
    history: list[dict[str, float]]  # validation metrics per validation run (the learning curve)
    versions: dict[str, str]
    git: dict[str, Any]  # commit, dirty
    hardware: dict[str, Any]  # accelerator, device name, device count, cpu count
    started_at: str
    finished_at: str
    status: str = "completed"
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)


def _accepts(hint: Any, value: Any) -> bool:
    """Whether a JSON value fits a field's type hint (containers checked at the top level)."""
    if get_origin(hint) in (Union, UnionType):
        return any(_accepts(arg, value) for arg in get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    return isinstance(value, get_origin(hint) or hint)


def validate(record: dict[str, Any]) -> RunResult:
    """Check a loaded results.json against the schema; raises ValueError naming the offending key."""
    if record.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"schema_version={record.get('schema_version')!r}; this code reads version {SCHEMA_VERSION}")
    hints = get_type_hints(RunResult)
    required = {f.name for f in fields(RunResult) if f.default is MISSING and f.default_factory is MISSING}
    missing, unknown = sorted(required - set(record)), sorted(set(record) - set(hints))
    if missing or unknown:
        raise ValueError(f"results.json keys: missing {missing}, unknown {unknown}")
    for name, value in record.items():
        if not _accepts(hints[name], value):
            raise ValueError(f"results.json key {name!r} should be {hints[name]}; got {value!r}")
    if record["status"] != "completed":
        raise ValueError(f"results.json status is {record['status']!r}, not 'completed'")
    if not all(_accepts(float, v) for v in record["metrics"].values()):
        raise ValueError(f"results.json metrics must be numbers; got {record['metrics']}")
    return RunResult(**record)


def write_results(path: Path | str, result: RunResult) -> Path:
    """Write atomically (hgrn.io.atomic_write): readers never see a half-written record, and the file gets the
    umask's mode (0644), so colleagues can read it."""
    path = Path(path)
    record = asdict(result)
    validate(json.loads(json.dumps(record)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        json.dump(record, f, indent=2, sort_keys=True)
    return path


def load_results(path: Path | str) -> RunResult:
    return validate(json.loads(Path(path).read_text()))
