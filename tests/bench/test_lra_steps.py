"""The LRA step-time benchmark builds each recipe's real model and extrapolates GPU hours (run here on CPU)."""

from __future__ import annotations

import math

from hgrn.bench.lra_steps import TRAIN_EXAMPLES, time_recipe


def test_time_recipe_extrapolates_the_full_run():
    row = time_recipe(
        "lra/hgrn2/retrieval", steps=1, device="cpu", overrides=("data.batch_size=2", "data.max_length=64")
    )
    assert row["length"] == 64 and row["batch_size"] == 2
    assert row["steps"] == 20 * math.ceil(TRAIN_EXAMPLES["retrieval"] / 2)  # the recipe's 20 epochs
    assert row["seconds_per_step"] > 0
    assert math.isclose(row["gpu_hours"], row["seconds_per_step"] * row["steps"] / 3600)
