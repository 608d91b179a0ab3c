"""ListOps: the LRA generator's semantics, seeded determinism, the release TSV format, the loader's checks and cache."""

from __future__ import annotations

import random
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.lra import listops, listops_generate
from hgrn.data.lra.listops import EOS_ID, SYMBOLS, VOCAB, ListOpsDataModule, encode, load_split, tokenize
from hgrn.data.lra.listops_generate import (
    GenerationStats,
    GeneratorSettings,
    generate_examples,
    generate_tree,
    iter_examples,
    to_string,
    to_value,
    write_splits,
)

SMALL = GeneratorSettings(min_length=10, max_length=60)  # short expressions: fast, same algorithm
FIXTURE_DIR = Path(__file__).parents[1] / "fixtures" / "lra" / "listops"
FIXTURE_SIZES = {"train": 16, "val": 4, "test": 4}  # written by write_splits(FIXTURE_DIR, FIXTURE_SIZES, 0, SMALL)


def evaluate(tokens: list[str]) -> int:
    """An independent stack machine over the tokens: an operator opens a frame, X closes it (MED as LRA: np.median)."""
    stack: list[int | str] = []
    for token in tokens:
        if token.startswith("["):
            stack.append(token)
        elif token == "X":
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            if op == "[MIN":
                stack.append(min(args))
            elif op == "[MAX":
                stack.append(max(args))
            elif op == "[MED":
                stack.append(int(np.median(args)))
            else:
                assert op == "[SM"
                stack.append(sum(args) % 10)
        else:
            stack.append(int(token))
    assert len(stack) == 1 and isinstance(stack[0], int)
    return stack[0]


def frame_shape(tokens: list[str]) -> tuple[int, int, int]:
    """(deepest operator nesting, fewest and most arguments of any operator) of a tokenised expression."""
    depth, deepest, counts, sizes = 0, 0, [], []
    for token in tokens:
        if counts and token != "X":
            counts[-1] += 1  # every token but X starts an argument of the enclosing operator
        if token.startswith("["):
            depth += 1
            deepest = max(deepest, depth)
            counts.append(0)
        elif token == "X":
            depth -= 1
            sizes.append(counts.pop())
    return deepest, min(sizes), max(sizes)


def read_rows(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "Source\tTarget"
    return [(source, int(target)) for source, target in (line.split("\t") for line in lines[1:])]


# ---------------------------------------------------------------------------------------------------- generator


def test_string_and_value_follow_lra() -> None:
    tree = ((("[MAX", 2), 9), "]")  # LRA's own example: ( ( ( [MAX 2 ) 9 ) ] )
    assert to_string(tree) == "( ( ( [MAX 2 ) 9 ) ] )"
    assert to_value(tree) == 9
    med = ((((("[MED", 7), 1), 4), 2), "]")  # even count: median 3.0 of [7, 1, 4, 2] -> 3
    assert to_value(med) == 3
    nested = (((("[SM", 9), ((("[MIN", 5), 3), "]")), 8), "]")  # (9 + 3 + 8) % 10
    assert to_value(nested) == 0


def test_median_matches_numpy() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        args = [rng.randrange(10) for _ in range(rng.randint(2, 10))]
        tree: tuple = ("[MED", args[0])
        for arg in args[1:]:
            tree = (tree, arg)
        assert to_value((tree, "]")) == int(np.median(args))


def test_tree_length_depth_and_arity() -> None:
    rng = random.Random(0)
    roots = [generate_tree(rng, 1, max_depth=10, max_args=10) for _ in range(2000)]
    leaves = sum(isinstance(tree, int) for tree, _ in roots)
    assert 0.715 < leaves / len(roots) < 0.785  # a leaf with probability 1 - VALUE_P
    for tree, length in roots:
        tokens = tokenize(to_string(tree))
        assert length == len(tokens)
        if isinstance(tree, tuple):
            deepest, fewest, most = frame_shape(tokens)
            assert deepest <= 9 and fewest >= 2 and most <= 10  # depth 10 is always a leaf


def test_default_bounds_labels_and_acceptance() -> None:
    stats = GenerationStats()
    examples = list(iter_examples(25, seed=1, stats=stats))
    for source, label in examples:
        tokens = tokenize(source)
        assert 500 < len(tokens) < 2000
        assert label == evaluate(tokens)
    assert stats.lengths == [len(tokenize(source)) for source, _ in examples]
    assert 0.03 < stats.acceptance_rate < 0.16  # LRA's generator accepts about 8% of its trees
    assert set().union(*(tokenize(source) for source, _ in examples)) == set(SYMBOLS)


def test_small_bounds_are_strict() -> None:
    for source, label in generate_examples(150, seed=2, settings=SMALL):
        tokens = tokenize(source)
        assert 10 < len(tokens) < 60
        assert label == evaluate(tokens)


def test_determinism_and_worker_independence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listops_generate, "SHARD_SIZE", 16)  # several shards
    first = generate_examples(60, seed=3, settings=SMALL)
    assert first == generate_examples(60, seed=3, settings=SMALL)
    assert first == generate_examples(60, seed=3, settings=SMALL, workers=2)
    assert first[:20] == generate_examples(20, seed=3, settings=SMALL)  # a smaller request is a prefix
    assert first != generate_examples(60, seed=4, settings=SMALL)


