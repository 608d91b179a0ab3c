"""The token cache: built once, rebuilt when the tokenizer, the format or the source text changes, damaged files
detected by their size (rebuilt from the source, or reported in one line without it), and written all or nothing."""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from hgrn.data.errors import DataNotFoundError
from hgrn.data.lm import cache, datamodule
from hgrn.data.lm.cache import ensure_split
from hgrn.data.lm.datamodule import LMDataModule
from hgrn.data.lm.sources import SplitSource
from hgrn.data.lm.token_file import SplitFiles, read_meta
from hgrn.data.lm.tokenizer import GPT2Tokenizer, gpt2_tokenizer
from hgrn.data.lm.wikitext import find_wikitext
from tests.fixtures.lm.make_fixtures import WIKI_LINES

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lm"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A private copy of the raw WikiText fixture, free to change."""
    return shutil.copytree(FIXTURES / "wikitext103" / "raw", tmp_path / "wikitext103")


def prepared(data_dir: Path, **kwargs) -> LMDataModule:
    module = LMDataModule("wikitext103", data_dir, 8, 2, **kwargs)
    module.prepare_data()
    module.setup()
    return module


def forbid_tokenising(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "write_split", lambda *args, **kwargs: pytest.fail("tokenised again"))


def renamed_tokenizer(name: str) -> GPT2Tokenizer:
    tokenizer = copy.copy(gpt2_tokenizer())
    tokenizer.name = name
    return tokenizer


def test_an_unchanged_source_is_tokenised_once(corpus, monkeypatch):
    first = prepared(corpus)
    forbid_tokenising(monkeypatch)
    second = prepared(corpus)
    assert second.tokens("train").tolist() == first.tokens("train").tolist()


def test_a_changed_tokenizer_retokenises(corpus, monkeypatch):
    prepared(corpus)
    monkeypatch.setattr(datamodule, "gpt2_tokenizer", lambda: renamed_tokenizer("gpt2-other"))
    prepared(corpus)
    assert read_meta(SplitFiles.at(corpus / "cache", "valid")).tokenizer == "gpt2-other"
    monkeypatch.undo()
    shutil.rmtree(corpus / "cache")
    LMDataModule("wikitext103", corpus, 8, 2).prepare_data()
    files = SplitFiles.at(corpus / "cache", "test")
    meta = ensure_split(files, find_wikitext(corpus)["test"], renamed_tokenizer("gpt2-third"))
    assert meta.tokenizer == "gpt2-third"  # the cache layer on its own keys by the name too


def test_changed_source_text_retokenises_and_a_touched_copy_does_not(corpus, monkeypatch):
    prepared(corpus)
    raw = corpus / "wiki.valid.raw"
    stat = raw.stat()
    raw.write_text(raw.read_text().replace("lobster", "LOBSTER"))  # the same size
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = prepared(corpus)
    assert "LOBSTER" in gpt2_tokenizer().decode(changed.tokens("valid").tolist())

    forbid_tokenising(monkeypatch)
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))  # touched: new stat, same bytes
    prepared(corpus)
    assert read_meta(SplitFiles.at(corpus / "cache", "valid")).source_stat[0][2] == stat.st_mtime_ns + 2 * 10**9


def test_another_format_version_retokenises(corpus):
    prepared(corpus)
    meta_file = corpus / "cache" / "train.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "format_version": 0}))
    prepared(corpus)
    assert json.loads(meta_file.read_text())["format_version"] == meta["format_version"]


def test_a_truncated_cache_file_is_rebuilt_from_the_source(corpus):
    first = prepared(corpus).tokens("train").tolist()
    tokens = corpus / "cache" / "train.bin"
    tokens.write_bytes(tokens.read_bytes()[:-2])
    assert prepared(corpus).tokens("train").tolist() == first


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("train.bin", r"train\.bin has \d+ bytes, the meta says \d+ bytes"),
        ("train.idx", r"train\.idx has \d+ bytes, the meta says \d+ bytes"),
        ("train.json", r"no readable train\.json"),
    ],
)
def test_without_the_source_a_damaged_cache_is_one_line(corpus, tmp_path, damage, problem):
    prepared(corpus)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(corpus / "cache", elsewhere / "cache")
    path = elsewhere / "cache" / damage
    path.write_bytes(path.read_bytes()[:-4])
    module = LMDataModule("wikitext103", elsewhere, 8, 2)
    with pytest.raises(DataNotFoundError, match=rf"train token cache .*{problem}.* no copy of WikiText-103") as error:
        module.prepare_data()
    assert "\n" not in str(error.value) and "make data-wikitext" in str(error.value)
    with pytest.raises(DataNotFoundError, match=rf"{problem}.*prepare_data\(\) builds it"):
        module.setup()


def test_a_sound_cache_serves_without_its_source(corpus, tmp_path, monkeypatch):
    reference = prepared(corpus)
    shutil.copytree(corpus / "cache", tmp_path / "run" / "cache")
    forbid_tokenising(monkeypatch)
    module = prepared(tmp_path / "run")
    assert module.tokens("test").tolist() == reference.tokens("test").tolist()


def test_an_interrupted_build_leaves_the_previous_cache(corpus):
    prepared(corpus)
    before = {path.name: path.read_bytes() for path in (corpus / "cache").iterdir()}
    source = find_wikitext(corpus)["train"]

    def fails_midway(tokenizer):
        batches = source.read(tokenizer)
        yield next(batches)
        raise KeyboardInterrupt

    broken = SplitSource(source.description, source.files, fails_midway)
    with pytest.raises(KeyboardInterrupt):
        ensure_split(SplitFiles.at(corpus / "cache", "train"), broken, renamed_tokenizer("gpt2-new"))
    assert {path.name: path.read_bytes() for path in (corpus / "cache").iterdir()} == before  # no temporaries left


def test_index_holds_the_line_boundaries(corpus):
    module = prepared(corpus)
    index = np.fromfile(corpus / "cache" / "valid.idx", dtype="<i8")
    stream = module.tokens("valid")
    lines = [gpt2_tokenizer().decode(stream[a:b].tolist()) for a, b in itertools.pairwise(index)]
    assert lines == [f"{line.strip()}<|endoftext|>" for line in WIKI_LINES["valid"]]


@pytest.mark.parametrize(("name", "target"), [("wikitext103", "data-wikitext"), ("pile", "data-pile")])
def test_missing_data_names_the_make_target(tmp_path, name, target):
    module = LMDataModule(name, tmp_path / "absent", 512, 8)
    with pytest.raises(DataNotFoundError, match=rf"no readable train\.json.*`make {target}`"):
        module.prepare_data()
