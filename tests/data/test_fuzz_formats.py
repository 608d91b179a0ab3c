"""A seeded fuzz over damaged copies of every LRA release-format fixture: a reader either reads the damaged data (the
damage was harmless, e.g. a flipped byte inside a document) or raises DataNotFoundError / MalformedDataError on one
line naming the damaged file or its folder. Any other exception reaches the user as a traceback from deep inside
PIL, pickle or pyarrow, which does not say which of thousands of files to replace, so it fails the test.

Each case copies a fixture tree, damages one file of it (truncation, flipped or inserted bytes, non-UTF-8 bytes and
non-ASCII digits such as '²' and '٣', a deleted or duplicated line, an emptied or deleted file), then does what a run
does: builds the datamodule as the experiments do, prepare_data(), setup() and one batch from each loader. The count
of cases and outcomes per format is printed so CI logs show what the fuzz covered.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hgrn.data.errors import DataNotFoundError
from hgrn.data.lra.datamodule import LRADataModule
from hgrn.data.lra.image import CIFAR10DataModule
from hgrn.data.lra.listops import ListOpsDataModule
from hgrn.data.lra.pathfinder import PathfinderDataModule, PathXDataModule
from hgrn.data.lra.retrieval import AANDataModule
from hgrn.data.lra.text import IMDbDataModule

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lra"
CASES = 40  # per format: a few seconds on two cores, and every mutation kind drawn several times
SEED = 0
MAX_MESSAGE = 1000  # characters: two paths and a problem; a longer message quotes the data (a repr of its bytes)

# Inserted bytes: what a bad copy, a wrong encoding or an editor leaves behind. '²' and '٣' pass str.isdigit() and
# int() reads '٣' as 3, so a reader that trusts them would take them as labels.
INSERTS = (b"\xff", b"\xc3\x28", b"\x00", "²".encode(), "٣".encode(), "３".encode(), b"\t", b"\n", b"\r", b" ")


@dataclass(frozen=True)
class Format:
    """A fixture tree and how the experiments build its datamodule from (data_dir, cache_dir)."""

    name: str
    fixture: Path
    build: Callable[[Path, Path], LRADataModule]


FORMATS = (
    Format("listops", FIXTURES / "listops", lambda d, c: ListOpsDataModule(d, batch_size=2, cache_dir=c)),
    Format("aan", FIXTURES / "retrieval" / "aan", lambda d, c: AANDataModule(d, batch_size=2, cache_dir=c)),
    Format("imdb", FIXTURES / "text" / "imdb", lambda d, c: IMDbDataModule(d, batch_size=2, cache_dir=c)),
    Format("cifar10", FIXTURES / "image" / "cifar10", lambda d, c: CIFAR10DataModule(d, batch_size=2)),  # no cache
    Format(
        "pathfinder",
        FIXTURES / "pathfinder" / "pathfinder32",
        lambda d, c: PathfinderDataModule(d, batch_size=2, resolution=32, cache_dir=c),
    ),
    Format(
        "pathx",
        FIXTURES / "pathx" / "pathfinder128",
        lambda d, c: PathXDataModule(d, batch_size=2, resolution=128, cache_dir=c),
    ),
)


# ------------------------------------------------------------------------------------------------------ mutations


def truncate(data: bytes, rng: random.Random) -> bytes | None:
    """A download or copy cut short: the file ends at a random byte."""
    return data[: rng.randrange(len(data))] if data else data


def flip(data: bytes, rng: random.Random) -> bytes | None:
    """Bit rot or a bad transfer: one to three bytes changed."""
    damaged = bytearray(data)
    for _ in range(rng.randint(1, 3) if data else 0):
        damaged[rng.randrange(len(damaged))] ^= rng.randrange(1, 256)
    return bytes(damaged)


def insert(data: bytes, rng: random.Random) -> bytes | None:
    """Stray bytes: random ones or one of INSERTS (non-UTF-8, NUL, non-ASCII digits, separators)."""
    extra = rng.choice(INSERTS) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 8))
    at = rng.randint(0, len(data))
    return data[:at] + extra + data[at:]


def delete_line(data: bytes, rng: random.Random) -> bytes | None:
    """An edit or merge that lost a line (a binary file's "lines" split at its newline bytes)."""
    lines = data.splitlines(keepends=True)
    if lines:
        del lines[rng.randrange(len(lines))]
    return b"".join(lines)


def duplicate_line(data: bytes, rng: random.Random) -> bytes | None:
    """An edit or merge that repeated a line."""
    lines = data.splitlines(keepends=True)
    if lines:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])
    return b"".join(lines)