def test_duplicates_are_dropped_and_topped_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listops_generate, "SHARD_SIZE", 64)
    tiny = GeneratorSettings(min_length=3, max_length=6)  # lengths 4 and 5 only: a few thousand expressions
    stats = GenerationStats()
    examples = list(iter_examples(200, seed=0, settings=tiny, stats=stats))
    assert len(examples) == len({source for source, _ in examples}) == 200
    assert stats.duplicates > 0
    assert examples == generate_examples(200, seed=0, settings=tiny, workers=2)


def test_settings_reject_empty_bounds() -> None:
    with pytest.raises(ValueError, match="min_length"):
        GeneratorSettings(min_length=10, max_length=11)


# ---------------------------------------------------------------------------------------------------- files


def test_write_splits_round_trip(tmp_path: Path) -> None:
    sizes = {"train": 20, "val": 5, "test": 5}
    write_splits(tmp_path, sizes, seed=5, settings=SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    expected = generate_examples(30, seed=5, settings=SMALL)
    rows = [row for split in sizes for row in read_rows(tmp_path / f"basic_{split}.tsv")]
    assert rows == expected
    assert stat.S_IMODE((tmp_path / "basic_train.tsv").stat().st_mode) & 0o044 == 0o044  # readable by others

    dataset = load_split(tmp_path / "basic_val.tsv")
    assert len(dataset) == 5
    for example, (source, label) in zip(dataset, expected[20:25], strict=True):
        assert example["inputs"].dtype == torch.long and example["labels"].shape == ()
        assert example["inputs"].tolist() == [*encode(source), EOS_ID]
        assert example["labels"].item() == label


def test_interrupted_write_leaves_previous_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_splits(tmp_path, {"train": 4, "val": 2, "test": 2}, seed=0, settings=SMALL)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    some = generate_examples(5, seed=9, settings=SMALL)

    def interrupted(*args, **kwargs):
        yield from some  # train complete, val half written
        raise KeyboardInterrupt

    monkeypatch.setattr(listops_generate, "iter_examples", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_splits(tmp_path, {"train": 4, "val": 2, "test": 2}, seed=9, settings=SMALL)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no new, half or temporary file


def test_committed_fixture_matches_the_generator(tmp_path: Path) -> None:
    write_splits(tmp_path, FIXTURE_SIZES, seed=0, settings=SMALL)
    for split in FIXTURE_SIZES:
        assert (FIXTURE_DIR / f"basic_{split}.tsv").read_bytes() == (tmp_path / f"basic_{split}.tsv").read_bytes()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--out", str(tmp_path), "--train", "6", "--val", "2", "--test", "2", "--min-length", "10"]
    listops_generate.main([*args, "--max-length", "60", "--workers", "1", "--seed", "3"])
    assert [len(read_rows(tmp_path / f"basic_{s}.tsv")) for s in ("train", "val", "test")] == [6, 2, 2]
    assert "acceptance rate" in capsys.readouterr().out
    for bad in (["--val", "0"], ["--min-length", "10", "--max-length", "11"]):
        with pytest.raises(SystemExit):
            listops_generate.main(["--out", str(tmp_path), *bad])


# ---------------------------------------------------------------------------------------------------- tokenizer


def test_vocabulary() -> None:
    digits = tuple(str(d) for d in range(10))
    expected = ("<pad>", "<unk>", "<eos>", *digits, "[MIN", "[MAX", "[MED", "[SM", "X")
    assert list(VOCAB) == list(expected)
    assert VOCAB.index("<pad>") == 0 and VOCAB[EOS_ID] == "<eos>"
    assert tokenize("( ( ( [MAX 2 ) 9 ) ] )") == ["[MAX", "2", "9", "X"]
    assert encode("( ( ( [MAX 2 ) 9 ) ] )") == [VOCAB.index(t) for t in ("[MAX", "2", "9", "X")]
    for junk in ("( [MAX 12 ] )", "( [FIRST 1 ] )", "<pad> 1"):
        with pytest.raises(ValueError, match="unknown symbol"):
            encode(junk)


# ---------------------------------------------------------------------------------------------------- loader


@pytest.fixture
def split_dir(tmp_path: Path) -> Path:
    write_splits(tmp_path, {"train": 12, "val": 6, "test": 6}, seed=7, settings=SMALL)
    return tmp_path


def assert_names_path_and_target(error: pytest.ExceptionInfo[DataNotFoundError], path: Path) -> None:
    assert str(path) in str(error.value)
    assert "make data-listops" in str(error.value)


def test_missing_file_names_path_and_target(tmp_path: Path) -> None:
    path = tmp_path / "listops" / "basic_train.tsv"
    with pytest.raises(DataNotFoundError) as error:
        load_split(path)
    assert_names_path_and_target(error, path)
    with pytest.raises(DataNotFoundError) as error:
        ListOpsDataModule(tmp_path / "listops").setup("fit")
    assert_names_path_and_target(error, path)


CORRUPTIONS = {
    "cut mid-row": lambda text: text[: text.rindex("\t") - 5],
    "bad header": lambda text: text.replace("Source\tTarget", "Source,Target", 1),
    "bad target": lambda text: text.rstrip("\n")[:-1] + "12\n",
    "unknown symbol": lambda text: text.replace("[MIN", "[FIRST", 1).replace("[MAX", "[FIRST", 1),
    "unbalanced": lambda text: text[: text.rindex("]")] + text[text.rindex("]") + 1 :],
    "header only": lambda text: text.splitlines(keepends=True)[0],
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_tsv_names_path_line_and_fix(split_dir: Path, corruption: str) -> None:
    """The user's own folder (not under data/): the advice is to fix the file, not a make target."""
    path = split_dir / "basic_val.tsv"
    path.write_text(CORRUPTIONS[corruption](path.read_text()))
    with pytest.raises(MalformedDataError) as error:
        load_split(path)
    where = re.escape(str(path))
    if corruption == "header only":
        expected = rf"ListOps split: {where}: no examples after the header\. Fix or replace basic_val\.tsv, "
    else:
        expected = rf"ListOps split: {where}:(\d+): .+\. Fix or replace line \1 of basic_val\.tsv, "
    assert re.match(
        expected + r"or point the run at a sound copy: data\.data_dir= \(or HGRN_DATA_DIR\)", str(error.value)
    )
    assert "make" not in str(error.value)


def cache_of(path: Path) -> Path:
    """The shared cache file of a split (hgrn.data.lra.cache), in `cache/` beside it by default."""
    (cache,) = (path.parent / "cache").glob(f"listops-{path.stem}-*.pt")
    return cache


def as_rows(dataset) -> list[tuple[list[int], int]]:
    return [(ex["inputs"][:-1].tolist(), ex["labels"].item()) for ex in dataset]


def test_cache_is_used(split_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = split_dir / "basic_train.tsv"
    first = [load_split(path)[i] for i in range(12)]
    assert cache_of(path).is_file()

    def unreachable(path: Path):
        raise AssertionError("the TSV was tokenised again although its cache is sound")

    monkeypatch.setattr(listops, "read_tsv", unreachable)
    again = load_split(path)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["inputs"], b["inputs"]) and a["labels"] == b["labels"]


def test_cache_dir_can_live_elsewhere(split_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("cache")
    dm = ListOpsDataModule(split_dir, cache_dir=elsewhere)
    dm.prepare_data()
    assert not (split_dir / "cache").exists()
    assert sorted(p.name.rsplit("-", 1)[0] for p in elsewhere.iterdir()) == [
        "listops-basic_test",
        "listops-basic_train",
        "listops-basic_val",
    ]


def _garbage(cache: Path) -> None:
    cache.write_bytes(b"not a cache")


def _truncated(cache: Path) -> None:
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])


def _flipped_token(cache: Path) -> None:  # still a readable file, but a token changed: the checksum catches it
    raw = bytearray(cache.read_bytes())
    tokens = bytes(encode(read_rows(cache.parent.parent / "basic_test.tsv")[0][0]))
    raw[raw.index(tokens) + 3] ^= 0x01
    cache.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [_garbage, _truncated, _flipped_token])
def test_damaged_cache_is_rebuilt(split_dir: Path, damage, monkeypatch: pytest.MonkeyPatch) -> None:
    path = split_dir / "basic_test.tsv"
    expected = [(encode(source), label) for source, label in read_rows(path)]
    load_split(path)
    damage(cache_of(path))
    assert as_rows(load_split(path)) == expected

    def unreachable(path: Path):
        raise AssertionError("the rebuilt cache was not sound")

    monkeypatch.setattr(listops, "read_tsv", unreachable)
    assert as_rows(load_split(path)) == expected  # rewritten soundly


def test_changed_tsv_invalidates_cache(split_dir: Path) -> None:
    path = split_dir / "basic_val.tsv"
    load_split(path)
    shutil.copy(split_dir / "basic_test.tsv", path)
    assert [ex["labels"].item() for ex in load_split(path)] == [label for _, label in read_rows(path)]


def test_long_sequences_are_truncated_with_one_warning(split_dir: Path) -> None:
    path = split_dir / "basic_train.tsv"
    full = load_split(path)
    with pytest.warns(UserWarning, match="truncated") as record:
        short = load_split(path, max_length=20)
    assert len(record) == 1
    for a, b in zip(full, short, strict=True):
        expected = a["inputs"] if len(a["inputs"]) <= 20 else torch.cat([a["inputs"][:19], a["inputs"][-1:]])
        assert torch.equal(b["inputs"], expected) and b["inputs"][-1] == EOS_ID


def test_datamodule_batches(split_dir: Path) -> None:
    dm = ListOpsDataModule(split_dir, batch_size=4)
    assert (dm.num_classes, dm.vocab_size) == (10, len(VOCAB)) == (10, 18)
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"inputs", "mask", "labels"}
    inputs, mask, labels = batch["inputs"], batch["mask"], batch["labels"]
    assert inputs.dtype == labels.dtype == torch.long and mask.dtype == torch.bool
    assert inputs.shape == mask.shape and inputs.shape[0] == 4 and labels.shape == (4,)
    lengths = mask.sum(1)
    assert torch.all(inputs[torch.arange(4), lengths - 1] == EOS_ID)
    assert torch.all(inputs[~mask] == 0) and torch.all(inputs[mask] > 0)

    val = [row for batch in dm.val_dataloader() for row in batch["labels"].tolist()]
    assert val == [label for _, label in read_rows(split_dir / "basic_val.tsv")]  # in file order
    dm.setup("test")
    assert len(dm.test_dataloader().dataset) == 6


@pytest.mark.slow
def test_full_lra_sized_set(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if "slow" not in request.config.getoption("markexpr"):
        pytest.skip("generates the full 96k/2k/2k set (minutes): select it with -m slow")
    stats = write_splits(tmp_path, {"train": 96_000, "val": 2_000, "test": 2_000}, seed=0, workers=2)
    sizes = [len(load_split(tmp_path / f"basic_{split}.tsv")) for split in ("train", "val", "test")]
    assert sizes == [96_000, 2_000, 2_000]
    assert min(stats.lengths) > 500 and max(stats.lengths) < 2000
    assert 0.07 < stats.acceptance_rate < 0.095
    assert all(0.15 < stats.labels[label] / 100_000 < 0.19 for label in (0, 9))
