"""HGRN1 token mixer: "Hierarchically Gated Recurrent Neural Network for Sequence Modeling" (Qin et al., 2023).

h_t = lambda_t e^{i theta} h_{t-1} + (1 - lambda_t) c_t with lambda_t = lb + (1 - lb) sigmoid(W_f x_t),
c_t = SiLU(W_c x_t) complex, theta learned and data-independent; output out_proj(norm([Re h, Im h]) * SiLU(W_g x)).
That is the official `Hgru1d` (norm before gating); norm_before_gate=False gives the paper figure's LN(g * h).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hgrn import ops
from hgrn.layers.autocast import cast_once
from hgrn.layers.directions import check_direction, mix_directions
from hgrn.layers.norms import make_norm
from hgrn.ops.checks import accumulation_dtype
from hgrn.ops.directions import scan_directions


class HGRN1Mixer(nn.Module):
    """Complex-valued by default (7 d^2 weights); complex_valued=False is the real variant (HgruRealV6, 4 d^2)."""

    uses_lower_bound = True

    def __init__(
        self,
        d_model: int,
        *,
        complex_valued: bool = True,
        bias: bool = True,
        norm: str = "layernorm",
        norm_before_gate: bool = True,
        direction: str = "causal",
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        check_direction(direction, grid)
        self.complex, self.norm_before_gate = complex_valued, norm_before_gate
        self.direction, self.grid = direction, grid
        width = 2 * d_model if complex_valued else d_model
        self.input_proj = nn.Linear(d_model, width, bias=bias)
        self.forget_proj = nn.Linear(d_model, d_model, bias=bias)
        self.gate_proj = nn.Linear(d_model, width, bias=bias)
        self.norm = make_norm(norm, width)
        self.out_proj = nn.Linear(width, d_model, bias=bias)
        if complex_valued:
            init = 10000 ** (-2 / d_model * torch.arange(d_model, dtype=torch.float32))  # RoPE-like, as the official
            self.theta = nn.Parameter(init.clone())
            self.theta_reverse = nn.Parameter(init.clone()) if direction != "causal" else None

    def forward(self, x: Tensor, lower_bound: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x [B, T, d]; lower_bound [d] or None; mask [B, T] (False on padding, which then feeds nothing in)."""

        def mix(x: Tensor, mask: Tensor | None, direction: str) -> Tensor:
            return self._mix(x, lower_bound, mask, direction)

        return mix_directions(mix, x, mask, self.direction, self.grid)

    def _mix(self, x: Tensor, lower_bound: Tensor | None, mask: Tensor | None, direction: str) -> Tensor:
        """One full pass, projections to output projection, scanning the sequence in `direction`."""
        x = cast_once(x)  # read by three projections
        inputs, log_f = self._inputs(x, lower_bound)
        if mask is not None:
            inputs = inputs * (mask[..., None, None] if self.complex else mask[..., None])

        def scan(inputs: Tensor, log_f: Tensor, reverse: bool) -> Tensor:
            theta = (self.theta_reverse if reverse else self.theta) if self.complex else None
            return ops.hgrn1_recurrence(inputs, log_f, theta, reverse=reverse)[0]

        return self._output(x, scan_directions(scan, (inputs, log_f), direction, self.grid))

    def step(self, x: Tensor, state: Tensor, lower_bound: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One decoding step: x [B, d], state [B, d] (real) or [B, d, 2] (complex) -> (y [B, d], new state)."""
        inputs, log_f = self._inputs(x, lower_bound)
        h, state = ops.hgrn1_step(inputs, log_f, state, self.theta if self.complex else None)
        return self._output(x, h), state

    def initial_state(self, batch_size: int) -> Tensor:
        weight = self.forget_proj.weight
        shape = (batch_size, weight.shape[0], 2) if self.complex else (batch_size, weight.shape[0])
        return weight.new_zeros(shape, dtype=accumulation_dtype(weight.dtype))

    def _inputs(self, x: Tensor, lower_bound: Tensor | None) -> tuple[Tensor, Tensor]:
        """(1 - lambda) * c, the scan's input, and log lambda."""
        log_f, one_minus_f = ops.lower_bounded_gate(self.forget_proj(x), lower_bound)
        c = F.silu(self.input_proj(x))
        if self.complex:
            return rearrange(c, "... (d two) -> ... d two", two=2) * one_minus_f[..., None], log_f
        return c * one_minus_f, log_f

    def _output(self, x: Tensor, h: Tensor) -> Tensor:
        if self.complex:
            h = rearrange(h, "... d two -> ... (two d)")  # [Re h, Im h], as the official concatenation
        gate = F.silu(self.gate_proj(x))
        mixed = self.norm(h) * gate if self.norm_before_gate else self.norm(h * gate)
        return self.out_proj(mixed)
