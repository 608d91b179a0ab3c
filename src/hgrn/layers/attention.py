"""Softmax attention with rotary position embeddings through SDPA: the Transformer baseline (FlashAttention on GPU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from hgrn.layers.directions import check_direction

KVCache = tuple[Tensor, Tensor]


class AttentionMixer(nn.Module):
    """Multi-head attention; causal for direction='causal', full (with a padding mask) otherwise.

    Attention has no scan order, so every non-causal direction ('bidirectional', '2d', '2d_series') is the same full
    attention: a recipe that picks a 2-D scan for the recurrent mixers leaves the Transformer baseline unchanged.
    """

    uses_lower_bound = False

    def __init__(
        self,
        d_model: int,
        num_heads: int = 8,
        *,
        rope: bool = True,
        rope_base: float = 10000.0,
        bias: bool = False,
        direction: str = "causal",
        grid: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        check_direction(direction, grid)
        if num_heads < 1 or d_model % num_heads or (rope and (d_model // num_heads) % 2):
            raise ValueError(f"num_heads={num_heads} must divide d_model={d_model} into heads of even size (for RoPE)")
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.rope, self.rope_base, self.causal = rope, rope_base, direction == "causal"
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: Tensor, lower_bound: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x [B, T, d]; mask [B, T] marks real tokens (padded keys are ignored). No lower bound."""
        q, k, v = self._project(x, torch.arange(x.shape[1], device=x.device))
        attn_mask = None
        if mask is not None:
            attn_mask = mask[:, None, None, :]
            if self.causal:
                attn_mask = attn_mask & torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).tril()
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=self.causal and mask is None)
        return self.out_proj(rearrange(o, "b h t d -> b t (h d)"))

    def step(self, x: Tensor, cache: KVCache, lower_bound: Tensor | None = None) -> tuple[Tensor, KVCache]:
        """One decoding step: x [B, d]; the cache grows by one key and value per step."""
        keys, values = cache
        q, k, v = self._project(x[:, None], torch.tensor([keys.shape[2]], device=x.device))
        keys, values = torch.cat((keys, k), 2), torch.cat((values, v), 2)
        o = F.scaled_dot_product_attention(q, keys, values)
        return self.out_proj(rearrange(o, "b h t d -> b t (h d)"))[:, 0], (keys, values)

    def initial_state(self, batch_size: int) -> KVCache:
        empty = self.qkv_proj.weight.new_zeros(batch_size, self.num_heads, 0, self.head_dim)
        return empty, empty.clone()

    def _project(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = rearrange(self.qkv_proj(x), "b t (three h d) -> three b h t d", three=3, h=self.num_heads)
        if self.rope:
            cos, sin = rotary_angles(positions, self.head_dim, self.rope_base, x.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q, k, v


def rotary_angles(positions: Tensor, dim: int, base: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(cos, sin) [T, dim / 2] in `dtype` of the rotary angles at positions [T] (int)."""
    return torch.ops.hgrn.rotary_table(positions, dim, base).to(dtype).chunk(2, -1)


@torch.library.custom_op(
    "hgrn::rotary_table", mutates_args=(), schema="(Tensor positions, int dim, float base) -> Tensor"
)
def rotary_table(positions: Tensor, dim: int, base: float) -> Tensor:
    """cos and sin of the rotary angles t / base^(2i / dim) at positions [T], side by side: [T, dim] fp32. An op that
    torch.compile cannot see into, so a compiled block computes the small table once: traced as plain PyTorch, Inductor
    fused the power, cosine and sine into every element of q and k and their gradients, B x H times per entry (MQAR
    attention, d 128, (256, 16), H100: four such kernels, 0.87 of a step's 3.5 ms, results/bench/mqar-study-*)."""
    inv_freq = base ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.float()[:, None] * inv_freq
    return torch.cat((angles.cos(), angles.sin()), -1)


@rotary_table.register_fake
def _(positions: Tensor, dim: int, base: float) -> Tensor:
    return positions.new_empty(positions.shape[0], dim, dtype=torch.float32)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (i, i + d/2) by position-dependent angles (the GPT-NeoX / LLaMA convention)."""
    x1, x2 = x.chunk(2, -1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1)
