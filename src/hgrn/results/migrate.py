"""Reading results.json files of schema version 1 (before run identity and evaluation records), in memory: the file
is never rewritten and no measured number changes.

Version 1 recorded no overrides, so a migrated run is never known to follow its recipe (`recipe` False, `overrides`
None) and stays out of the paper tables' main rows. Whether it finished is judged from its config: it ran its last
epoch with no time limit that could have cut it short. Its history keeps version 1's rows, whose `train/*` values
were not the epoch means (`extra.migrated_from_schema` says so).
"""

from __future__ import annotations

from typing import Any


def from_version_1(record: dict[str, Any]) -> dict[str, Any]:
    """A version 1 training record as a version 2 one (a new dict; the input is left alone)."""
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    trainer, task = config.get("trainer") or {}, config.get("task") or {}
    max_epochs, epochs = trainer.get("max_epochs"), record.get("epochs")
    finished = (
        isinstance(max_epochs, int)
        and max_epochs > 0
        and isinstance(epochs, int)
        and epochs >= max_epochs
        and trainer.get("max_time") is None
    )
    extra = dict(record.get("extra") or {})
    extra["migrated_from_schema"] = 1
    return {
        **record,
        "schema_version": 2,
        "kind": "training",
        "overrides": None,
        "seed": config.get("seed"),
        "recipe": False,
        "finished": finished,
        "monitor": task.get("monitor", "val/loss"),
        "monitor_mode": task.get("monitor_mode", "min"),
        "metrics_last": {},
        "planned_steps": None,
        "extra": extra,
    }
