"""The lm-eval adapter: a trained hgrn CausalLM as an lm-eval model named "hgrn".

    python -m hgrn.eval.lm_eval run --model hgrn --model_args pretrained=<run>/checkpoints/best.ckpt \
        --include_path tasks/lm_eval --tasks piqa

(lm-eval's own command line; hgrn.eval.lm_eval says why it goes through that module). In Python:
`lm_eval.simple_evaluate(model=HGRNLM(pretrained=...), ...)`.

- Log-likelihoods (multiple choice, LAMBADA): context + continuation cut to the last max_length + 1 tokens, batched
  longest first and right-padded (a causal model never sees the padding of a row before that row's last position);
  the continuation's log-probabilities come from the float32 log-softmax of the logits at its positions.
- Rolling log-likelihoods (perplexity tasks): lm-eval's disjoint windows of max_length tokens, scored as above and
  summed per document.
- Generation: greedy through the recurrent state (hgrn.eval.generation), until an `until` string or end of text.
Text is GPT-2 BPE (hgrn.data.lm.tokenizer), the tokenizer every LM of the suite trains with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from hgrn.data.lm.tokenizer import gpt2_tokenizer
from hgrn.eval.checkpoint import at_least_float32, inference_precision, load_causal_lm, pick_device
from hgrn.eval.generation import stream
from hgrn.models import CausalLM

DEFAULT_MAX_LENGTH = 2048  # context when the checkpoint does not say its training block size
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default for generation tasks that do not set max_gen_toks
Request = tuple[Any, list[int], list[int]]  # (cache key or None, context token ids, continuation token ids)


@register_model("hgrn")
class HGRNLM(TemplateLM):
    """pretrained: a checkpoint of `python -m hgrn.train` (path), or a CausalLM (put in eval mode).
    batch_size: sequences per forward pass. device: default the GPU if any (bf16 autocast there).
    max_length: tokens of context; default the checkpoint's training block size, else 2048."""

    def __init__(
        self,
        pretrained: str | Path | CausalLM,
        batch_size: int | str = 8,
        device: str | None = None,
        max_length: int | str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(pretrained, CausalLM):
            model = pretrained.to(pick_device(device)) if device else pretrained
            trained_length = None
        else:
            loaded = load_causal_lm(pretrained, device)
            model, trained_length = loaded.model, loaded.max_length
        self.model = model.eval()
        self._tokenizer = gpt2_tokenizer()
        if model.config.vocab_size < self._tokenizer.vocab_size:
            raise ValueError(
                f"the model's vocabulary ({model.config.vocab_size}) is smaller than GPT-2's "
                f"({self._tokenizer.vocab_size}); the lm-eval adapter needs a GPT-2 BPE language model"
            )
        self.batch_size = _positive_int("batch_size", batch_size)
        self._max_length = _positive_int("max_length", max_length or trained_length or DEFAULT_MAX_LENGTH)

    @property
    def eot_token_id(self) -> int:
        return self._tokenizer.eot_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def tokenizer_name(self) -> str:
        return self._tokenizer.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self._tokenizer.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(tokens)

    def _loglikelihood_tokens(
        self, requests: list[Request], disable_tqdm: bool = False, override_bs: int | None = None
    ) -> list[tuple[float, bool]]:
        """(log P(continuation | context), whether greedy decoding gives the continuation) per request."""
        batch_size = override_bs or self.batch_size
        # longest first: similar lengths share a batch (little padding), and an out-of-memory shows at the start
        order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][1]) + len(requests[i][2])))
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        for start in tqdm(range(0, len(order), batch_size), disable=disable_tqdm, desc="log-likelihoods"):
            rows = order[start : start + batch_size]
            scores = self._score_batch([(requests[i][1], requests[i][2]) for i in rows])
            for i, score in zip(rows, scores, strict=True):
                results[i] = score
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], score)
        return results

    @torch.no_grad()
    def _score_batch(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        inputs = []
        for context, continuation in pairs:
            if not context or len(continuation) > self.max_length:
                raise ValueError(
                    f"cannot score a continuation of {len(continuation)} tokens after {len(context)} context tokens "
                    f"with max_length={self.max_length}; the context must be non-empty and the continuation fit"
                )
            inputs.append((context + continuation)[-(self.max_length + 1) : -1])
        ids = torch.full((len(inputs), max(map(len, inputs))), self.eot_token_id, dtype=torch.long)
        for row, tokens in enumerate(inputs):
            ids[row, : len(tokens)] = torch.tensor(tokens)
        with inference_precision(self.device):
            logits = self.model(ids.to(self.device))
        scores = []
        for row, (tokens, (_, continuation)) in enumerate(zip(inputs, pairs, strict=True)):
            logprobs = at_least_float32(logits[row, len(tokens) - len(continuation) : len(tokens)]).log_softmax(-1)
            target = torch.tensor(continuation, device=logprobs.device)
            total = logprobs.gather(-1, target[:, None]).sum()
            scores.append((float(total), bool((logprobs.argmax(-1) == target).all())))
        return scores

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """log P(text) per request (after the end-of-text token), from disjoint windows of max_length tokens."""
        windows: list[Request] = []
        owners: list[int] = []
        for owner, (text,) in enumerate(request.args for request in requests):
            tokens = self.tok_encode(text)
            for context, continuation in map(
                make_disjoint_window,
                get_rolling_token_windows(tokens, self.prefix_token_id, self.max_length, context_len=1),
            ):
                windows.append((None, context, continuation))
                owners.append(owner)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm), strict=True):
            totals[owner] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, cut before the first `until` string."""
        texts = []
        for context, gen_kwargs in tqdm([r.args for r in requests], disable=disable_tqdm, desc="generating"):
            until, max_new_tokens = self._generation_settings(gen_kwargs)
            prompt = (self.tok_encode(context) or [self.eot_token_id])[-self.max_length :]
            text = self._greedy_until(prompt, until, max_new_tokens)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            texts.append(text)
        return texts

    def _generation_settings(self, gen_kwargs: dict[str, Any]) -> tuple[list[str], int]:
        settings = dict(gen_kwargs)
        until = settings.pop("until", None) or [self.tok_decode([self.eot_token_id])]
        max_new_tokens = settings.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS)
        do_sample, temperature = settings.pop("do_sample", False), settings.pop("temperature", 0.0)
        if do_sample or temperature > 0 or settings:
            raise ValueError(
                f"generation settings {gen_kwargs} ask for more than greedy decoding; the hgrn adapter takes only "
                f"until, max_gen_toks, do_sample=false and temperature=0"
            )
        return ([until] if isinstance(until, str) else list(until)), int(max_new_tokens)

    def _greedy_until(self, prompt: list[int], until: list[str], max_new_tokens: int) -> str:
        generated: list[int] = []
        tokens = stream(self.model, torch.tensor([prompt]))
        while len(generated) < max_new_tokens:
            token = int(next(tokens)[0])
            if token == self.eot_token_id:
                break
            generated.append(token)
            if any(stop in self.tok_decode(generated) for stop in until):
                break
        text = self.tok_decode(generated)
        for stop in until:
            text = text.split(stop)[0]
        return text


def _positive_int(name: str, value: int | str) -> int:
    """lm-eval's --model_args and --batch_size arrive as strings."""
    if (isinstance(value, str) and not value.isdigit()) or int(value) < 1:
        raise ValueError(f"{name}={value!r}: the hgrn adapter needs a positive whole number (no 'auto')")
    return int(value)
