"""LRA ListOps: a seeded restatement of the LRA generator, the s4 tokenizer, a cached TSV dataset and its datamodule.

The generator follows google-research/long-range-arena `lra_benchmarks/data/listops.py` draw for draw (operators
[MIN [MAX [MED [SM, a leaf with probability 1 - VALUE_P below max_depth, 2..max_args arguments, left-nested binary
tuples, lengths strictly between min_length and max_length tokens without parentheses). The original is unseeded
and splits in `set` order, so its release cannot be reproduced; here every shard of SHARD_SIZE examples draws from
its own `random.Random` seeded by (seed, shard index), shards are merged in order and de-duplicated with a seen-set,
so the splits depend on the seed and the split sizes only, never on the number of worker processes.

    python -m hgrn.data.listops --out data/lra/listops --train 96000 --val 2000 --test 2000 --seed 0
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from multiprocessing.pool import Pool
from pathlib import Path
from typing import IO

import lightning as L
import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from hgrn.data.collate import classification_collate
from hgrn.data.errors import DataNotFoundError

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
VALUES = range(10)
VALUE_P = 0.25
END = "]"
SPLITS = ("train", "val", "test")
SHARD_SIZE = 1000
MAKE_TARGET = "data-listops"
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
_TOKENIZER_TABLE = str.maketrans({"]": "X", "(": None, ")": None})

Tree = int | tuple  # a leaf value, or (left, right) pairs ending in (chain, END)


# ---------------------------------------------------------------------------------------------------- generator


def generate_tree(rng: random.Random, depth: int = 1, max_depth: int = 10, max_args: int = 10) -> tuple[Tree, int]:
    """One random expression and its length in tokens (parentheses excluded), exactly as LRA's `generate_tree`."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        return rng.choice(VALUES), 1
    length = 2  # the operator and END
    args = []
    for _ in range(rng.randint(2, max_args)):
        arg, arg_length = generate_tree(rng, depth + 1, max_depth, max_args)
        args.append(arg)
        length += arg_length
    tree: Tree = (rng.choice(OPERATORS), args[0])
    for arg in args[1:]:
        tree = (tree, arg)
    return (tree, END), length


def to_string(tree: Tree) -> str:
    """The LRA source string: every pair becomes `( left right )`."""
    parts: list[str] = []

    def emit(node: Tree) -> None:
        if isinstance(node, tuple):
            parts.append("(")
            emit(node[0])
            emit(node[1])
            parts.append(")")
        else:
            parts.append(str(node))

    emit(tree)
    return " ".join(parts)


def _median_floor(args: list[int]) -> int:
    """int(np.median(args)) in integers (an even count averages the middle two and truncates), without np.median's
    per-call overhead in the generator's inner loop."""
    ordered = sorted(args)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2


_APPLY = {"[MIN": min, "[MAX": max, "[MED": _median_floor, "[SM": lambda args: sum(args) % 10}


def to_value(tree: Tree) -> int:
    """The label: the value of the expression (MED = int(np.median), SM = sum % 10, as LRA's `to_value`)."""
    if not isinstance(tree, tuple):
        return tree
    chain, _end = tree
    args = []
    while isinstance(chain[0], tuple):  # ((..., arg_{k-1}), arg_k): peel arguments off the right
        chain, arg = chain
        args.append(to_value(arg))
    op, first = chain
    args.append(to_value(first))
    return _APPLY[op](args[::-1])


@dataclass(frozen=True)
class GeneratorSettings:
    """The LRA generator's flags (defaults are LRA's `basic` task)."""

    min_length: int = 500
    max_length: int = 2000
    max_depth: int = 10
    max_args: int = 10

    def __post_init__(self) -> None:
        if self.max_length - self.min_length < 2:
            raise ValueError(
                f"min_length={self.min_length}, max_length={self.max_length}: no length lies strictly between them"
            )
        if self.max_depth < 2 or self.max_args < 2:
            raise ValueError(f"max_depth and max_args must be at least 2, got {self.max_depth} and {self.max_args}")


@dataclass(frozen=True)
class _Shard:
    seed: int
    index: int
    size: int
    settings: GeneratorSettings


