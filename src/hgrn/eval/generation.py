"""Text generation through the recurrent state: the prompt is read one token at a time with `model.step`, then each
new token is drawn from the last logits and fed back. Memory is O(1) in the length for the recurrent mixers (HGRN1,
HGRN2, GLA carry a fixed-size state); attention carries its growing KV cache through the same interface.

Drawing a token: greedy (argmax) at temperature 0; otherwise softmax(logits / temperature), restricted to the top_k
most likely tokens and then to the smallest set whose probability reaches top_p (nucleus), sampled with an optional
torch.Generator so that a seed reproduces the text.

Layouts: prompt_ids [B, T] with T >= 1; logits [B, V]; generated tokens [B, n], n <= max_new_tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from hgrn.eval.checkpoint import inference_precision
from hgrn.models import CausalLM
from hgrn.models.backbone import State


@dataclass(frozen=True)
class Sampling:
    """How the next token is drawn; the defaults are greedy decoding."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 is greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k} must be >= 1, or None for no limit")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1], or None for no limit")


def next_tokens(logits: Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> Tensor:
    """One token per row from logits [B, V] -> [B]."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / sampling.temperature
    if sampling.top_k is not None:
        kth_largest = logits.topk(min(sampling.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if sampling.top_p is not None:
        logits = _nucleus(logits, sampling.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def _nucleus(logits: Tensor, top_p: float) -> Tensor:
    """Keep, per row, the most likely tokens up to and including the one at which their probability reaches top_p."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # the most likely token always has 0 before it, so it stays
    sorted_logits = sorted_logits.masked_fill(mass_before >= top_p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def check_prompt(prompt_ids: Tensor) -> None:
    """prompt_ids must be a [batch, time] integer tensor with at least one token per sequence."""
    if not isinstance(prompt_ids, Tensor) or prompt_ids.ndim != 2:
        shape = tuple(prompt_ids.shape) if isinstance(prompt_ids, Tensor) else type(prompt_ids).__name__
        raise ValueError(
            f"prompt_ids must be a [batch, time] tensor of token ids; got {shape}: "
            f"add the batch dimension (ids[None]) for one prompt"
        )
    if prompt_ids.dtype.is_floating_point or prompt_ids.dtype.is_complex or prompt_ids.dtype == torch.bool:
        raise ValueError(f"prompt_ids must hold integer token ids; got dtype {prompt_ids.dtype}")
    if prompt_ids.numel() == 0:
        raise ValueError(
            f"the prompt is empty (shape {tuple(prompt_ids.shape)}); give at least one token per sequence, e.g. the "
            f"end-of-text token to start from nothing"
        )


def stream(
    model: CausalLM, prompt_ids: Tensor, sampling: Sampling = Sampling(), generator: torch.Generator | None = None
) -> Iterator[Tensor]:
    """Read the prompt [B, T] through the recurrent state, then yield one new token per sequence [B] at a time,
    for as long as the caller iterates."""
    check_prompt(prompt_ids)
    device = next(model.parameters()).device
    prompt_ids = prompt_ids.to(device)
    states = model.backbone.initial_state(prompt_ids.shape[0])
    for t in range(prompt_ids.shape[1]):
        logits, states = _step(model, prompt_ids[:, t], states)
    while True:
        tokens = next_tokens(logits, sampling, generator)
        yield tokens
        logits, states = _step(model, tokens, states)


@torch.no_grad()
def _step(model: CausalLM, tokens: Tensor, states: list[State]) -> tuple[Tensor, list[State]]:
    """model.step in the evaluation precision; entered per step, so nothing stays switched on while the caller holds
    the stream."""
    with inference_precision(tokens.device):
        return model.step(tokens, states)


def generate(
    model: CausalLM,
    prompt_ids: Tensor,
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    generator: torch.Generator | None = None,
    eot_id: int | None = None,
) -> Tensor:
    """Up to max_new_tokens new tokens per prompt [B, T] -> [B, n]. A sequence that draws `eot_id` ends there (its
    later positions hold eot_id); generation stops when every sequence has ended."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    check_prompt(prompt_ids)
    if max_new_tokens == 0:
        return prompt_ids.new_zeros(prompt_ids.shape[0], 0)
    generated: list[Tensor] = []
    ended = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=next(model.parameters()).device)
    for tokens in stream(model, prompt_ids, sampling, generator):
        if eot_id is not None:
            tokens = tokens.masked_fill(ended, eot_id)
            ended |= tokens == eot_id
        generated.append(tokens)
        if len(generated) == max_new_tokens or ended.all():
            break
    return torch.stack(generated, 1)
