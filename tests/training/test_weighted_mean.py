"""The loss metric: a weighted running mean that keeps its weights and passes a NaN through (torchmetrics'
MeanMetric drops the weights once its NaN filter, a host read per update, is off)."""

from __future__ import annotations

import math

import pytest
import torch

from hgrn.training.base import WeightedMean


def test_weighted_mean_weights_each_update_and_resets():
    metric = WeightedMean()
    metric.update(torch.tensor(2.0), weight=torch.tensor(17.0))
    metric.update(torch.tensor(4.0), weight=3)
    metric.update(torch.tensor([1.0, 3.0]))  # a vector of values, each of weight 1
    assert metric.compute().item() == pytest.approx((2 * 17 + 4 * 3 + 1 + 3) / (17 + 3 + 2))
    metric.reset()
    metric.update(torch.tensor(5.0), weight=2.0)
    assert metric.compute().item() == pytest.approx(5.0)


def test_a_nan_loss_shows_as_a_nan_mean():
    metric = WeightedMean()
    metric.update(torch.tensor(1.0))
    metric.update(torch.tensor(float("nan")), weight=4)
    assert math.isnan(metric.compute().item())
