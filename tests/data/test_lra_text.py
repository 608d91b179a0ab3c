"""LRA Text (IMDb, byte level) on the save_to_disk fixture."""

import shutil
from pathlib import Path

import pytest
import torch

from hgrn.data.errors import DataNotFoundError
from hgrn.data.lra import text
from hgrn.data.lra.text import IMDbDataModule
from hgrn.data.lra.tokens import BYTE_OFFSET, BYTE_VOCAB_SIZE, EOS_ID
from tests.fixtures.lra.make_fixtures import REVIEWS

IMDB = Path(__file__).parents[1] / "fixtures" / "lra" / "text" / "imdb"


def expected_ids(review: str, max_length: int) -> list[int]:
    return [b + BYTE_OFFSET for b in review.encode("utf-8")[: max_length - 1]] + [EOS_ID]


@pytest.fixture
def imdb(tmp_path: Path) -> IMDbDataModule:
    module = IMDbDataModule(IMDB, batch_size=4, max_length=64, cache_dir=tmp_path / "cache")
    module.setup()
    return module


def test_examples_are_utf8_bytes_then_eos_cut_to_max_length(imdb: IMDbDataModule) -> None:
    for split, source in (("train", "train"), ("val", "test"), ("test", "test")):
        dataset = imdb.splits[split]
        assert len(dataset) == len(REVIEWS[source])
        for i, (review, label) in enumerate(REVIEWS[source]):
            assert dataset[i]["inputs"].tolist() == expected_ids(review, 64)
            assert dataset[i]["labels"].item() == label
    lengths = [len(imdb.splits["train"][i]["inputs"]) for i in range(len(REVIEWS["train"]))]
    assert max(lengths) == 64  # the long review was cut, with <eos> as its 64th token
    assert imdb.splits["train"][2]["inputs"][:5].tolist() == [b + BYTE_OFFSET for b in "Café".encode()]


def test_interface_and_batches(imdb: IMDbDataModule) -> None:
    assert (imdb.vocab_size, imdb.input_dim, imdb.num_classes, imdb.max_length) == (BYTE_VOCAB_SIZE, None, 2, 64)
    assert imdb.splits["val"] is imdb.splits["test"]  # LRA: the test split doubles as validation
    batch = next(iter(imdb.val_dataloader()))
    assert batch["inputs"].dtype == torch.long and batch["inputs"].shape[0] == 4
    assert batch["mask"].sum(1).tolist() == [len(expected_ids(r, 64)) for r, _ in REVIEWS["test"]]
    assert (batch["inputs"][~batch["mask"]] == 0).all()
    assert int(batch["inputs"].max()) < BYTE_VOCAB_SIZE


def test_second_setup_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    IMDbDataModule(IMDB, max_length=64, cache_dir=tmp_path).setup()
    monkeypatch.setattr(text, "encode_split", lambda *args: pytest.fail("re-encoded despite a cache"))
    module = IMDbDataModule(IMDB, max_length=64, cache_dir=tmp_path)
    module.setup()
    assert module.splits["train"][0]["inputs"].tolist() == expected_ids(REVIEWS["train"][0][0], 64)


def test_missing_data_names_directory_and_make_target(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="make data-lra") as error:
        IMDbDataModule(tmp_path / "imdb", cache_dir=tmp_path).setup()
    assert str(tmp_path / "imdb") in str(error.value)


def test_truncated_arrow_file_raises_data_not_found(tmp_path: Path) -> None:
    copy = tmp_path / "imdb"
    shutil.copytree(IMDB, copy)
    arrow = next((copy / "train").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.raises(DataNotFoundError, match=r": unreadable \(.*Fix or replace imdb, or point the run") as error:
        IMDbDataModule(copy, cache_dir=tmp_path / "cache").setup()
    assert str(copy) in str(error.value)
