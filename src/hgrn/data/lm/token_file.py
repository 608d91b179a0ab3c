"""The token cache of one split, nanoGPT style: three files in the cache directory that appear together or not at all.

    <split>.bin   uint16 [N]      the split's token ids as one continuous stream (little endian)
    <split>.idx   int64  [D + 1]  document boundaries: document d (a line, for line corpora) is bin[idx[d]:idx[d+1]]
    <split>.json  meta            format version, tokenizer name, source and its sha256, N, D

All three are written through hgrn.io.atomic_writes with the meta renamed into place last, so a reader that finds a
meta also finds the files it describes; a file that was cut short or replaced since shows in its size, which every
read compares with the meta (`cache_problem`). What the cache was built from (format version, tokenizer, source
checksum) is the cache's key: hgrn.data.lm.cache compares it with the present ones and rebuilds on any difference.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hgrn.data.lm.encode import TOKEN_DTYPE, TokenBatch
from hgrn.io import atomic_write, atomic_writes

FORMAT_VERSION = 1
INDEX_DTYPE = np.dtype("<i8")


@dataclass(frozen=True)
class SplitFiles:
    tokens: Path
    index: Path
    meta: Path

    @classmethod
    def at(cls, cache_dir: Path, split: str) -> SplitFiles:
        return cls(cache_dir / f"{split}.bin", cache_dir / f"{split}.idx", cache_dir / f"{split}.json")


@dataclass(frozen=True)
class TokenFileMeta:
    """source: which corpus and reader made the stream; source_stat: [path, size, mtime_ns] of each source file when
    the checksum was last taken, which spares re-reading an unchanged source to check it."""

    format_version: int
    tokenizer: str
    eos_id: int
    source: str
    source_sha256: str
    source_stat: list[list[str | int]]
    num_tokens: int
    num_documents: int


def read_meta(files: SplitFiles) -> TokenFileMeta | None:
    """The split's meta, or None when it is missing or does not read as one (an older format, a damaged file)."""
    try:
        data = json.loads(files.meta.read_bytes())
        return TokenFileMeta(**{field.name: data[field.name] for field in fields(TokenFileMeta)})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def cache_problem(files: SplitFiles, meta: TokenFileMeta | None, tokenizer_name: str) -> str | None:
    """Why the cached split cannot be used as it is (None: it can): no meta, another format or tokenizer, or a file
    whose size disagrees with the meta."""
    if meta is None:
        return f"no readable {files.meta.name}"
    if meta.format_version != FORMAT_VERSION:
        return f"format version {meta.format_version}, this code writes {FORMAT_VERSION}"
    if meta.tokenizer != tokenizer_name:
        return f"tokenised with {meta.tokenizer}, this run uses {tokenizer_name}"
    expected = {
        files.tokens: meta.num_tokens * TOKEN_DTYPE.itemsize,
        files.index: (meta.num_documents + 1) * INDEX_DTYPE.itemsize,
    }
    for path, size in expected.items():
        actual = path.stat().st_size if path.exists() else None
        if actual != size:
            return f"{path.name} has {'no file' if actual is None else f'{actual} bytes'}, the meta says {size} bytes"
    return None


def write_split(
    files: SplitFiles, batches: Iterable[TokenBatch], *, progress: str, **meta_fields: str | int | list
) -> TokenFileMeta:
    """Stream the token batches into the split's files; the meta gets the counts and `meta_fields` (tokenizer,
    eos_id, source, source_sha256, source_stat). `progress` labels the progress bar (shown on a terminal only)."""
    files.meta.parent.mkdir(parents=True, exist_ok=True)
    num_tokens = num_documents = 0
    with (
        atomic_writes([files.tokens, files.index, files.meta], "wb") as (tokens_file, index_file, meta_file),
        tqdm(desc=progress, unit="tok", unit_scale=True, disable=None) as bar,
    ):
        index_file.write(np.zeros(1, INDEX_DTYPE).tobytes())
        for tokens, lengths in batches:
            tokens_file.write(np.asarray(tokens, TOKEN_DTYPE).tobytes())
            index_file.write((num_tokens + np.cumsum(lengths, dtype=INDEX_DTYPE)).tobytes())
            num_tokens += len(tokens)
            num_documents += len(lengths)
            bar.update(len(tokens))
        meta = TokenFileMeta(
            format_version=FORMAT_VERSION, num_tokens=num_tokens, num_documents=num_documents, **meta_fields
        )
        meta_file.write(json.dumps(asdict(meta), indent=1).encode())
    return meta


def refresh_source_stat(files: SplitFiles, meta: TokenFileMeta, source_stat: list[list[str | int]]) -> TokenFileMeta:
    """Record a new stat of a source whose content checked out unchanged (copied, touched), so the next check is
    a stat again rather than a read of the whole source."""
    meta = replace(meta, source_stat=source_stat)
    with atomic_write(files.meta, "wb") as meta_file:
        meta_file.write(json.dumps(asdict(meta), indent=1).encode())
    return meta


def open_tokens(files: SplitFiles) -> np.ndarray:
    """The split's token stream, memory-mapped read-only: uint16 [N] (an empty array for an empty split, which
    cannot be mapped)."""
    if files.tokens.stat().st_size == 0:
        return np.zeros(0, TOKEN_DTYPE)
    return np.memmap(files.tokens, dtype=TOKEN_DTYPE, mode="r")
