"""The lm-eval adapter: its log-likelihoods, rolling log-likelihoods and greedy generations equal the model's own,
computed here one token at a time from `model(ids)`; and lm-eval runs a multiple-choice and a rolling task end to
end offline with it."""

from __future__ import annotations

import copy
import textwrap

import lm_eval
import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from hgrn.data.lm.tokenizer import gpt2_tokenizer
from hgrn.eval.harness import HGRNLM
from hgrn.eval.tasks import TASKS_DIR
from hgrn.models import CausalLM
from tests.eval.conftest import PIQA

MAX_LENGTH = 16
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the green forest."
EOT = gpt2_tokenizer().eot_id


def token_logprob(model: CausalLM, context: list[int], token: int) -> tuple[float, bool]:
    """log P(token | context) and whether it is the argmax, from one forward over exactly `context`."""
    with torch.no_grad():
        logprobs = model(torch.tensor([context]))[0, -1].double().log_softmax(-1)
    return float(logprobs[token]), int(logprobs.argmax()) == token


def own_loglikelihood(model: CausalLM, context: str, continuation: str) -> tuple[float, bool]:
    """The continuation's tokens scored in one window, the last MAX_LENGTH + 1 tokens of the whole text. lm-eval's
    split: the context's trailing whitespace belongs to the continuation, whose tokens are those of the whole after
    the context's."""
    tok = gpt2_tokenizer()
    whole, n_context = tok.encode(context + continuation), len(tok.encode(context.rstrip()))
    start = max(0, len(whole) - MAX_LENGTH - 1)
    scores = [token_logprob(model, whole[start:p], whole[p]) for p in range(n_context, len(whole))]
    return sum(s for s, _ in scores), all(g for _, g in scores)


def own_rolling(model: CausalLM, text: str) -> float:
    """log P(text | end of text) with lm-eval's rolling windows (context_len 1): targets in chunks of MAX_LENGTH;
    the first chunk is read after the end-of-text token, a later chunk ending at `end` after tokens[end - L - 1:]."""
    tokens = gpt2_tokenizer().encode(text)
    total = 0.0
    for p, token in enumerate(tokens):
        if p < MAX_LENGTH:
            context = [EOT, *tokens[:p]]
        else:
            end = min(p - p % MAX_LENGTH + MAX_LENGTH, len(tokens))
            context = tokens[end - MAX_LENGTH - 1 : p]
        total += token_logprob(model, context, token)[0]
    return total


@pytest.fixture(scope="module")
def model64(loaded_lm) -> CausalLM:
    """The checkpoint's model in float64, so the adapter's batched, padded scores equal the naive ones exactly."""
    return copy.deepcopy(loaded_lm.model).double()


def requests(kind: str, *arguments: tuple) -> list[Instance]:
    return [Instance(kind, doc={}, arguments=args, idx=i) for i, args in enumerate(arguments)]


def test_loglikelihoods_equal_the_models_own(model64):
    adapter = HGRNLM(pretrained=model64, batch_size=2, max_length=MAX_LENGTH)
    pairs = [
        ("Question: where do fish live?\nAnswer:", " in the water"),
        ("Question: where do fish live?\nAnswer:", " on the moon and the stars"),
        ("Hello", ","),
        ("A context long enough to be cut: " + "one two three four five six seven eight nine ten. " * 2, " eleven"),
        ("Trailing space moves to the continuation ", "here"),
    ]
    got = adapter.loglikelihood(requests("loglikelihood", *pairs))
    for (context, continuation), (logprob, greedy) in zip(pairs, got, strict=True):
        expected, expected_greedy = own_loglikelihood(model64, context, continuation)
        assert logprob == pytest.approx(expected, rel=1e-9, abs=1e-9) and greedy == expected_greedy
    assert len({round(logprob, 6) for logprob, _ in got}) == len(pairs)


