"""The data of the task YAMLs beside this file: local copies of the evaluation sets (hgrn.eval.task_data), never the
hub. lm-eval calls a task's `custom_dataset` with the run's metadata and the task's `dataset_kwargs` as keywords."""

from typing import Any

from hgrn.eval.task_data import load_task_data


def local_data(local_task: str, **metadata: Any) -> Any:
    """The splits of `local_task` (a DatasetDict); the run's metadata (model arguments, task version) is not needed."""
    return load_task_data(local_task)
