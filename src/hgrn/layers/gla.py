"""GLA token mixer: "Gated Linear Attention Transformers with Hardware-Efficient Training" (Yang et al., 2024).

Separate key projection, a low-rank data-dependent forget gate alpha = sigmoid(x W1 W2 + b)^(1/tau), per-head
normalised output gated by SiLU(W_r x). The baseline HGRN2 is compared with: HGRN2 ties k = 1 - f instead.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hgrn import ops
from hgrn.layers.autocast import cast_once
from hgrn.layers.directions import check_direction, mix_directions
from hgrn.layers.norms import make_norm
from hgrn.ops.checks import accumulation_dtype
from hgrn.ops.directions import scan_directions


class GLAMixer(nn.Module):
    uses_lower_bound = False

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        *,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        gate_low_rank_dim: int = 16,
        gate_logit_normalizer: float = 16.0,
        norm: str = "layernorm",
        direction: str = "causal",
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        check_direction(direction, grid)
        key_dim, value_dim = int(d_model * expand_k), int(d_model * expand_v)
        if num_heads < 1 or key_dim % num_heads or value_dim % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must divide the key width {key_dim} and value width {value_dim} "
                f"(d_model={d_model}, expand_k={expand_k}, expand_v={expand_v})"
            )
        self.num_heads, self.head_k, self.head_v = num_heads, key_dim // num_heads, value_dim // num_heads
        self.gate_logit_normalizer = gate_logit_normalizer
        self.direction, self.grid = direction, grid
        self.q_proj = nn.Linear(d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        self.forget_proj = nn.Sequential(
            nn.Linear(d_model, gate_low_rank_dim, bias=False), nn.Linear(gate_low_rank_dim, key_dim, bias=True)
        )
        self.gate_proj = nn.Linear(d_model, value_dim, bias=True)
        self.head_norm = make_norm(norm, self.head_v)
        self.out_proj = nn.Linear(value_dim, d_model, bias=False)

    def forward(self, x: Tensor, lower_bound: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x [B, T, d]; mask [B, T] (False on padding). GLA has no lower bound; the argument is ignored."""
        return mix_directions(self._mix, x, mask, self.direction, self.grid)

    def _mix(self, x: Tensor, mask: Tensor | None, direction: str) -> Tensor:
        """One full pass, projections to output projection, scanning the sequence in `direction`."""
        x = cast_once(x)  # read by five projections
        q, k, v, log_f = self._project(x)
        if mask is not None:
            v = v * mask[..., None, None]

        def scan(q: Tensor, k: Tensor, v: Tensor, log_f: Tensor, reverse: bool) -> Tensor:
            return ops.gla_recurrence(q, k, v, log_f, scale=self.head_k**-0.5, reverse=reverse)[0]

        return self._output(x, scan_directions(scan, (q, k, v, log_f), direction, self.grid))

    def step(self, x: Tensor, state: Tensor, lower_bound: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q, k, v, log_f = self._project(x)
        o, state = ops.gla_step(q, k, v, log_f, state, scale=self.head_k**-0.5)
        return self._output(x, o), state

    def initial_state(self, batch_size: int) -> Tensor:
        weight = self.q_proj.weight
        shape = (batch_size, self.num_heads, self.head_k, self.head_v)
        return weight.new_zeros(shape, dtype=accumulation_dtype(weight.dtype))

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        log_f = F.logsigmoid(self.forget_proj(x)) / self.gate_logit_normalizer
        q, k, log_f = (
            rearrange(t, "... (h d) -> ... h d", d=self.head_k) for t in (self.q_proj(x), self.k_proj(x), log_f)
        )
        v = rearrange(self.v_proj(x), "... (h d) -> ... h d", d=self.head_v)
        return q, k, v, log_f

    def _output(self, x: Tensor, o: Tensor) -> Tensor:
        o = rearrange(self.head_norm(o), "... h d -> ... (h d)")
        return self.out_proj(o * F.silu(self.gate_proj(x)))
