"""Run records (results.json, evaluation.json), the environment they describe, and the tables rendered from them."""

from hgrn.results.evaluation import write_evaluation
from hgrn.results.schema import (
    SCHEMA_VERSION,
    EvaluationRecord,
    Record,
    TrainingRecord,
    load_record,
    validate,
    write_record,
)

__all__ = [
    "SCHEMA_VERSION",
    "EvaluationRecord",
    "Record",
    "TrainingRecord",
    "load_record",
    "validate",
    "write_evaluation",
    "write_record",
]
