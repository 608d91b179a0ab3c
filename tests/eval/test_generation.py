"""Generation through the recurrent state: greedy equals the argmax of the parallel forward re-run on the growing
sequence; top-k = 1 and a tiny top-p are greedy; sampling stays in the allowed set and a seed reproduces it; bad
prompts get one clear error; the `python -m hgrn.generate` command line."""

from __future__ import annotations

import pytest
import torch

from hgrn.eval.generation import Sampling, generate, next_tokens
from hgrn.generate import main
from hgrn.models import CausalLM, CausalLMConfig

VOCAB = 97
MIXERS = {"hgrn2": {"expand_ratio": 8}, "hgrn1": {}, "gla": {}, "attention": {}}


def tiny_lm(mixer: str) -> CausalLM:
    torch.manual_seed(0)
    backbone = {"d_model": 32, "n_layers": 2, "mixer": mixer, "mixer_options": MIXERS[mixer]}
    config = CausalLMConfig(backbone=backbone, vocab_size=VOCAB, init_std=0.3)  # context-dependent predictions
    return CausalLM(config).double().eval()


def parallel_greedy(model: CausalLM, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    """Append the argmax of model(ids)[:, -1], re-running the whole sequence each time."""
    ids = prompt
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[:, prompt.shape[1] :]


@pytest.mark.parametrize("mixer", list(MIXERS))
def test_greedy_generation_equals_argmax_of_the_parallel_forward(mixer):
    model = tiny_lm(mixer)
    prompt = torch.randint(0, VOCAB, (3, 5), generator=torch.Generator().manual_seed(1))
    expected = parallel_greedy(model, prompt, 12)
    assert torch.equal(generate(model, prompt, 12), expected)
    assert len(set(expected.flatten().tolist())) > 3  # a non-trivial continuation, not one repeated token


@pytest.mark.parametrize("sampling", [Sampling(temperature=1.0, top_k=1), Sampling(temperature=2.0, top_p=1e-6)])
def test_top_k_1_and_a_tiny_nucleus_are_greedy(sampling):
    model = tiny_lm("hgrn2")
    prompt = torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(generate(model, prompt, 10, sampling, generator), generate(model, prompt, 10))


def test_sampling_draws_only_from_the_top_k_and_the_nucleus():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0]]).repeat(2000, 1)
    generator = torch.Generator().manual_seed(0)
    top_k = next_tokens(logits, Sampling(temperature=1.0, top_k=3), generator)
    assert set(top_k.tolist()) == {0, 1, 2}
    probs = logits[0].softmax(-1)  # 0.64, 0.24, 0.09, ...: 0.9 needs the first three
    assert probs[:2].sum() < 0.9 <= probs[:3].sum()
    nucleus = next_tokens(logits, Sampling(temperature=1.0, top_p=0.9), generator)
    assert set(nucleus.tolist()) == {0, 1, 2}


def test_a_seed_reproduces_sampled_text_and_another_seed_changes_it():
    model = tiny_lm("hgrn2")
    prompt = torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(3))
    sampling = Sampling(temperature=1.5)

    def sample(seed: int) -> torch.Tensor:
        return generate(model, prompt, 20, sampling, torch.Generator().manual_seed(seed))

    assert torch.equal(sample(7), sample(7)) and not torch.equal(sample(7), sample(8))


def test_a_sequence_ends_at_end_of_text_and_generation_stops_when_all_have():
    model = tiny_lm("hgrn2")
    prompt = torch.randint(0, VOCAB, (2, 4), generator=torch.Generator().manual_seed(4))
    greedy = generate(model, prompt, 12)
    eot = int(greedy[0, 2])  # pretend the first sequence's third token is the end-of-text token

    def length(row: torch.Tensor) -> int:
        ends = (row == eot).nonzero()
        return int(ends[0]) + 1 if len(ends) else len(row)

    lengths = [length(row) for row in greedy]
    expected = greedy[:, : max(lengths)].clone()
    for row, n in enumerate(lengths):
        expected[row, n:] = eot
    assert torch.equal(generate(model, prompt, 12, eot_id=eot), expected)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (torch.tensor([1, 2, 3]), r"\[batch, time\].*ids\[None\]"),
        (torch.zeros(2, 0, dtype=torch.long), "the prompt is empty"),
        (torch.zeros(0, 3, dtype=torch.long), "the prompt is empty"),
        (torch.ones(1, 3), "integer token ids"),
    ],
)
def test_bad_prompts_get_one_clear_error(prompt, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_lm("hgrn2"), prompt, 5)


@pytest.mark.parametrize(
    "settings", [{"temperature": -1.0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}], ids=lambda s: str(s)
)
def test_bad_sampling_settings_are_refused(settings):
    with pytest.raises(ValueError, match="must be"):
        Sampling(**settings)


def test_generate_command_continues_a_prompt(lm_checkpoint, capsys):
    main(["--ckpt", str(lm_checkpoint), "--prompt", "The market", "--max-new-tokens", "5", "--device", "cpu"])
    text = capsys.readouterr().out
    assert text.startswith("The market") and len(text.strip()) > len("The market")


def test_generate_command_refuses_an_empty_prompt(lm_checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(lm_checkpoint), "--prompt", "", "--device", "cpu"])
    assert exit_info.value.code == 2 and "--prompt is empty" in capsys.readouterr().err
