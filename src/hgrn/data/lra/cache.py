"""Decode-once caches of preprocessed tensors, written atomically and checked on every read.

A cache file is named by a key over the sources' (path, size, mtime) and the preprocessing parameters, so a changed
source or setting selects a new file instead of a stale one (old files stay until deleted). It is written to a
temporary file in the same directory and renamed into place (hgrn.io.atomic_write): a killed build leaves at most a
hidden `.tmp` file, which is never read (delete it at will). Every tensor carries a CRC32, so a truncated or damaged
cache is detected and rebuilt rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hgrn.io import atomic_write

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class CorruptCacheError(ValueError):
    pass


def cache_key(sources: Iterable[Path], params: Mapping[str, Any]) -> str:
    """A short hash of what the cache was built from: source (path, size, mtime_ns) and parameters."""
    fingerprint = []
    for path in sorted(Path(p) for p in sources):
        stat = path.stat()
        fingerprint.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    blob = json.dumps({"version": FORMAT_VERSION, "sources": fingerprint, "params": dict(params)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_build(
    cache_dir: Path,
    name: str,
    sources: Iterable[Path],
    params: Mapping[str, Any],
    build: Callable[[], dict[str, Tensor]],
) -> dict[str, Tensor]:
    """The tensors `build()` returns, read from `cache_dir` when a sound cache for these sources and params exists."""
    key = cache_key(sources, params)
    path = Path(cache_dir) / f"{name}-{key}.pt"
    if path.exists():
        try:
            return read_cache(path, key)
        except CorruptCacheError as error:
            log.warning("rebuilding %s: %s", path, error)
    tensors = build()
    write_cache(path, key, tensors)
    return tensors


def _checksum(tensor: Tensor) -> int:
    return zlib.crc32(tensor.contiguous().view(torch.uint8).numpy())


def write_cache(path: Path, key: str, tensors: dict[str, Tensor]) -> None:
    """Save the tensors with their key and checksums; atomically, so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"key": key, "tensors": tensors, "crc32": {name: _checksum(t) for name, t in tensors.items()}}
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def read_cache(path: Path, key: str) -> dict[str, Tensor]:
    """Memory-mapped tensors of a cache file; CorruptCacheError when it is unreadable, foreign or damaged."""
    try:
        payload = torch.load(path, mmap=True, weights_only=True)
        tensors, checksums = payload["tensors"], payload["crc32"]
        if payload["key"] != key or tensors.keys() != checksums.keys():
            raise CorruptCacheError(f"{path} does not hold the cache it is named for")
    except (OSError, RuntimeError, KeyError, TypeError, AttributeError, EOFError, pickle.UnpicklingError) as error:
        raise CorruptCacheError(f"{path} is unreadable ({error})") from error
    for name, tensor in tensors.items():
        if _checksum(tensor) != checksums[name]:
            raise CorruptCacheError(f"{path}: checksum mismatch in {name!r}")
    return tensors
