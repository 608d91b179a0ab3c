"""The LRA step-time benchmark builds each recipe's real model and extrapolates GPU hours (run here on CPU)."""

from __future__ import annotations

import math

from hgrn.bench.lra_steps import TRAIN_EXAMPLES, markdown, time_recipe


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


def test_markdown_names_the_device_and_date_and_renders_failed_recipes():
    result = {"model": "hgrn2", "device": "NVIDIA H100", "date": "2026-12-05", "ops": "Triton kernels", "rows": [
        {"experiment": "lra/hgrn2/listops", "batch_size": 128, "length": 2048, "seconds_per_step": 0.0221,
         "steps": 37500, "gpu_hours": 0.23, "peak_memory_gib": 3.5},
        {"experiment": "lra/hgrn2/pathx", "batch_size": 256, "error": "OutOfMemoryError"},
    ]}  # fmt: skip
    text = markdown(result)
    assert text.startswith("LRA recipes, hgrn2, on NVIDIA H100, 2026-12-05")
    assert "| lra/hgrn2/listops | 128 | 2048 | 0.022 | 37500 | 0.2 | 3.5 |" in text
    assert "| lra/hgrn2/pathx | 256 | - | OutOfMemoryError | - | - | - |" in text