def empty(data: bytes, rng: random.Random) -> bytes | None:
    """A file created but never written (a full disk, a killed download)."""
    return b""


def delete(data: bytes, rng: random.Random) -> bytes | None:
    """A file missing from the tree: None deletes it."""
    return None


MUTATIONS: tuple[Callable[[bytes, random.Random], bytes | None], ...] = (
    truncate,
    flip,
    insert,
    delete_line,
    duplicate_line,
    empty,
    delete,
)


def damage(root: Path, rng: random.Random) -> tuple[Path, str]:
    """Damage one file under root with a random mutation; the file and the mutation's name."""
    files = sorted(path for path in root.rglob("*") if path.is_file())
    path = rng.choice(files)
    mutation = rng.choice(MUTATIONS)
    damaged = mutation(path.read_bytes(), rng)
    if damaged is None:
        path.unlink()
    else:
        path.write_bytes(damaged)
    return path, mutation.__name__


# ------------------------------------------------------------------------------------------------------ the fuzz


def read_everything(module: LRADataModule) -> None:
    """What a run does with its data: prepare (builds the caches), set up, and a batch from each loader. A split the
    damage left empty (a fixture has a handful of examples) has no batch to pull, which is not an error of reading."""
    module.prepare_data()
    module.setup()
    for loader in (module.train_dataloader(), module.val_dataloader(), module.test_dataloader()):
        next(iter(loader), None)


def names_damage(error: DataNotFoundError, damaged: Path, root: Path) -> bool:
    """Whether the error sends the user to the damaged file: its message names that file (a missing PNG's error names
    the metadata line that lists it, which may be the damaged part), or the path it reports is a folder holding it: a
    reader that finds a file missing names the folder it looked in, and `datasets` reads IMDb's save_to_disk tree as a
    whole, so an Arrow header it cannot parse is reported on the folder."""
    named = error.path
    if str(damaged) in str(error):
        return True
    return str(named) in str(error) and named in damaged.parents and named.is_relative_to(root)


