"""LRA ListOps: the release's TSV format, the s4 tokenizer and vocabulary, and the datamodule.

A split is `basic_{train,val,test}.tsv`: a `Source<TAB>Target` header, then one expression and its value (0-9) per
line. Each file is tokenised once into the shared decode-once cache (hgrn.data.lra.cache) and checked row by row
while it is; a damaged row is reported with its file and line. The data come from `make data-listops`
(hgrn.data.lra.listops_generate) or from the LRA release (`make data-lra`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from hgrn.data import errors
from hgrn.data.columns import ColumnDataset
from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.lra.cache import load_or_build
from hgrn.data.lra.datamodule import SequenceDataModule
from hgrn.data.lra.tokens import PackedSequences, pack_rows

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
VALUES = range(10)
END = "]"
SPLITS = ("train", "val", "test")
MAKE_TARGET = "data-listops"
WHAT = "ListOps split"
HEADER = "Source\tTarget"

# s4 convention: `]` becomes X and parentheses vanish, so 15 symbols remain. The vocabulary is fixed rather than
# built from the training set (as s4 does with torchtext) so ids do not depend on token frequencies. Like s4
# (`append_eos: true`) every sequence ends in <eos>, which gives pooling heads and causal readouts a fixed last token.
SPECIALS = ("<pad>", "<unk>", "<eos>")
SYMBOLS = (*map(str, VALUES), *OPERATORS, "X")
VOCAB = SPECIALS + SYMBOLS
TOKEN_TO_ID = {token: i for i, token in enumerate(VOCAB)}
PAD_ID, UNK_ID, EOS_ID = 0, 1, 2
NUM_CLASSES = len(VALUES)
_SYMBOL_TO_ID = {symbol: TOKEN_TO_ID[symbol] for symbol in SYMBOLS}
LABELS = {str(value): value for value in VALUES}  # ASCII digits only: str.isdigit() and int() also take '²' and '٣'
_TOKENIZER_TABLE = str.maketrans({"]": "X", "(": None, ")": None})


def split_path(data_dir: Path, split: str) -> Path:
    """Where a split lives: the release's file name, which the generator writes too."""
    return data_dir / f"basic_{split}.tsv"


def tokenize(source: str) -> list[str]:
    """The LRA/s4 ListOps tokenizer: `]` becomes X, parentheses are dropped, whitespace splits."""
    return source.translate(_TOKENIZER_TABLE).split()


def encode(source: str) -> list[int]:
    """Token ids of a source string, without the <eos> the dataset appends. A token outside the 15 symbols raises
    ValueError: valid data never needs <unk> (kept for s4's id layout), so the loader treats such a row as corrupt."""
    try:
        return [_SYMBOL_TO_ID[token] for token in tokenize(source)]
    except KeyError as e:
        raise ValueError(f"unknown symbol {e.args[0]!r}") from None


def make_target(data_dir: Path) -> str:
    """The make target that writes this folder: `make demo` for the demo set, `make data-listops` otherwise."""
    return "demo" if data_dir.resolve() == (errors.DEFAULT_DATA_DIR / "demo" / "listops").resolve() else MAKE_TARGET


def parse_row(line: str) -> tuple[bytes, int]:
    """One `Source<TAB>Target` line (without its line ending) as (token ids, label); ValueError says what is wrong."""
    source, tab, target = line.partition("\t")
    if not tab:
        raise ValueError(f"expected 'Source<TAB>Target', found no tab in ...{line[-80:]!r}")
    if target not in LABELS:
        raise ValueError(f"target {target[:20]!r} is not a label 0-9 (one ASCII digit)")
    row = encode(source)
    if not row or source.count("[") != source.count(END):  # every operator token starts with [
        raise ValueError("not a complete ListOps expression (unbalanced brackets)")
    return bytes(row), LABELS[target]


def read_tsv(path: Path) -> dict[str, Tensor]:
    """Tokenise a release-format TSV into packed ids (data uint8, offsets int64 [N+1]) and labels int64 [N], checking
    every row: the cache then only ever holds data that passed these checks. Blank lines may end the file (editors
    add them); one with rows after it is reported, as is any line that is not UTF-8."""
    rows: list[bytes] = []
    labels: list[int] = []
    first_blank: int | None = None
    with path.open("rb") as f:
        header = _decode(path, f.readline(), 1).rstrip("\r\n")
        if header != HEADER:
            raise _malformed(path, f"expected the header {HEADER!r}, got {header[:80]!r}", 1)
        for number, raw in enumerate(f, start=2):
            line = _decode(path, raw, number).rstrip("\r\n")
            if not line.strip():
                first_blank = first_blank or number
                continue
            if first_blank is not None:
                raise _malformed(path, "blank line with rows after it; delete it", first_blank)
            try:
                row, label = parse_row(line)
            except ValueError as error:
                raise _malformed(path, str(error), number) from None
            rows.append(row)
            labels.append(label)
    if not labels:
        raise _malformed(path, "no examples after the header")
    data, offsets = pack_rows(rows)
    return {"data": data, "offsets": offsets, "labels": torch.tensor(labels, dtype=torch.long)}


def _decode(path: Path, raw: bytes, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        problem = f"byte {raw[error.start]:#04x} at position {error.start + 1} is not UTF-8 (save the file as UTF-8)"
        raise _malformed(path, problem, number) from None


def _malformed(path: Path, problem: str, line: int | None = None) -> MalformedDataError:
    return MalformedDataError(WHAT, path, make_target(path.parent), problem, line=line)


def load_split(path: Path | str, cache_dir: Path | str | None = None, max_length: int | None = None) -> ColumnDataset:
    """One split as examples `{"inputs": LongTensor[T], "labels": LongTensor[]}`, <eos> appended.

    The TSV is tokenised once into `cache_dir` (default: `cache/` beside it) and re-read when it changes. A sequence
    longer than `max_length` (counting <eos>) keeps its first max_length - 1 tokens and the <eos>, as s4 does, with
    one warning per split; the standard set (at most 1999 tokens) is never truncated at max_length=2048.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(WHAT, path, make_target(path.parent), "file missing", data_dir=path.parent)
    tensors = load_or_build(
        Path(cache_dir) if cache_dir is not None else path.parent / "cache",
        f"listops-{path.stem}",
        [path],
        {"vocab": VOCAB},
        lambda: read_tsv(path),
    )
    sequences = PackedSequences(tensors["data"], tensors["offsets"], 0, EOS_ID, max_length)
    truncated = int((sequences.lengths() > max_length).sum()) if max_length is not None else 0
    if truncated:
        warnings.warn(
            f"{truncated} of {len(sequences)} ListOps sequences in {path} are longer than max_length={max_length} "
            f"and are truncated to it (the final <eos> is kept)",
            stacklevel=2,
        )
    return ColumnDataset(inputs=sequences, labels=tensors["labels"])


class ListOpsDataModule(SequenceDataModule):
    """LRA ListOps from `data_dir/basic_{train,val,test}.tsv` (generate them with `make data-listops`).

    Batches: inputs [B, T] int64 token ids (0 pad, 2 <eos>; T <= max_length), mask [B, T], labels [B] in 0..9.
    """

    num_classes = NUM_CLASSES
    vocab_size = len(VOCAB)
    default_max_length = 2048

    def read_splits(self) -> dict[str, Dataset]:
        return {
            split: load_split(split_path(self.data_dir, split), self.cache_dir, self.max_length) for split in SPLITS
        }