@pytest.mark.parametrize("text", [TEXT, TEXT[:20], TEXT * 2], ids=["one-window", "short", "three-windows"])
def test_rolling_loglikelihood_equals_the_models_own(model64, text):
    assert len(gpt2_tokenizer().encode(TEXT * 2)) > 2 * MAX_LENGTH  # several windows, the last one partial
    adapter = HGRNLM(pretrained=model64, batch_size=3, max_length=MAX_LENGTH)
    (got,) = adapter.loglikelihood_rolling(requests("loglikelihood_rolling", (text,)))
    assert got == pytest.approx(own_rolling(model64, text), rel=1e-9)


def own_greedy(model: CausalLM, prompt: list[int], steps: int) -> list[int]:
    """The argmax of model(ids) at the last position, appended `steps` times."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


def test_generation_is_greedy_and_stops_before_the_until_string(model64):
    tok, context = gpt2_tokenizer(), "Once upon a time"
    greedy = own_greedy(model64, tok.encode(context), 12)
    greedy_text, stop = tok.decode(greedy), tok.decode(greedy[7:8])
    adapter = HGRNLM(pretrained=model64, max_length=64)
    (got,) = adapter.generate_until(requests("generate_until", (context, {"until": [stop], "max_gen_toks": 12})))
    assert got == greedy_text.split(stop)[0] and len(got) < len(greedy_text)
    (capped,) = adapter.generate_until(requests("generate_until", (context, {"until": ["never"], "max_gen_toks": 4})))
    assert capped == tok.decode(greedy[:4])


def test_sampling_settings_and_bad_arguments_are_refused(model64):
    adapter = HGRNLM(pretrained=model64, max_length=64)
    with pytest.raises(ValueError, match="greedy"):
        adapter.generate_until(requests("generate_until", ("Hi", {"until": ["."], "do_sample": True})))
    with pytest.raises(ValueError, match="no 'auto'"):
        HGRNLM(pretrained=model64, batch_size="auto")


ROLLING_TASK = """
task: tiny_rolling
custom_dataset: !function documents.test_split
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{text}}"
metric_list:
  - metric: word_perplexity
  - metric: bits_per_byte
"""
ROLLING_DOCUMENTS = f"""
import datasets


def test_split(**metadata):
    return datasets.DatasetDict({{"test": datasets.Dataset.from_dict({{"text": [{TEXT!r}, {TEXT[:30]!r}]}})}})
"""


def test_lm_eval_runs_a_multiple_choice_and_a_rolling_task_offline(lm_checkpoint, loaded_lm, on_eval_data, tmp_path):
    (tmp_path / "tiny_rolling.yaml").write_text(ROLLING_TASK)
    (tmp_path / "documents.py").write_text(textwrap.dedent(ROLLING_DOCUMENTS))
    adapter = HGRNLM(pretrained=str(lm_checkpoint), batch_size=4, device="cpu", max_length=MAX_LENGTH)
    results = lm_eval.simple_evaluate(
        model=adapter,
        tasks=["piqa", "tiny_rolling"],
        num_fewshot=0,
        task_manager=TaskManager(include_path=[str(TASKS_DIR), str(tmp_path)], include_defaults=False),
        log_samples=True,
    )
    model = loaded_lm.model
    piqa = results["samples"]["piqa"]
    assert len(piqa) == len(PIQA)
    for sample in piqa:
        doc = sample["doc"]
        context = f"Question: {doc['goal']}\nAnswer:"
        expected = [own_loglikelihood(model, context, f" {doc[key]}")[0] for key in ("sol1", "sol2")]
        got = [response[0][0] for response in sample["resps"]]
        assert got == pytest.approx(expected, abs=1e-4)
        assert sample["acc"] == float(max(range(2), key=lambda i: got[i]) == doc["label"])
    assert 0 <= results["results"]["piqa"]["acc,none"] <= 1 and "acc_norm,none" in results["results"]["piqa"]
    rolling = results["samples"]["tiny_rolling"]
    assert [s["resps"][0][0] for s in rolling] == pytest.approx(
        [own_rolling(model, s["doc"]["text"]) for s in rolling], abs=1e-4
    )
    assert results["results"]["tiny_rolling"]["word_perplexity,none"] > 1
