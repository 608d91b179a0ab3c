"""On CUDA (bf16 autocast, the Triton kernels): perplexity and the adapter's log-likelihoods agree with the CPU in
full precision, and greedy generation through the recurrent state matches the parallel forward."""

from __future__ import annotations

import copy

import pytest
import torch
from lm_eval.api.instance import Instance

from hgrn.eval.generation import generate
from hgrn.eval.harness import HGRNLM
from hgrn.eval.perplexity import perplexity
from hgrn.models import CausalLM, CausalLMConfig

pytestmark = pytest.mark.gpu
MIXERS = {"hgrn2": {"expand_ratio": 16}, "hgrn1": {}, "gla": {}, "attention": {}}


def lm(mixer: str, vocab: int = 50257) -> CausalLM:
    torch.manual_seed(0)
    backbone = {"d_model": 64, "n_layers": 2, "mixer": mixer, "mixer_options": MIXERS[mixer]}
    return CausalLM(CausalLMConfig(backbone=backbone, vocab_size=vocab, init_std=0.1)).eval()


@pytest.mark.parametrize("mixer", list(MIXERS))
def test_perplexity_on_the_gpu_matches_the_cpu(mixer):
    model = lm(mixer, vocab=1000)
    stream = torch.randint(0, 1000, (3001,), generator=torch.Generator().manual_seed(0))
    cpu = perplexity(model, stream, 128, 48)
    gpu = perplexity(copy.deepcopy(model).cuda(), stream, 128, 48)
    assert gpu.tokens == cpu.tokens and gpu.ppl == pytest.approx(cpu.ppl, rel=2e-2)


def test_adapter_loglikelihoods_on_the_gpu_match_the_cpu():
    model = lm("hgrn2")
    pairs = [("Question: where do fish live?\nAnswer:", " in the water"), ("The cat sat on the", " mat")] * 3
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    cpu = HGRNLM(pretrained=model, batch_size=4, max_length=64).loglikelihood(requests)
    gpu = HGRNLM(pretrained=copy.deepcopy(model), device="cuda", batch_size=4, max_length=64).loglikelihood(requests)
    for (on_cpu, _), (on_gpu, _) in zip(cpu, gpu, strict=True):
        assert on_gpu == pytest.approx(on_cpu, rel=2e-2, abs=5e-2)


@pytest.mark.parametrize("mixer", list(MIXERS))
def test_greedy_generation_on_the_gpu_follows_the_parallel_forward(mixer):
    """Each generated token is the argmax of the parallel forward over the generated sequence, up to bf16 near-ties
    (the step kernels and the chunked forward round differently)."""
    model = lm(mixer, vocab=1000).cuda()
    model.apply(lambda m: torch.nn.init.normal_(m.weight, std=0.3) if isinstance(m, torch.nn.Linear) else None)
    prompt = torch.randint(0, 1000, (4, 8), generator=torch.Generator().manual_seed(1)).cuda()
    generated = generate(model, prompt, 16)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(torch.cat([prompt, generated], 1))[:, 7:-1].float()  # the predictions of the generated tokens
    chosen = logits.gather(-1, generated[..., None])[..., 0]
    best = logits.max(-1).values
    assert (best - chosen <= 0.02 * best.abs().clamp_min(1)).all()
    assert (logits.argmax(-1) == generated).float().mean() >= 0.9
