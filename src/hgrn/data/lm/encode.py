"""Text to token ids, as the official fairseq pipeline turns each corpus into one continuous stream.

Line corpora (WikiText-103, Penn Treebank): fairseq's `multiprocessing_bpe_encoder` strips every line and encodes it
with GPT-2 BPE, and `fairseq-preprocess` ends each line with the end-of-sentence token; an empty line (the blank
lines between WikiText paragraphs) gives the end-of-sentence token alone. GPT-2 has no separate end-of-sentence
token, so EOT (50256) plays that part here.

Document corpora (the Pile): each document's text as it stands, then EOT, as GPT-2 separates documents.

A token batch is (tokens [N], lengths int64 [D]): the ids of D consecutive lines or documents, separators included
(uint16 from text, int64 from a fairseq data-bin), and how many of the N tokens each one has.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Protocol

import numpy as np

TokenBatch = tuple[np.ndarray, np.ndarray]
TOKEN_DTYPE = np.dtype("<u2")  # GPT-2's 50,257 ids fit: half the disk and page cache of int32
TEXTS_PER_BATCH = 2048


class Tokenizer(Protocol):
    """What the pipeline needs of a tokenizer (hgrn.data.lm.tokenizer.GPT2Tokenizer); `name` keys the cache."""

    name: str
    eot_id: int

    @property
    def vocab_size(self) -> int: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


def batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of `size` items (the last may be shorter); itertools.batched arrives in Python 3.12."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def encode_texts(
    texts: Iterable[str], tokenizer: Tokenizer, *, lines: bool, texts_per_batch: int = TEXTS_PER_BATCH
) -> Iterator[TokenBatch]:
    """Token batches of `texts`, each followed by EOT; `lines=True` strips every text first (line corpora)."""
    eot = tokenizer.eot_id
    for batch in batched(texts, texts_per_batch):
        ids = tokenizer.encode_batch([text.strip() for text in batch] if lines else batch)
        lengths = np.fromiter((len(one) + 1 for one in ids), dtype=np.int64, count=len(ids))
        flat = itertools.chain.from_iterable(itertools.chain(one, (eot,)) for one in ids)
        yield np.fromiter(flat, dtype=TOKEN_DTYPE, count=int(lengths.sum())), lengths
