"""What a corpus reader hands the token cache for each split: the files it reads, whose bytes are the source checksum
the cache is keyed by, and a function that turns them into token batches (hgrn.data.lm.encode)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hgrn.data.lm.encode import TokenBatch, Tokenizer

SPLITS = ("train", "valid", "test")  # fairseq's names, which WikiText-103's raw files and the data-bin use
SPLIT_ALIASES = {"val": "valid", "validation": "valid"}  # Lightning's and Hugging Face's names for it


def canonical_split(name: str) -> str:
    split = SPLIT_ALIASES.get(name, name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)} (or val / validation)")
    return split


@dataclass(frozen=True)
class SplitSource:
    """One split of a corpus on disk. description: the corpus and its layout, recorded in the cache's meta."""

    description: str
    files: tuple[Path, ...]
    read: Callable[[Tokenizer], Iterator[TokenBatch]]

    def stat(self) -> list[list[str | int]]:
        """[path, size, mtime_ns] of every file: equal stats spare a re-read of an unchanged source."""
        stats = [(path.resolve(), path.stat()) for path in self.files]
        return [[str(path), stat.st_size, stat.st_mtime_ns] for path, stat in stats]

    def sha256(self) -> str:
        """Checksum over the files' names and bytes (not their folder, so a moved copy keeps its cache)."""
        digest = hashlib.sha256()
        for path in self.files:
            with path.open("rb") as file:
                digest.update(f"{path.name} {hashlib.file_digest(file, 'sha256').hexdigest()}\n".encode())
        return digest.hexdigest()