def _generate_shard(shard: _Shard) -> tuple[list[tuple[str, int, int]], int]:
    """`shard.size` in-bounds (source, label, length) examples from the shard's own RNG, and the trees drawn."""
    rng = random.Random(f"listops/{shard.seed}/{shard.index}")
    settings, examples, attempts = shard.settings, [], 0
    while len(examples) < shard.size:
        tree, length = generate_tree(rng, 1, settings.max_depth, settings.max_args)
        attempts += 1
        if settings.min_length < length < settings.max_length:
            examples.append((to_string(tree), to_value(tree), length))
    return examples, attempts


@dataclass
class GenerationStats:
    attempts: int = 0  # trees drawn
    duplicates: int = 0  # in-bounds trees dropped because an earlier example had the same string
    lengths: list[int] = field(default_factory=list)  # tokens without parentheses, per kept example
    labels: Counter[int] = field(default_factory=Counter)

    @property
    def acceptance_rate(self) -> float:
        """Fraction of drawn trees whose length lies within the bounds."""
        return (len(self.lengths) + self.duplicates) / max(self.attempts, 1)


def iter_examples(
    num_examples: int,
    seed: int = 0,
    settings: GeneratorSettings | None = None,
    pool: Pool | None = None,
    stats: GenerationStats | None = None,
) -> Iterator[tuple[str, int]]:
    """Yield `num_examples` distinct (source, label) pairs, deterministic in (seed, num_examples, settings).

    Shards run in `pool` when given; their results are consumed in shard order and de-duplicated here. If duplicates
    leave the set short, shards with fresh indices top it up.
    """
    settings = settings or GeneratorSettings()
    stats = stats if stats is not None else GenerationStats()
    seen: set[bytes] = set()
    next_index, produced = 0, 0
    while produced < num_examples:
        missing = num_examples - produced
        shards = [
            _Shard(seed, next_index + i, min(SHARD_SIZE, missing - start), settings)
            for i, start in enumerate(range(0, missing, SHARD_SIZE))
        ]
        next_index += len(shards)
        for examples, attempts in pool.imap(_generate_shard, shards) if pool else map(_generate_shard, shards):
            stats.attempts += attempts
            for source, label, length in examples:
                digest = hashlib.blake2b(source.encode(), digest_size=16).digest()
                if digest in seen:
                    stats.duplicates += 1
                    continue
                seen.add(digest)
                stats.lengths.append(length)
                stats.labels[label] += 1
                yield source, label
                produced += 1
                if produced == num_examples:
                    return


@contextmanager
def _worker_pool(workers: int) -> Iterator[Pool | None]:
    """A process pool when workers > 1. Callers create it before any progress-bar thread starts, so forking is safe."""
    if workers <= 1:
        yield None
        return
    with multiprocessing.get_context().Pool(workers) as pool:
        yield pool


def generate_examples(
    num_examples: int, seed: int = 0, settings: GeneratorSettings | None = None, workers: int = 1
) -> list[tuple[str, int]]:
    """`num_examples` distinct (source, label) pairs; the result does not depend on `workers`."""
    with _worker_pool(workers) as pool:
        return list(iter_examples(num_examples, seed, settings, pool))


