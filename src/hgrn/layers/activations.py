"""Activations by name, as the official configs name them."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "none": nn.Identity,
}


def make_activation(name: str, argument: str = "act") -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"{argument}={name!r} is not a known activation; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
