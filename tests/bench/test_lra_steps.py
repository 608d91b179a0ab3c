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


def test_time_recipe_counts_accumulated_micro_batches_as_one_step():
    """Path-X on one GPU: micro-batches accumulated to the recipe's batch; steps count optimiser steps."""
    row = time_recipe(
        "lra/hgrn2/pathx",
        steps=1,
        device="cpu",
        overrides=("data.batch_size=1", "trainer.accumulate_grad_batches=2", "data.resolution=8", "model.grid=[8,8]"),
    )
    assert row["batch_size"] == 2
    assert row["steps"] == 200 * math.ceil(TRAIN_EXAMPLES["pathx"] / 2)  # the recipe's 200 epochs