@pytest.mark.parametrize("fmt", FORMATS, ids=[fmt.name for fmt in FORMATS])
def test_damaged_data_reads_or_raises_a_data_error(
    fmt: Format, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every case is collected before failing, so one run lists all the readers' bugs, not just the first."""
    rng = random.Random(SEED)
    outcomes: Counter[str] = Counter()
    bugs: list[str] = []
    for case in range(CASES):
        root = shutil.copytree(fmt.fixture, tmp_path / f"case{case}" / "data")
        damaged, mutation = damage(root, rng)
        what = f"case {case}: {mutation} {damaged.relative_to(root)}"
        try:
            read_everything(fmt.build(root, tmp_path / f"case{case}" / "cache"))
        except DataNotFoundError as error:
            message = str(error)
            if "\n" in message or len(message) > MAX_MESSAGE or not names_damage(error, damaged, root):
                bugs.append(f"{what}: not one short line naming the damaged file or folder: {message[:MAX_MESSAGE]}")
            outcomes[f"{type(error).__name__}"] += 1
        except Exception as error:  # the bug this test looks for: anything that is not a data error
            bugs.append(f"{what}: {type(error).__name__}: {error}")
            outcomes[f"bug {type(error).__name__}"] += 1
        else:
            outcomes["read"] += 1
    with capsys.disabled():
        print(f"\ndata fuzz: {fmt.name} {CASES} cases {dict(sorted(outcomes.items()))}")
    assert not bugs, "\n".join(bugs)


# ------------------------------------------------------------------------------------------- what the fuzz found
# Each damage below reached the user as a traceback, or named the wrong file, before the reader was fixed; they are
# kept as fixed cases because a seeded fuzz of a few dozen cases need not draw them again after a change.


def damaged_copy(fmt_name: str, tmp_path: Path) -> tuple[Path, Format]:
    fmt = next(fmt for fmt in FORMATS if fmt.name == fmt_name)
    return shutil.copytree(fmt.fixture, tmp_path / "data"), fmt


def data_error(fmt: Format, root: Path, tmp_path: Path) -> DataNotFoundError:
    with pytest.raises(DataNotFoundError) as error:
        read_everything(fmt.build(root, tmp_path / "cache"))
    assert "\n" not in str(error.value) and len(str(error.value)) <= MAX_MESSAGE
    return error.value


@pytest.mark.parametrize(
    ("pickled", "exception"),
    [
        (b"cbuiltins\nno_such_name\n.", "AttributeError"),  # protocol 0: look up builtins.no_such_name
        (b"\x80\x02X\x00\x10\x00\x00" + b"\xff" * 4096 + b".", "UnicodeDecodeError"),  # 4 KiB of non-UTF-8 str
    ],
    ids=["attribute-error", "long-unicode-error"],
)
def test_a_pickle_that_fails_with_any_exception_names_its_batch(tmp_path: Path, pickled: bytes, exception: str) -> None:
    """Damaged pickle opcodes raise whatever the damaged bytes call (AttributeError, TypeError, LookupError, ...);
    and a UnicodeDecodeError's repr quotes the whole string, megabytes in a real batch, so the message quotes less."""
    root, fmt = damaged_copy("cifar10", tmp_path)
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickled)
    error = data_error(fmt, root, tmp_path)
    assert error.path == batch and exception in str(error)


def test_invalid_utf8_inside_an_arrow_document_names_the_arrow_file(tmp_path: Path) -> None:
    """The Arrow header is sound, so `datasets` opens the file; the text fails only when it is converted."""
    root, fmt = damaged_copy("imdb", tmp_path)
    arrow = root / "train" / "data-00000-of-00001.arrow"
    data = arrow.read_bytes()
    at = data.index(b"Dull, slow")
    arrow.write_bytes(data[:at] + b"\xff" + data[at + 1 :])
    error = data_error(fmt, root, tmp_path)
    assert error.path == arrow and "Invalid UTF8" in str(error)


def test_a_wrong_type_in_imdb_metadata_is_a_data_error(tmp_path: Path) -> None:
    """Valid JSON of the wrong shape: `datasets` raises TypeError building the features."""
    root, fmt = damaged_copy("imdb", tmp_path)
    info = root / "test" / "dataset_info.json"
    info.write_text(info.read_text().replace('"dtype": "string",', ""))
    assert data_error(fmt, root, tmp_path).path == root


def test_unparsable_imdb_json_is_named(tmp_path: Path) -> None:
    """The JSON parser's "line 13 column 1" does not say which of the five JSON files it means."""
    root, fmt = damaged_copy("imdb", tmp_path)
    state = root / "train" / "state.json"
    state.write_bytes(state.read_bytes()[:-5])
    assert data_error(fmt, root, tmp_path).path == state


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [("sample_1.png", "sample_1.pnf", "listed at {file}:2"), ("imgs/0 sample_1", "imgs/0 sam\0ple_1", "{file}:2: NUL")],
    ids=["damaged-image-name", "nul-byte"],
)
def test_a_damaged_metadata_line_is_named(tmp_path: Path, old: str, new: str, expected: str) -> None:
    """A damaged image name in the metadata, or a NUL in it ("embedded null byte"), made the error name a PNG that
    never existed and not the line that lists it."""
    root, fmt = damaged_copy("pathfinder", tmp_path)
    metadata = root / "curv_contour_length_14" / "metadata" / "0.npy"
    metadata.write_text(metadata.read_text().replace(old, new))
    assert expected.format(file=metadata) in str(data_error(fmt, root, tmp_path))
