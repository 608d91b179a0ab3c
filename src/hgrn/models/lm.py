"""Causal language model: token embedding, backbone, tied output head; `step` carries the O(1) recurrent state that
generation (hgrn.eval.generation) feeds one token at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from hgrn.layers.linear_cross_entropy import compile_fused_ahead, linear_cross_entropy
from hgrn.models.backbone import Backbone, BackboneConfig, State, as_backbone_config, compile_module, init_weights


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
        self.compiled = False  # set by compile_blocks

    def forward(self, input_ids: Tensor) -> Tensor:
        """input_ids [B, T] -> next-token logits [B, T, vocab]."""
        return self.lm_head(self.hidden_states(input_ids))

    def hidden_states(self, input_ids: Tensor) -> Tensor:
        """input_ids [B, T] -> the final normed features [B, T, d] that the output head reads."""
        return self.backbone(self.embed(input_ids))

    def loss(self, input_ids: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        """Next-token cross-entropy of input_ids [B, T] against labels [B, T] (-100: not predicted), mean over the
        labelled positions or their sum, without materialising the logits (hgrn.layers.linear_cross_entropy)."""
        return self.head_loss(self.hidden_states(input_ids), labels, reduction)

    def head_loss(self, hidden: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        """The output head's cross-entropy on final features hidden [..., d] against labels [...] (-100: not
        predicted), without materialising the logits (hgrn.layers.linear_cross_entropy; compiled: its fused chunk)."""
        return linear_cross_entropy(hidden, self.lm_head.weight, labels, reduction=reduction, compiled=self.compiled)

    def compile_blocks(self, whole: bool = False, mode: str | None = None) -> None:
        """torch.compile the backbone's norms and GLUs, or with `whole` its entire blocks (Backbone.compile_blocks,
        `mode` as there), the loss's per-chunk softmax (one pass over each chunk's logits; on a GPU our kernel,
        whose compilation starts here) and the embedding.
        With the norms compiled too the anchor step measured faster than with the GLUs alone (results/bench/lm-step-*),
        its time being bound by the host's kernel launches more than by the GPU. The embedding's backward then adds
        the rows' gradients by atomics (Inductor's scatter-add) instead of eager PyTorch's sort, segment sums and
        scatter, the largest kernel of an MQAR step (H100, d 128, (256, 16): 0.38 + 0.06 ms of 3.3 ms of kernels,
        results/bench/mqar-study-*; still there in session 36's profile, where torch 2.11's `Module.compile` had left
        the embedding eager: compile_module); it is compiled without CUDA graphs, so its output lives outside their
        pools."""
        self.backbone.compile_blocks(whole, mode)
        compile_module(self.embed)
        self.compiled = True
        compile_fused_ahead(self.lm_head.weight.shape[0])

    def step(self, token_ids: Tensor, states: list[State]) -> tuple[Tensor, list[State]]:
        """One token per sequence, token_ids [B] -> (logits [B, vocab], states)."""
        h, states = self.backbone.step(self.embed(token_ids), states)
        return self.lm_head(h), states