def write_splits(
    out_dir: Path | str,
    sizes: Mapping[str, int],
    seed: int = 0,
    settings: GeneratorSettings | None = None,
    workers: int = 1,
    progress: bool = False,
) -> GenerationStats:
    """Write `basic_{split}.tsv` for each split in `sizes`, in order (the first examples go to the first split).

    The files are written under temporary names in `out_dir` and renamed only once every split is complete, so an
    interrupted run leaves the previous files (or none), plus at most hidden `.tmp` files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = GenerationStats()
    temporary: dict[Path, Path] = {}
    try:
        with _worker_pool(workers) as pool, _progress(progress, sum(sizes.values())) as advance:
            examples = iter_examples(sum(sizes.values()), seed, settings, pool, stats)
            for split, size in sizes.items():
                final = out_dir / f"basic_{split}.tsv"
                f, temporary[final] = _open_temporary(final, "w")
                with f:
                    f.write(HEADER + "\n")
                    for source, label in islice(examples, size):
                        f.write(f"{source}\t{label}\n")
                        advance()
                    f.flush()
                    os.fsync(f.fileno())
        for final, name in temporary.items():
            os.replace(name, final)
    finally:
        for name in temporary.values():
            name.unlink(missing_ok=True)
    return stats


def _open_temporary(final: Path, mode: str) -> tuple[IO, Path]:
    """A hidden file beside `final` (same file system, so os.replace is atomic), mode 0644 like a normal data file."""
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)
    return os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})), Path(name)


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    """A rich progress bar over `total` examples; yields the function that advances it by one."""
    if not enabled:
        yield lambda: None
        return
    columns = (TextColumn("ListOps"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task("generate", total=total)
        yield partial(bar.advance, task)


# ---------------------------------------------------------------------------------------------------- tokenizer


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


# ---------------------------------------------------------------------------------------------------- dataset

_CACHE_VERSION = "listops-tokens-v1"


def _corrupt(path: Path, detail: str) -> DataNotFoundError:
    return DataNotFoundError("ListOps split", path, MAKE_TARGET, detail)


def _read_tsv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenise a release-format TSV into (token ids uint8, offsets int64 [N+1], labels int64 [N]), row-checked."""
    tokens = bytearray()
    offsets, labels = [0], []
    with path.open(newline="") as f:
        header = f.readline().rstrip("\r\n")
        if header != HEADER:
            raise _corrupt(path, f"line 1: expected the header {HEADER!r}, got {header[:80]!r}")
        for line_number, line in enumerate(f, start=2):
            source, tab, target = line.rstrip("\r\n").partition("\t")
            if not tab or len(target) != 1 or not target.isdigit():
                raise _corrupt(
                    path, f"line {line_number}: expected 'Source<TAB>Target' with a 0-9 target, got ...{line[-80:]!r}"
                )
            try:
                row = encode(source)
            except ValueError as e:
                raise _corrupt(path, f"line {line_number}: {e}") from None
            if not row or source.count("[") != source.count(END):  # every operator token starts with [
                raise _corrupt(path, f"line {line_number}: not a complete ListOps expression (unbalanced brackets)")
            tokens.extend(row)
            offsets.append(len(tokens))
            labels.append(int(target))
    if not labels:
        raise _corrupt(path, "no examples after the header")
    return np.frombuffer(tokens, dtype=np.uint8), np.array(offsets, dtype=np.int64), np.array(labels, dtype=np.int64)


def _cache_key(path: Path) -> str:
    stat = path.stat()
    return f"{_CACHE_VERSION} size={stat.st_size} mtime_ns={stat.st_mtime_ns} vocab={' '.join(VOCAB)}"


