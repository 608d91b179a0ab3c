"""LRA ListOps generator: a seeded restatement of LRA's, writing the release's TSV format.

The generator follows google-research/long-range-arena `lra_benchmarks/data/listops.py` draw for draw (operators
[MIN [MAX [MED [SM, a leaf with probability 1 - VALUE_P below max_depth, 2..max_args arguments, left-nested binary
tuples, lengths strictly between min_length and max_length tokens without parentheses). The original is unseeded
and splits in `set` order, so its release cannot be reproduced; here every shard of SHARD_SIZE examples draws from
its own `random.Random` seeded by (seed, shard index), shards are merged in order and de-duplicated with a seen-set,
so the splits depend on the seed and the split sizes only, never on the number of worker processes.

    python -m hgrn.data.lra.listops_generate --out data/lra/listops --train 96000 --val 2000 --test 2000 --seed 0
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from multiprocessing.pool import Pool
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hgrn.data.lra.listops import END, HEADER, OPERATORS, VALUES, split_path
from hgrn.io import atomic_writes

VALUE_P = 0.25
SHARD_SIZE = 1000

Tree = int | tuple  # a leaf value, or (left, right) pairs ending in (chain, END)


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
    """What a generation run drew and kept, for the CLI's report and the tests' checks on the distribution."""

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

    The files are written under hidden temporary names in `out_dir` and renamed only once every split is complete
    (hgrn.io.atomic_writes), so an interrupted run leaves the previous files, or none.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = GenerationStats()
    paths = [split_path(out_dir, split) for split in sizes]
    with (
        _worker_pool(workers) as pool,
        _progress(progress, sum(sizes.values())) as advance,
        atomic_writes(paths, "w") as files,
    ):
        examples = iter_examples(sum(sizes.values()), seed, settings, pool, stats)
        for f, size in zip(files, sizes.values(), strict=True):
            f.write(HEADER + "\n")
            for source, label in islice(examples, size):
                f.write(f"{source}\t{label}\n")
                advance()
    return stats


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


def main(argv: list[str] | None = None) -> None:
    """The `make data-listops` / `make demo` entry point: parse the flags, write the splits, report the draw."""
    parser = argparse.ArgumentParser(
        prog="python -m hgrn.data.lra.listops_generate",
        description="Generate LRA ListOps splits (basic_{train,val,test}.tsv).",
    )
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
