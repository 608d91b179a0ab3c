"""Atomic writes: the new content appears whole or not at all, with a normal file's mode, and nothing is left over."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hgrn.io import atomic_write, atomic_writes


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_text_and_bytes_are_written(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "a.txt") as f:
        f.write("line\nsecond\r\n")
    with atomic_write(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\xff")
    assert (tmp_path / "a.txt").read_bytes() == b"line\nsecond\r\n"  # written exactly as given
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_an_existing_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text("old")
    with atomic_write(path) as f:
        f.write("new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_the_target_appears_only_when_the_block_completes(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    with atomic_write(path) as f:
        f.write("half")
        f.flush()
        assert not path.exists()
        (temporary,) = tmp_path.iterdir()
        assert temporary.name.startswith(".a.txt.") and temporary.name.endswith(".tmp")
    assert path.read_text() == "half"


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_an_exception_leaves_the_old_file_and_nothing_else(tmp_path: Path, error: type[BaseException]) -> None:
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(error), atomic_write(path) as f:
        f.write("new, half written")
        raise error
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_an_exception_before_the_first_write_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "a.txt"):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("umask_022")
@pytest.mark.parametrize("mode", ["w", "wb"])
def test_mode_is_0644_under_umask_022(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "results.json"
    with atomic_write(path, mode) as f:
        f.write("{}" if mode == "w" else b"{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_missing_directory_fails_as_open_would(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "absent" / "a.txt") as f:
        f.write("x")


def test_several_files_appear_together(tmp_path: Path) -> None:
    paths = [tmp_path / f"{name}.tsv" for name in ("train", "val", "test")]
    with atomic_writes(paths) as files:
        for f, path in zip(files, paths, strict=True):
            f.write(path.stem)
        assert not any(path.exists() for path in paths)  # the first is complete, but waits for the others
    assert [path.read_text() for path in paths] == ["train", "val", "test"]


def test_an_interrupted_set_leaves_the_previous_set(tmp_path: Path) -> None:
    paths = [tmp_path / f"{name}.tsv" for name in ("train", "val", "test")]
    for path in paths:
        path.write_text(f"old {path.stem}")
    with pytest.raises(KeyboardInterrupt), atomic_writes(paths) as files:
        files[0].write("new train")
        files[1].write("new val, half")
        raise KeyboardInterrupt
    assert [path.read_text() for path in paths] == ["old train", "old val", "old test"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.tsv", "train.tsv", "val.tsv"]
