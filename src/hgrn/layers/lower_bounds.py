"""Learned layer-wise lower bounds on the forget gate (HGRN1 §3.3): deeper layers remember longer."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerLowerBounds(nn.Module):
    """gamma_k = sum_{i<k} softmax(Gamma, dim=layers)_i: layer 0 gets 0, bounds rise monotonically and stay below 1.

    This is the paper's formula (and the LRA / ImageNet code); uniform at initialisation (gamma_k = k / L).
    """

    def __init__(self, n_layers: int, dim: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_layers, dim))

    def forward(self) -> Tensor:
        """Bounds for every layer, [n_layers, dim]."""
        p = self.logits.softmax(0)
        return p.cumsum(0) - p
