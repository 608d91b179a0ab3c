"""HGRN2 token mixer: "HGRN2: Gated Linear RNNs with State Expansion" (Qin et al., 2024).

S_t = diag(f_t) S_{t-1} + (1 - f_t)^T v_t per head of size expand_ratio, y_t = q_t S_t, then a norm over the whole
width and an output projection. The forget gate doubles as the key, so the expanded state costs no parameters:
the mixer has exactly 4 d^2 weights (q, f, v and out projections) for every expand_ratio.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from hgrn import ops
from hgrn.layers.activations import make_activation
from hgrn.layers.directions import check_direction, mix_directions
from hgrn.layers.norms import make_norm
from hgrn.ops.checks import accumulation_dtype

Q_SCALES = ("one", "inv_sqrt")


class HGRN2Mixer(nn.Module):
    """Paper form by default: q = SiLU(W_q x) (the output gate), v = W_v x, f = lb + (1 - lb) sigmoid(W_f x), k = 1 - f.

    The official LRA/MQAR module's choices are options: q_act='sigmoid', v_act='silu', norm='layernorm', bias=True;
    the LM code's: norm='simple_rmsnorm'. q_scale='inv_sqrt' scales q by 1/sqrt(head size) as fla does.
    """

    uses_lower_bound = True

    def __init__(
        self,
        d_model: int,
        expand_ratio: int = 2,
        *,
        q_act: str = "silu",
        v_act: str = "none",
        norm: str = "layernorm",
        bias: bool = False,
        q_scale: str = "one",
        direction: str = "causal",
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if expand_ratio < 1 or d_model % expand_ratio:
            divisors = [r for r in range(1, d_model + 1) if d_model % r == 0]
            raise ValueError(
                f"expand_ratio={expand_ratio} must divide d_model={d_model} (it is the head size); allowed: {divisors}"
            )
        if q_scale not in Q_SCALES:
            raise ValueError(f"q_scale={q_scale!r} is not known; choose one of {Q_SCALES}")
        check_direction(direction, grid)
        self.head_dim = expand_ratio
        self.num_heads = d_model // expand_ratio
        self.scale = 1.0 if q_scale == "one" else expand_ratio**-0.5
        self.direction, self.grid = direction, grid
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.q_act = make_activation(q_act, "q_act")
        self.v_act = make_activation(v_act, "v_act")
        self.norm = make_norm(norm, d_model)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: Tensor, lower_bound: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x [B, T, d]; lower_bound [d] or None; mask [B, T] (False on padding, which then feeds nothing in)."""
        bound = self._bound(lower_bound)

        def mix(x: Tensor, mask: Tensor | None, direction: str) -> Tensor:
            return self._mix(x, bound, mask, direction)

        return mix_directions(mix, x, mask, self.direction, self.grid)

    def _mix(self, x: Tensor, bound: Tensor | None, mask: Tensor | None, direction: str) -> Tensor:
        """One full pass, projections to output projection, scanning the sequence in `direction`."""
        q, f_logits, v = self._project(x)
        if mask is not None:
            v = v * mask[..., None, None]

        if direction == "causal":
            o = ops.hgrn2_recurrence(q, v, f_logits, bound, scale=self.scale)[0]
        else:  # both ways along the sequence or the grid's lines, summed (fused in the small-head kernels)
            o = ops.hgrn2_directions(q, v, f_logits, bound, scale=self.scale, direction=direction, grid=self.grid)
        return self.out_proj(self.norm(rearrange(o, "... h e -> ... (h e)")))

    def gates(self, x: Tensor, lower_bound: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """What `forward` hands the recurrence as its gate for x [B, T, d]: (f_logits [B, T, H, e], the lower bound
        [H, e] or None). For gate analyses (hgrn.bench.trained_gates)."""
        return self._project(x)[1], self._bound(lower_bound)

    def step(self, x: Tensor, state: Tensor, lower_bound: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One decoding step: x [B, d], state [B, H, e, e] -> (y [B, d], new state)."""
        q, f_logits, v = self._project(x)
        o, state = ops.hgrn2_step(q, v, f_logits, state, self._bound(lower_bound), scale=self.scale)
        return self.out_proj(self.norm(rearrange(o, "... h e -> ... (h e)"))), state

    def initial_state(self, batch_size: int) -> Tensor:
        weight = self.in_proj.weight
        shape = (batch_size, self.num_heads, self.head_dim, self.head_dim)
        return weight.new_zeros(shape, dtype=accumulation_dtype(weight.dtype))

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, f_logits, v = self.in_proj(x).chunk(3, -1)
        heads = [
            rearrange(t, "... (h e) -> ... h e", e=self.head_dim) for t in (self.q_act(q), f_logits, self.v_act(v))
        ]
        return heads[0], heads[1], heads[2]

    def _bound(self, lower_bound: Tensor | None) -> Tensor | None:
        return None if lower_bound is None else lower_bound.view(self.num_heads, self.head_dim)
