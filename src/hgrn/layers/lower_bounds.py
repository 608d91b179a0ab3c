"""Learned layer-wise lower bounds on the forget gate (HGRN1 §3.3): deeper layers remember longer."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LayerLowerBounds(nn.Module):
    """gamma_k = sum_{i<k} softmax(Gamma, dim=layers)_i: layer 0 gets 0, bounds rise monotonically and stay below 1.

    This is the paper's formula (and the LRA / ImageNet code); uniform at initialisation (gamma_k = k / L). The
    exclusive sum is accumulated directly (not as cumsum - p), so rounding keeps it monotone and layer 0 exactly 0;
    a bound rounds to 1.0 only when the softmax mass left is below float epsilon (then f = 1, k = 0: no NaN).
    """

    def __init__(self, n_layers: int, dim: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_layers, dim))

    def forward(self) -> Tensor:
        """Bounds for every layer, [n_layers, dim]."""
        p = self.logits.softmax(0)
        return torch.cat((torch.zeros_like(p[:1]), p[:-1].cumsum(0)))
