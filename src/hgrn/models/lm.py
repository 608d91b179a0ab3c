"""Causal language model: token embedding, backbone, tied output head; recurrent generation with O(1) state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hgrn.models.backbone import Backbone, BackboneConfig, State, as_backbone_config, init_weights


@dataclass
class CausalLMConfig:
    backbone: BackboneConfig | dict[str, Any]
    vocab_size: int = 50272
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        self.backbone = as_backbone_config(self.backbone)
        if self.backbone.direction != "causal":
            raise ValueError(f"a causal LM needs backbone.direction='causal'; got {self.backbone.direction!r}")


class CausalLM(nn.Module):
    def __init__(self, config: CausalLMConfig) -> None:
        super().__init__()
        self.config = config
        d = config.backbone.d_model
        self.embed = nn.Embedding(config.vocab_size, d)
        self.backbone = Backbone(config.backbone)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.apply(lambda m: init_weights(m, config.init_std))
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def forward(self, input_ids: Tensor) -> Tensor:
        """input_ids [B, T] -> next-token logits [B, T, vocab]."""
        return self.lm_head(self.backbone(self.embed(input_ids)))

    def step(self, token_ids: Tensor, states: list[State]) -> tuple[Tensor, list[State]]:
        """One token per sequence, token_ids [B] -> (logits [B, vocab], states)."""
        h, states = self.backbone.step(self.embed(token_ids), states)
        return self.lm_head(h), states

    @torch.no_grad()
    def generate(
        self, input_ids: Tensor, max_new_tokens: int, temperature: float = 0.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Continue input_ids [B, T] by max_new_tokens, feeding one token at a time through carried states
        (memory independent of length for the recurrent mixers). temperature 0 is greedy."""
        states = self.backbone.initial_state(input_ids.shape[0])
        for t in range(input_ids.shape[1]):
            logits, states = self.step(input_ids[:, t], states)
        out = [input_ids]
        for _ in range(max_new_tokens):
            if temperature > 0:
                probs = torch.softmax(logits.float() / temperature, -1)
                token = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                token = logits.argmax(-1)
            out.append(token[:, None])
            logits, states = self.step(token, states)
        return torch.cat(out, 1)
