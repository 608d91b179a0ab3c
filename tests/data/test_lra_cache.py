"""Decode-once caches: reused when sound, rebuilt when sources, parameters or the file itself changed."""

import os
from pathlib import Path

import pytest
import torch

from hgrn.data.lra import cache
from hgrn.data.lra.cache import load_or_build


class Builder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {"data": torch.arange(1000, dtype=torch.int16), "labels": torch.tensor([0, 1, 1])}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.tsv"
    path.write_text("1\ta\tb\n")
    return path


def build_twice(tmp_path: Path, source: Path, between=lambda: None) -> Builder:
    build = Builder()
    first = load_or_build(tmp_path / "cache", "task", [source], {"max_length": 8}, build)
    between()
    second = load_or_build(tmp_path / "cache", "task", [source], {"max_length": 8}, build)
    assert all(torch.equal(first[name], second[name]) for name in first)
    return build


def cache_file(tmp_path: Path) -> Path:
    (path,) = (tmp_path / "cache").glob("task-*.pt")
    return path


def test_second_call_reads_the_cache(tmp_path: Path, source: Path) -> None:
    assert build_twice(tmp_path, source).calls == 1


def test_changed_source_or_parameters_select_a_new_cache(tmp_path: Path, source: Path) -> None:
    build = Builder()
    load_or_build(tmp_path, "task", [source], {"max_length": 8}, build)
    load_or_build(tmp_path, "task", [source], {"max_length": 9}, build)
    source.write_text("1\ta\tb\n0\tc\td\n")
    load_or_build(tmp_path, "task", [source], {"max_length": 8}, build)
    assert build.calls == 3


@pytest.mark.parametrize("damage", ["truncate", "flip-a-data-byte", "garbage"])
def test_damaged_cache_is_rebuilt(tmp_path: Path, source: Path, damage: str) -> None:
    def corrupt() -> None:
        path = cache_file(tmp_path)
        raw = bytearray(path.read_bytes())
        if damage == "truncate":
            raw = raw[: len(raw) // 2]
        elif damage == "flip-a-data-byte":
            raw[raw.find(torch.arange(1000, dtype=torch.int16).numpy().tobytes()) + 501] ^= 0xFF
        else:
            raw = bytearray(b"not a cache")
        path.write_bytes(bytes(raw))

    assert build_twice(tmp_path, source, between=corrupt).calls == 2
    again = Builder()
    load_or_build(tmp_path / "cache", "task", [source], {"max_length": 8}, again)
    assert again.calls == 0  # the rebuilt file is sound


def test_a_killed_write_leaves_only_an_untrusted_temp_file(tmp_path: Path, source: Path) -> None:
    key = cache.cache_key([source], {"max_length": 8})
    (tmp_path / "cache").mkdir()
    left_over = tmp_path / "cache" / f".task-{key}.pt.abc123.tmp"  # what a write killed before its rename leaves
    torch.save({"key": key, "tensors": {"data": torch.zeros(3)}, "crc32": {"data": 0}}, left_over)
    build = Builder()
    tensors = load_or_build(tmp_path / "cache", "task", [source], {"max_length": 8}, build)
    assert build.calls == 1 and torch.equal(tensors["data"], Builder()()["data"])
    assert cache_file(tmp_path).name == f"task-{key}.pt"


def test_an_interrupted_write_leaves_no_cache_file(tmp_path: Path, source: Path, monkeypatch) -> None:
    def save_half_then_die(payload, f) -> None:
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(cache.torch, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        load_or_build(tmp_path / "cache", "task", [source], {"max_length": 8}, Builder())
    assert os.listdir(tmp_path / "cache") == []
