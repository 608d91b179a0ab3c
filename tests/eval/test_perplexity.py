"""Perplexity over a stream equals exp of the mean token NLL computed one token at a time, for both protocols."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hgrn.eval.perplexity import perplexity, windows
from hgrn.models import CausalLM, CausalLMConfig

VOCAB = 61


@pytest.fixture(scope="module")
def model() -> CausalLM:
    torch.manual_seed(0)
    backbone = {"d_model": 32, "n_layers": 2, "mixer_options": {"expand_ratio": 8}}
    config = CausalLMConfig(backbone=backbone, vocab_size=VOCAB, init_std=0.3)  # context-dependent predictions
    return CausalLM(config).double().eval()


def context_start(target: int, block: int, stride: int) -> int:
    """Where the context of `target` begins, from the protocol's definition: windows of `block` inputs start at
    0, stride, 2 * stride, ...; a target is scored in the first window whose inputs reach the token before it."""
    return max(0, math.ceil((target - block) / stride)) * stride


def naive_mean_nll(model: CausalLM, stream: torch.Tensor, block: int, stride: int) -> float:
    """One forward per target over exactly its context, F.cross_entropy of the last position."""
    losses = []
    for target in range(1, len(stream)):
        context = stream[context_start(target, block, stride) : target]
        assert 1 <= len(context) <= block
        logits = model(context[None])[0, -1]
        losses.append(F.cross_entropy(logits[None], stream[target : target + 1]).item())
    return sum(losses) / len(losses)


@pytest.mark.parametrize(("length", "block", "stride"), [(103, 16, 16), (103, 16, 5), (64, 16, 16), (40, 16, 12)])
def test_perplexity_equals_exp_of_the_naive_mean_nll(model, length, block, stride):
    stream = torch.randint(0, VOCAB, (length,), generator=torch.Generator().manual_seed(length + stride))
    result = perplexity(model, stream.numpy().astype(np.uint16), block, stride, batch_size=3)
    assert result.tokens == length - 1
    assert result.protocol == ("blocks" if stride == block else "sliding")
    assert result.ppl == pytest.approx(math.exp(naive_mean_nll(model, stream, block, stride)), rel=1e-9)


def test_sliding_context_is_longer_than_blocks_context(model):
    """The protocols score the same tokens with different contexts, so they give different numbers."""
    stream = torch.randint(0, VOCAB, (80,), generator=torch.Generator().manual_seed(1))
    blocks, sliding = perplexity(model, stream, 16), perplexity(model, stream, 16, stride=4)
    assert (blocks.name, sliding.name) == ("blocks_16", "sliding_4")
    assert blocks.tokens == sliding.tokens == 79 and blocks.ppl != pytest.approx(sliding.ppl, rel=1e-6)


@pytest.mark.parametrize(("n_tokens", "block", "stride"), [(2, 4, 4), (50, 7, 3), (50, 7, 7), (8, 16, 4)])
def test_windows_score_every_target_once_within_the_block(n_tokens, block, stride):
    plan = windows(n_tokens, block, stride)
    targets = [t for w in plan for t in range(w.target_start, w.target_end)]
    assert targets == list(range(1, n_tokens))
    assert all(0 < w.target_end - 1 - w.input_start <= block for w in plan)


def test_bad_arguments_are_refused(model):
    stream = torch.arange(10)
    with pytest.raises(ValueError, match="at least 2"):
        perplexity(model, stream[:1], 4)
    with pytest.raises(ValueError, match="stride <= block_size"):
        perplexity(model, stream, 4, stride=5)
    model.train()
    try:
        with pytest.raises(ValueError, match=r"model\.eval\(\)"):
            perplexity(model, stream, 4)
    finally:
        model.eval()
