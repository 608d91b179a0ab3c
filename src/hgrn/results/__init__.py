"""Run records (results.json), the environment they describe, and the tables rendered from them."""

from hgrn.results.schema import SCHEMA_VERSION, RunResult, load_results, validate, write_results

__all__ = ["SCHEMA_VERSION", "RunResult", "load_results", "validate", "write_results"]
