"""LRA Retrieval (AAN pairs, byte level, two towers) on the release-format TSV fixture."""

import shutil
from pathlib import Path

import pytest
import torch

from hgrn.data.errors import DataNotFoundError
from hgrn.data.lra.retrieval import AANDataModule, parse_label
from hgrn.data.lra.tokens import BYTE_OFFSET, BYTE_VOCAB_SIZE, EOS_ID
from tests.fixtures.lra.make_fixtures import AAN_ROWS

AAN = Path(__file__).parents[1] / "fixtures" / "lra" / "retrieval" / "aan"


def expected_ids(document: str, max_length: int) -> list[int]:
    return [b + BYTE_OFFSET for b in document.encode()[: max_length - 1]] + [EOS_ID]


@pytest.fixture
def aan(tmp_path: Path) -> AANDataModule:
    module = AANDataModule(AAN, batch_size=3, max_length=48, cache_dir=tmp_path / "cache")
    module.setup()
    return module


def test_rows_become_two_byte_documents_and_a_label(aan: AANDataModule) -> None:
    for split, source in (("train", "train"), ("val", "eval"), ("test", "test")):
        dataset = aan.splits[split]
        assert len(dataset) == len(AAN_ROWS[source])
        for i, (label, _, _, text1, text2) in enumerate(AAN_ROWS[source]):
            example = dataset[i]
            assert example["inputs"].tolist() == expected_ids(text1, 48)
            assert example["inputs2"].tolist() == expected_ids(text2, 48)
            assert example["labels"].item() == int(label)
    quoted = aan.splits["train"][0]["inputs"]
    assert ord('"') + BYTE_OFFSET in quoted.tolist()  # no quote handling: quotes are text
    assert len(aan.splits["train"][1]["inputs"]) == 48  # the long document was cut to max_length


def test_two_tower_batches(aan: AANDataModule) -> None:
    assert (aan.vocab_size, aan.input_dim, aan.num_classes, aan.max_length) == (BYTE_VOCAB_SIZE, None, 2, 48)
    batch = next(iter(aan.test_dataloader()))
    assert set(batch) == {"inputs", "mask", "inputs2", "mask2", "labels"}
    rows = AAN_ROWS["test"]
    assert batch["mask"].sum(1).tolist() == [len(expected_ids(r[3], 48)) for r in rows]
    assert batch["mask2"].sum(1).tolist() == [len(expected_ids(r[4], 48)) for r in rows]
    assert batch["inputs"].shape[1] != batch["inputs2"].shape[1]  # each tower padded on its own
    assert batch["labels"].tolist() == [int(r[0]) for r in rows] and batch["labels"].dtype == torch.long


def test_labels_parse_as_lra_floats() -> None:
    assert [parse_label(v) for v in (b"0", b"1", b"1.0", b"0.0")] == [0, 1, 1, 0]
    assert [parse_label(v) for v in (b"2", b"yes", b"")] == [None, None, None]


def test_truncated_row_names_file_line_and_fix(tmp_path: Path) -> None:
    copy = tmp_path / "aan"
    shutil.copytree(AAN, copy)
    train = copy / "new_aan_pairs.train.tsv"
    train.write_bytes(train.read_bytes().rstrip(b"\n").rsplit(b"\t", 2)[0])  # cut inside the last row
    expected = r"new_aan_pairs\.train\.tsv:4: 3 of 5 tab-separated fields .*Fix or replace line 4 of new_aan_pairs"
    with pytest.raises(DataNotFoundError, match=expected) as error:
        AANDataModule(copy, cache_dir=tmp_path / "cache").setup()
    assert str(copy) in str(error.value) and "data.data_dir=" in str(error.value)


def test_missing_file_names_it(tmp_path: Path) -> None:
    copy = tmp_path / "aan"
    shutil.copytree(AAN, copy)
    (copy / "new_aan_pairs.eval.tsv").unlink()
    with pytest.raises(DataNotFoundError, match=r"no new_aan_pairs\.eval\.tsv") as error:
        AANDataModule(copy, cache_dir=tmp_path / "cache").setup()
    assert str(copy) in str(error.value) and "make data-lra" in str(error.value)


def test_bad_label_is_reported(tmp_path: Path) -> None:
    copy = tmp_path / "aan"
    shutil.copytree(AAN, copy)
    (copy / "new_aan_pairs.test.tsv").write_text("7\ta\tb\tone\ttwo\n")
    with pytest.raises(DataNotFoundError, match=r"new_aan_pairs\.test\.tsv:1: label '7' is not 0 or 1"):
        AANDataModule(copy, cache_dir=tmp_path / "cache").setup()
