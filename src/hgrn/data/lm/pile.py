"""The Pile from local shards as EleutherAI released them: JSON lines `{"text": ..., "meta": {"pile_set_name": ...}}`,
zstandard-compressed (`.jsonl.zst`) or plain (`.jsonl`). `data_dir` holds, for each split, one file or a folder of
shards read in name order:

    train.jsonl.zst  or  train/00.jsonl.zst ... train/29.jsonl.zst
    val.jsonl.zst    or  val/...   (also accepted: valid, validation)
    test.jsonl.zst   or  test/...

Documents are tokenised as they stand and separated by EOT (hgrn.data.lm.encode); blank lines between records are
skipped.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import zstandard

from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.lm.encode import TokenBatch, Tokenizer, encode_texts
from hgrn.data.lm.sources import SPLITS, SplitSource

WHAT = "The Pile"
MAKE_TARGET = "data-pile"
FILE_NAMES = {"train": ("train",), "valid": ("val", "valid", "validation"), "test": ("test",)}
SUFFIXES = (".jsonl.zst", ".jsonl")
ZSTD_MAX_WINDOW = 1 << 31  # zstd --long shards need more than the decoder's default 128 MiB limit
CHUNK_BYTES = 1 << 20


def is_shard(path: Path) -> bool:
    return path.is_file() and path.name.endswith(SUFFIXES)


def split_shards(data_dir: Path, split: str) -> tuple[Path, ...]:
    """The split's shards: `<name>.jsonl[.zst]` or the shards in the folder `<name>/`, for the split's names."""
    for name in FILE_NAMES[split]:
        for suffix in SUFFIXES:
            if (data_dir / f"{name}{suffix}").is_file():
                return (data_dir / f"{name}{suffix}",)
        if (data_dir / name).is_dir() and (shards := tuple(sorted(filter(is_shard, (data_dir / name).iterdir())))):
            return shards
    return ()


def shard_bytes(path: Path) -> Iterator[bytes]:
    """The shard's bytes, decompressed frame by frame when it is .zst. zstandard's stream reader ends quietly at a
    frame cut short, so frames are followed here: a file that ends inside one is reported as truncated."""
    with path.open("rb") as file:
        if not path.name.endswith(".zst"):
            while chunk := file.read(CHUNK_BYTES):
                yield chunk
            return
        decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        frame, inside_frame = decompressor.decompressobj(), False
        while chunk := file.read(CHUNK_BYTES):
            while chunk:
                yield frame.decompress(chunk)
                inside_frame, chunk = not frame.eof, b""
                if frame.eof:  # the chunk may go on with the next frame
                    chunk, frame = frame.unused_data, decompressor.decompressobj()
        if inside_frame:
            raise zstandard.ZstdError("the file ends inside a compressed frame")


def text_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """UTF-8 lines (without their newline) of a byte stream that arrives in chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    rest = ""
    for chunk in chunks:
        *lines, rest = (rest + decoder.decode(chunk)).split("\n")
        yield from lines
    if rest := rest + decoder.decode(b"", final=True):
        yield rest


def shard_documents(path: Path, data_dir: Path) -> Iterator[str]:
    """The `text` of every record of one shard."""

    def malformed(problem: str, line: int | None = None) -> MalformedDataError:
        return MalformedDataError(WHAT, path, MAKE_TARGET, problem, line=line, data_dir=data_dir)

    number = 0
    try:
        for number, line in enumerate(text_lines(shard_bytes(path)), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise malformed('not a record with a string "text"', number)
            yield record["text"]
    except json.JSONDecodeError as error:
        raise malformed(f"not JSON ({error.msg})", number) from error
    except (UnicodeDecodeError, zstandard.ZstdError) as error:
        raise malformed(f"damaged or truncated after line {number} ({error})") from error


def read_documents(shards: tuple[Path, ...], data_dir: Path, tokenizer: Tokenizer) -> Iterator[TokenBatch]:
    documents = (text for shard in shards for text in shard_documents(shard, data_dir))
    return encode_texts(documents, tokenizer, lines=False)


def find_pile(data_dir: Path) -> dict[str, SplitSource] | None:
    """The splits' shards in data_dir; None when it holds none (DataNotFoundError when a split has none)."""
    shards = {split: split_shards(data_dir, split) for split in SPLITS} if data_dir.is_dir() else {}
    if not any(shards.values()):
        return None
    sources = {}
    for split, paths in shards.items():
        if not paths:
            expected = f"{FILE_NAMES[split][0]}.jsonl.zst or {FILE_NAMES[split][0]}/*.jsonl.zst"
            raise DataNotFoundError(WHAT, data_dir, MAKE_TARGET, f"no {split} shards ({expected})")
        sources[split] = SplitSource("pile (jsonl shards)", paths, partial(read_documents, paths, data_dir))
    return sources
