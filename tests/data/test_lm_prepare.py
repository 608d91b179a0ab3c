"""`python -m hgrn.data.lm.prepare`: fetch (the hub stood in for by the fixture), tokenise, print the counts; the cache
it leaves is all a run needs."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from hgrn.data.lm.datamodule import LMDataModule
from hgrn.data.lm.prepare import HUB_DATASET, main

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lm"
WIKITEXT = FIXTURES / "wikitext103"


def tokens(data_dir: Path, split: str = "train", cache_dir: Path | None = None) -> list[int]:
    module = LMDataModule("wikitext103", data_dir, 8, 2, cache_dir=cache_dir)
    module.prepare_data()
    return module.tokens(split).tolist()


def test_a_source_kept_elsewhere_is_tokenised_into_root(tmp_path, capsys):
    assert main(["wikitext103", "--root", str(tmp_path / "wt"), "--source", str(WIKITEXT / "raw")]) == 0
    printed = capsys.readouterr().out
    train = tokens(tmp_path / "wt")  # the cache alone: root holds no copy of the text
    assert f"wikitext103 train: {len(train):,} tokens in 13 lines/documents (wikitext103 (raw files))" in printed
    assert sorted(p.name for p in (tmp_path / "wt").iterdir()) == ["cache"]
    assert train == tokens(WIKITEXT / "raw", cache_dir=tmp_path / "fixture-cache")  # the fixture stays as committed


def test_wikitext_is_fetched_from_the_hub_once(tmp_path, monkeypatch):
    calls = []

    def hub(*args):
        calls.append(args)
        return datasets.load_from_disk(str(WIKITEXT / "save_to_disk"))

    monkeypatch.setattr(datasets, "load_dataset", hub)
    root = tmp_path / "wt"
    assert main(["wikitext103", "--root", str(root)]) == 0
    assert calls == [HUB_DATASET]
    assert {"dataset_dict.json", "train", "validation", "test", "cache"} == {p.name for p in root.iterdir()}
    assert main(["wikitext103", "--root", str(root)]) == 0 and len(calls) == 1  # the copy in root is used
    assert tokens(root, "test") == tokens(WIKITEXT / "raw", "test", tmp_path / "fixture-cache")


def test_offline_fetch_says_what_to_do(tmp_path, monkeypatch, capsys):
    def offline(*args):
        raise ConnectionError("Couldn't reach 'Salesforce/wikitext' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    assert main(["wikitext103", "--root", str(tmp_path / "wt")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "HF_HUB_OFFLINE=0" in error and "--source" in error
    assert not (tmp_path / "wt").exists()


def test_pile_needs_its_shards(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["pile", "--root", str(tmp_path / "pile")])
    assert exit_code.value.code == 2
    assert "make data-pile" in capsys.readouterr().err
    assert main(["pile", "--root", str(tmp_path / "pile"), "--source", str(FIXTURES / "pile")]) == 0
    assert "pile valid: " in capsys.readouterr().out


def test_ptb_takes_no_source(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["ptb", "--root", str(tmp_path), "--source", str(tmp_path)])
    assert "--source does not apply" in capsys.readouterr().err