def _load_cache(cache: Path, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The cached arrays if the cache matches `key` and is internally consistent; None means rebuild."""
    try:
        with np.load(cache, allow_pickle=False) as npz:
            if str(npz["key"]) != key:
                return None
            tokens, offsets, labels = npz["tokens"], npz["offsets"], npz["labels"]
    except Exception:  # missing, truncated or garbage: the cache is only ever an optimisation
        return None
    consistent = (
        tokens.dtype == np.uint8
        and offsets.dtype == labels.dtype == np.int64
        and tokens.ndim == offsets.ndim == labels.ndim == 1
        and len(labels) > 0
        and len(offsets) == len(labels) + 1
        and offsets[0] == 0
        and offsets[-1] == len(tokens)
        and bool(np.all(np.diff(offsets) > 0))
        and bool(np.all((tokens >= len(SPECIALS)) & (tokens < len(VOCAB))))
        and bool(np.all((labels >= 0) & (labels < NUM_CLASSES)))
    )
    return (tokens, offsets, labels) if consistent else None


def _save_cache(cache: Path, key: str, tokens: np.ndarray, offsets: np.ndarray, labels: np.ndarray) -> None:
    """Write the cache atomically; a read-only data directory only costs re-tokenising next time."""
    name = None
    try:
        f, name = _open_temporary(cache, "wb")
        with f:
            np.savez(f, key=np.array(key), tokens=tokens, offsets=offsets, labels=labels)
        os.replace(name, cache)
    except OSError as e:
        warnings.warn(f"could not write the token cache {cache} ({e}); the TSV will be tokenised again", stacklevel=3)
        if name:
            name.unlink(missing_ok=True)


class ListOpsDataset(Dataset):
    """One split of a release-format ListOps TSV, tokenised once and cached next to it (`<file>.tokens.npz`).

    Examples are `{"inputs": LongTensor[T], "labels": LongTensor[]}` with <eos> appended. A sequence longer than
    `max_length` (counting <eos>) keeps its first max_length - 1 tokens and the <eos>, as s4 does; the standard set
    (at most 1999 tokens) is never truncated at max_length=2048.
    """

    def __init__(self, path: Path | str, max_length: int | None = None) -> None:
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must leave room for a token and <eos>, got {max_length}")
        self.path = Path(path)
        self.max_length = max_length
        self.tokens, self.offsets, self.labels = self._load()
        lengths = np.diff(self.offsets) + 1
        truncated = int((lengths > max_length).sum()) if max_length else 0
        if truncated:
            warnings.warn(
                f"{truncated} of {len(self)} ListOps sequences in {self.path} are longer than max_length={max_length} "
                f"and are truncated to it (the final <eos> is kept)",
                stacklevel=2,
            )

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.path.is_file():
            raise _corrupt(self.path, "file missing")
        cache = self.path.with_name(self.path.name + ".tokens.npz")
        key = _cache_key(self.path)
        arrays = _load_cache(cache, key)
        if arrays is None:
            arrays = _read_tsv(self.path)
            _save_cache(cache, key, *arrays)
        return arrays

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        if self.max_length:
            stop = min(stop, start + self.max_length - 1)
        ids = torch.empty(stop - start + 1, dtype=torch.long)
        ids[:-1] = torch.from_numpy(self.tokens[start:stop])
        ids[-1] = EOS_ID
        return {"inputs": ids, "labels": torch.tensor(self.labels[index])}


class ListOpsDataModule(L.LightningDataModule):
    """LRA ListOps from `data_dir/basic_{train,val,test}.tsv` (generate them with `make data-listops`)."""

    def __init__(
        self,
        data_dir: Path | str,
        batch_size: int = 32,
        max_length: int = 2048,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.max_length = max_length
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.datasets: dict[str, ListOpsDataset] = {}

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    @property
    def vocab_size(self) -> int:
        return len(VOCAB)

    def prepare_data(self) -> None:
        """Build the token caches once per node (Lightning calls this on one process) so other ranks only read them."""
        for split in SPLITS:
            ListOpsDataset(self.data_dir / f"basic_{split}.tsv")

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", SPLITS)
        for split in needed:
            if split not in self.datasets:
                self.datasets[split] = ListOpsDataset(self.data_dir / f"basic_{split}.tsv", self.max_length)

    def _loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"the {split} split is not loaded: call setup() before asking for its dataloader")
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=split == "train",
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=classification_collate,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


# ---------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate LRA ListOps splits (basic_{train,val,test}.tsv).")
    parser.add_argument("--out", type=Path, required=True, help="output directory, e.g. data/lra/listops")
    parser.add_argument("--train", type=int, default=96_000)
    parser.add_argument("--val", type=int, default=2_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (does not change the data)")
    parser.add_argument("--min-length", type=int, default=500, help="exclusive lower bound on tokens")
    parser.add_argument("--max-length", type=int, default=2000, help="exclusive upper bound on tokens")
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--max-args", type=int, default=10)
    args = parser.parse_args(argv)
    sizes = {"train": args.train, "val": args.val, "test": args.test}
    for split, size in sizes.items():
        if size < 1:
            parser.error(f"--{split} must be at least 1, got {size}")
    try:
        settings = GeneratorSettings(args.min_length, args.max_length, args.max_depth, args.max_args)
    except ValueError as e:
        parser.error(str(e))

    start = time.perf_counter()
    stats = write_splits(args.out, sizes, args.seed, settings, args.workers, progress=True)
    seconds = time.perf_counter() - start

    lengths = np.array(stats.lengths)
    total = len(lengths)
    print(
        f"wrote {args.train}/{args.val}/{args.test} examples to {args.out} in {seconds:.1f} s ({args.workers} workers)"
    )
    print(f"trees drawn {stats.attempts}, acceptance rate {stats.acceptance_rate:.2%}, duplicates {stats.duplicates}")
    print(f"length min {lengths.min()} mean {lengths.mean():.0f} median {np.median(lengths):.0f} max {lengths.max()}")
    print("labels " + " ".join(f"{label}:{stats.labels[label] / total:.1%}" for label in VALUES))


if __name__ == "__main__":
    main()
