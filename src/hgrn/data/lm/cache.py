"""Keeping a split's token cache in step with what it was built from: built once, checked cheaply on every run,
rebuilt when the format, the tokenizer or the source text changed, or when a file no longer matches its meta.

The source check is a stat of its files first ([path, size, mtime_ns], as recorded at the last check); only when the
stat differs is the content hashed, so an unchanged corpus of hundreds of gigabytes is not re-read on every start,
and a copied or touched one whose bytes are the same keeps its cache (the new stat is recorded).
"""

from __future__ import annotations

import logging

from hgrn.data.lm.encode import Tokenizer
from hgrn.data.lm.sources import SplitSource
from hgrn.data.lm.token_file import (
    SplitFiles,
    TokenFileMeta,
    cache_problem,
    read_meta,
    refresh_source_stat,
    write_split,
)

log = logging.getLogger(__name__)


def ensure_split(files: SplitFiles, source: SplitSource, tokenizer: Tokenizer) -> TokenFileMeta:
    """The meta of a cache that matches the source and tokenizer, building or rebuilding the cache if need be."""
    meta = read_meta(files)
    problem = cache_problem(files, meta, tokenizer.name)
    stat = source.stat()
    if meta is not None and problem is None:
        if meta.source_stat == stat:
            return meta
        digest = source.sha256()
        if digest == meta.source_sha256:
            return refresh_source_stat(files, meta, stat)
        problem = "the source text changed"
    else:
        digest = source.sha256()
    log.info("tokenising %s into %s (%s)", source.description, files.tokens, problem)
    return write_split(
        files,
        source.read(tokenizer),
        progress=f"{source.description} {files.tokens.stem}",
        tokenizer=tokenizer.name,
        eos_id=tokenizer.eot_id,
        source=source.description,
        source_sha256=digest,
        source_stat=stat,
    )
