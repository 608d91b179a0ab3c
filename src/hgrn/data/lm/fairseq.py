"""fairseq's binarised data-bin, the form the official WikiText-103 scripts train on (OpenNLPLab/wikitext-103:
GPT-2 BPE by `multiprocessing_bpe_encoder`, then `fairseq-preprocess --only-source --srcdict gpt2/dict.txt
--dataset-impl mmap`), read back into GPT-2 ids.

    dict.txt          one `<symbol> <count>` per line (optionally ` #fairseq:overwrite`); symbol = a GPT-2 id
    <split>.bin       every line's fairseq indices, end-of-sentence included, back to back
    <split>.idx       MMapIndexedDataset index, little endian:
                        b"MMIDIDX\\x00\\x00", version u64 = 1, dtype code u8, S u64 (sequence count),
                        sizes int32 [S], pointers int64 [S] (byte offset of each sequence in the .bin)
                      Megatron-LM's variant puts a document count u64 after S and its doc_idx int64 after the
                      pointers; both are read (every sequence is a line here, the document index is not needed).

fairseq's Dictionary numbers <s>, <pad>, </s>, <unk> 0-3 and the symbols of dict.txt from 4 in file order. </s>,
the end of every line, maps to EOT, so the stream equals what hgrn.data.lm.encode makes of the raw text.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hgrn.data.errors import MalformedDataError
from hgrn.data.lm.encode import TokenBatch, Tokenizer

MAGIC = b"MMIDIDX\x00\x00"
HEADER = struct.Struct("<9sQBQ")  # magic, version, dtype code, sequence count
INTEGER_DTYPES = {1: "u1", 2: "i1", 3: "<i2", 4: "<i4", 5: "<i8", 8: "<u2", 9: "<u4", 10: "<u8"}  # 6, 7: floats
SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")
EOS_INDEX = SPECIAL_SYMBOLS.index("</s>")
OVERWRITE_FLAG = "#fairseq:overwrite"
SEQUENCES_PER_BATCH = 1 << 16


class DataBin:
    """One split of a data-bin. what / make_target / data_dir: for the errors (hgrn.data.errors)."""

    def __init__(self, data_dir: Path, split: str, what: str, make_target: str) -> None:
        self.dictionary = data_dir / "dict.txt"
        self.tokens = data_dir / f"{split}.bin"
        self.index = data_dir / f"{split}.idx"
        self.data_dir, self.what, self.make_target = data_dir, what, make_target

    def malformed(self, path: Path, problem: str, line: int | None = None) -> MalformedDataError:
        return MalformedDataError(self.what, path, self.make_target, problem, line=line, data_dir=self.data_dir)

    def symbols(self) -> list[str]:
        """Symbols by fairseq index, the four specials first."""
        symbols, seen = list(SPECIAL_SYMBOLS), set(SPECIAL_SYMBOLS)
        for number, line in enumerate(self.dictionary.read_text(encoding="utf-8").splitlines(), start=1):
            symbol, _, count = line.rstrip().rpartition(" ")
            overwrite = count == OVERWRITE_FLAG
            if overwrite:
                symbol, _, count = symbol.rpartition(" ")
            if not symbol or not count.isascii() or not count.isdigit():
                raise self.malformed(self.dictionary, f"{line!r} is not `<symbol> <count>`", number)
            if symbol in seen and not overwrite:
                raise self.malformed(self.dictionary, f"symbol {symbol!r} is listed twice", number)
            if symbol not in seen:  # an overwritten symbol keeps its index, as in fairseq
                symbols.append(symbol)
                seen.add(symbol)
        return symbols

    def gpt2_ids(self, symbols: list[str], tokenizer: Tokenizer) -> np.ndarray:
        """int64 [len(symbols)]: the GPT-2 id of each fairseq index, EOT for </s>, -1 where there is none (<s>,
        <pad>, <unk>, fairseq's `madeupword` padding, any symbol that is not an id)."""
        table = np.full(len(symbols), -1, dtype=np.int64)
        table[EOS_INDEX] = tokenizer.eot_id
        for index, symbol in enumerate(symbols[len(SPECIAL_SYMBOLS) :], start=len(SPECIAL_SYMBOLS)):
            if symbol.isascii() and symbol.isdigit() and int(symbol) < tokenizer.vocab_size:
                table[index] = int(symbol)
        return table

    def sequence_sizes(self) -> tuple[np.dtype, np.ndarray]:
        """(dtype of the .bin, int64 [S] tokens per sequence), the index checked against itself and the .bin."""
        raw = self.index.read_bytes()
        if len(raw) < HEADER.size:
            raise self.malformed(self.index, f"{len(raw)} bytes, shorter than the {HEADER.size}-byte header")
        magic, version, code, count = HEADER.unpack_from(raw)
        if magic != MAGIC or version != 1 or code not in INTEGER_DTYPES:
            problem = f"header {magic!r} version {version} dtype code {code}; expected {MAGIC!r} version 1 and an int"
            raise self.malformed(self.index, problem)
        offset = self.sizes_offset(raw, count)
        sizes = np.frombuffer(raw, dtype="<i4", count=count, offset=offset).astype(np.int64)
        pointers = np.frombuffer(raw, dtype="<i8", count=count, offset=offset + 4 * count)
        dtype = np.dtype(INTEGER_DTYPES[code])
        ends = np.cumsum(sizes) * dtype.itemsize
        if (sizes < 0).any() or not np.array_equal(pointers, ends - sizes * dtype.itemsize):
            raise self.malformed(self.index, "sequences are not stored back to back (pointers disagree with sizes)")
        expected = int(ends[-1]) if count else 0
        if self.tokens.stat().st_size != expected:
            problem = f"{self.tokens.stat().st_size} bytes where {self.index.name} describes {expected}"
            raise self.malformed(self.tokens, problem)
        return dtype, sizes

    def sizes_offset(self, raw: bytes, count: int) -> int:
        """Where the sizes start: right after the header in fairseq's layout, after a document count in Megatron's
        (whose doc_idx then ends the file)."""
        if len(raw) == HEADER.size + 12 * count:
            return HEADER.size
        if len(raw) >= HEADER.size + 8:
            (documents,) = struct.unpack_from("<Q", raw, HEADER.size)
            if len(raw) == HEADER.size + 8 + 12 * count + 8 * documents:
                return HEADER.size + 8
        raise self.malformed(self.index, f"{len(raw)} bytes do not fit a header and {count} sequences")

    def read(self, tokenizer: Tokenizer) -> Iterator[TokenBatch]:
        """Token batches of the split in GPT-2 ids, one document per sequence (line)."""
        table = self.gpt2_ids(self.symbols(), tokenizer)
        dtype, sizes = self.sequence_sizes()
        if not len(sizes):
            return
        stream = np.memmap(self.tokens, dtype=dtype, mode="r")
        boundaries = np.concatenate([[0], np.cumsum(sizes)])
        for first in range(0, len(sizes), SEQUENCES_PER_BATCH):
            last = min(first + SEQUENCES_PER_BATCH, len(sizes))
            indices = np.asarray(stream[boundaries[first] : boundaries[last]], dtype=np.int64)
            yield self.map_indices(indices, table, int(boundaries[first])), sizes[first:last]

    def map_indices(self, indices: np.ndarray, table: np.ndarray, position: int) -> np.ndarray:
        """GPT-2 ids of fairseq indices read at token `position` of the .bin; an index without one is an error."""
        inside = (indices >= 0) & (indices < len(table))
        ids = np.where(inside, table[np.where(inside, indices, 0)], -1)
        if (ids < 0).any():
            at = int(np.argmax(ids < 0))
            index = int(indices[at])
            symbol = f" ({self.symbols()[index]!r})" if inside[at] else ""
            problem = (
                f"token {position + at} is fairseq index {index}{symbol}, which is no GPT-2 id in "
                f"{self.dictionary.name}: this data-bin was not made with GPT-2 BPE"
            )
            raise self.malformed(self.tokens, problem)
        return ids
