"""GLU channel mixer: W3(dropout(act(W1 x)) * W2 x)."""

from __future__ import annotations

from torch import Tensor, nn

from hgrn.layers.activations import make_activation
from hgrn.layers.autocast import cast_once


class GLU(nn.Module):
    """x [..., d] -> [..., d] through a hidden width hidden_dim. dropout acts on the activated gate, as the official
    LRA GLU applies the model's dropout inside the channel mixer."""

    def __init__(
        self, d_model: int, hidden_dim: int, act: str = "silu", bias: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden_dim, bias=bias)
        self.up_proj = nn.Linear(d_model, hidden_dim, bias=bias)
        self.down_proj = nn.Linear(hidden_dim, d_model, bias=bias)
        self.act = make_activation(act, "glu_act")
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = cast_once(x)  # read by two projections
        return self.down_proj(self.dropout(self.act(self.gate_proj(x))) * self.up_proj(x))
