"""Data errors name the file, the line and the right next step for that data source: a make target for the project's
data/ folder, a fix to the file (and data.data_dir= / HGRN_DATA_DIR) for a user's own folder. Text readers take a
trailing blank line, report a non-UTF-8 byte by line, and take labels only as ASCII digits ('²' and '٣' pass
str.isdigit(), and int() reads '٣' as 3)."""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate

from hgrn.config import compose, exit_on_user_error
from hgrn.data import errors
from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.lra.image import CIFAR10DataModule
from hgrn.data.lra.listops import load_split, read_tsv
from hgrn.data.lra.pathfinder import read_metadata
from hgrn.data.lra.retrieval import AANDataModule
from hgrn.data.lra.text import IMDbDataModule

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lra"
ROW = "( [MAX 2 ( [MIN 4 7 ] ) 0 ] )\t4"
HEADER = "Source\tTarget"
FIX_IT = r"or point the run at a sound copy: data\.data_dir= \(or HGRN_DATA_DIR\) chooses the folder a run reads\."


def tsv(folder: Path, body: bytes, name: str = "basic_train.tsv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(f"{HEADER}\n{ROW}\n".encode() + body)
    return path


def message_of(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text, "data errors are one line"
    return text


# ---------------------------------------------------------------------------------------------------- ListOps


def test_a_non_utf8_byte_names_file_and_line(tmp_path: Path) -> None:
    path = tsv(tmp_path, b"( [MAX 2 \xff ] )\t3\n")
    with pytest.raises(MalformedDataError) as error:
        read_tsv(path)
    assert re.fullmatch(
        rf"ListOps split: {re.escape(str(path))}:3: byte 0xff at position 10 is not UTF-8 \(save the file as UTF-8\)\. "
        rf"Fix or replace line 3 of basic_train\.tsv, {FIX_IT}",
        message_of(error),
    )


@pytest.mark.parametrize("ending", [b"\n", b"\n\n\n", b"\r\n", b"\n  \n"])
def test_trailing_blank_lines_are_accepted(tmp_path: Path, ending: bytes) -> None:
    path = tsv(tmp_path, ROW.encode() + ending)
    assert read_tsv(path)["labels"].tolist() == [4, 4]


def test_a_blank_line_with_rows_after_it_is_reported(tmp_path: Path) -> None:
    path = tsv(tmp_path, b"\n" + ROW.encode() + b"\n")
    with pytest.raises(MalformedDataError) as error:
        read_tsv(path)
    assert re.fullmatch(
        rf"ListOps split: {re.escape(str(path))}:3: blank line with rows after it; delete it\. "
        rf"Fix or replace line 3 of basic_train\.tsv, {FIX_IT}",
        message_of(error),
    )


@pytest.mark.parametrize("label", ["²", "٣", "３", "12", "3 ", ""])
def test_a_label_must_be_one_ascii_digit(tmp_path: Path, label: str) -> None:
    path = tsv(tmp_path, f"( [MAX 2 3 ] )\t{label}\n".encode())
    with pytest.raises(MalformedDataError) as error:
        read_tsv(path)
    assert re.fullmatch(
        rf"ListOps split: {re.escape(str(path))}:3: target {re.escape(repr(label))} is not a label 0-9 "
        rf"\(one ASCII digit\)\. Fix or replace line 3 of basic_train\.tsv, {FIX_IT}",
        message_of(error),
    )


# ---------------------------------------------------------------------------------------------------- Retrieval


def aan_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "aan"
    shutil.copytree(FIXTURES / "retrieval" / "aan", copy)
    return copy


def test_aan_takes_trailing_blank_lines(tmp_path: Path) -> None:
    copy = aan_copy(tmp_path)
    expected = AANDataModule(copy, cache_dir=tmp_path / "before")
    expected.setup()
    train = copy / "new_aan_pairs.train.tsv"
    train.write_bytes(train.read_bytes() + b"\n\r\n")
    module = AANDataModule(copy, cache_dir=tmp_path / "after")
    module.setup()
    assert len(module.splits["train"]) == len(expected.splits["train"])


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("٣\ta\tb\tone\ttwo\n", 1, r"label '٣' is not 0 or 1"),
        ("²\ta\tb\tone\ttwo\n", 1, r"label '²' is not 0 or 1"),
        ("1\ta\tb\tone\ttwo\n\n0\ta\tb\tone\ttwo\n", 2, r"blank line with rows after it; delete it"),
    ],
    ids=["arabic-indic-digit", "superscript", "blank-inside"],
)
def test_aan_errors_name_file_and_line(tmp_path: Path, content: str, line: int, problem: str) -> None:
    copy = aan_copy(tmp_path)
    path = copy / "new_aan_pairs.test.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MalformedDataError) as error:
        AANDataModule(copy, cache_dir=tmp_path / "cache").setup()
    assert re.fullmatch(
        rf"LRA Retrieval \(AAN new_aan_pairs TSVs\): {re.escape(str(path))}:{line}: {problem}\. "
        rf"Fix or replace line {line} of new_aan_pairs\.test\.tsv, {FIX_IT}",
        message_of(error),
    )


# ---------------------------------------------------------------------------------------------------- images


def test_pathfinder_metadata_errors_name_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "pathfinder32" / "curv_contour_length_14"
    shutil.copytree(FIXTURES / "pathfinder" / "pathfinder32" / "curv_contour_length_14", root)
    metadata = root / "metadata" / "1.npy"
    lines = metadata.read_bytes().splitlines(keepends=True)
    for damaged, problem in (
        (lines[1].replace(b"1.0", b"\xff"), r"byte 0xff at position \d+ is not UTF-8 \(the file is text\)"),
        (
            lines[1].replace(b" 1 0 ", b" 1 \xd9\xa3 "),
            r"'imgs/1 sample_1\.png 1 ٣ .*' is not 'imgs/<k> <png> <i> <0\|1> ",
        ),
    ):
        metadata.write_bytes(lines[0] + damaged + b"".join(lines[2:]))
        with pytest.raises(MalformedDataError) as error:
            read_metadata(root)
        assert re.fullmatch(
            rf"LRA Pathfinder images and metadata: {re.escape(str(metadata))}:2: {problem}.*\. "
            rf"Fix or replace line 2 of 1\.npy, {FIX_IT}",
            message_of(error),
        ), message_of(error)


@pytest.mark.parametrize("label", ["٣", "3", 10, -1])
def test_cifar_labels_must_be_integers_0_to_9(tmp_path: Path, label: object) -> None:
    shutil.copytree(FIXTURES / "image" / "cifar10", tmp_path / "cifar10")
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    batch = pickle.loads((folder / "data_batch_2").read_bytes(), encoding="latin1")
    batch["labels"][1] = label
    (folder / "data_batch_2").write_bytes(pickle.dumps(batch))
    with pytest.raises(MalformedDataError) as error:
        CIFAR10DataModule(tmp_path / "cifar10").setup()
    assert re.fullmatch(
        rf"LRA Image \(CIFAR-10 python batches\): {re.escape(str(folder))}: label {re.escape(repr(label))} is not a "
        rf"whole number 0-9\. Fix or replace cifar-10-batches-py, {FIX_IT}",
        message_of(error),
    )


def test_imdb_string_labels_are_refused(tmp_path: Path) -> None:
    import datasets

    rows = {"text": ["good", "bad"], "label": ["1", "٣"]}
    imdb = datasets.DatasetDict({split: datasets.Dataset.from_dict(rows) for split in ("train", "test")})
    imdb.save_to_disk(str(tmp_path / "imdb"))
    with pytest.raises(MalformedDataError) as error:
        IMDbDataModule(tmp_path / "imdb", cache_dir=tmp_path / "cache").setup()
    assert re.fullmatch(
        rf"LRA Text \(IMDb saved with save_to_disk\): {re.escape(str(tmp_path / 'imdb' / 'train'))}: column label is "
        rf"Value\('string'.*\), expected integers 0 and 1\. Fix or replace train, {FIX_IT}",
        message_of(error),
    )


# ---------------------------------------------------------------------------------------------------- next step


@pytest.fixture
def project_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the repository's data/ folder, where `make data-*` writes."""
    data = tmp_path / "data"
    monkeypatch.setattr(errors, "DEFAULT_DATA_DIR", data)
    return data


def test_missing_data_in_the_project_folder_names_the_make_target(project_data: Path) -> None:
    path = project_data / "lra" / "listops" / "basic_train.tsv"
    with pytest.raises(DataNotFoundError) as error:
        load_split(path)
    assert message_of(error) == (
        f"ListOps split not found or incomplete at {path}: file missing. "
        "Run `make data-listops` to fetch or generate it."
    )


def test_damaged_data_in_the_project_folder_is_fetched_again(project_data: Path) -> None:
    folder = project_data / "lra" / "listops"
    path = tsv(folder, "( [MAX 2 3 ] )\t٣\n".encode())
    with pytest.raises(MalformedDataError) as error:
        read_tsv(path)
    assert message_of(error) == (
        f"ListOps split: {path}:3: target '٣' is not a label 0-9 (one ASCII digit). "
        f"Delete {folder} and run `make data-listops` to fetch or generate it again."
    )


def test_the_demo_set_comes_from_make_demo(project_data: Path) -> None:
    folder = project_data / "demo" / "listops"
    with pytest.raises(DataNotFoundError, match=r"file missing\. Run `make demo` to fetch or generate it\.$"):
        load_split(folder / "basic_val.tsv")
    with pytest.raises(MalformedDataError, match=rf"Delete {re.escape(str(folder))} and run `make demo` to"):
        read_tsv(tsv(folder, b"\n( [MAX 2 ] )\t2\n"))


def test_damaged_lra_data_in_the_project_folder_names_make_data_lra(project_data: Path, tmp_path: Path) -> None:
    copy = project_data / "lra" / "aan"
    shutil.copytree(FIXTURES / "retrieval" / "aan", copy)
    (copy / "new_aan_pairs.eval.tsv").write_text("1\tonly two\n")
    with pytest.raises(MalformedDataError) as error:
        AANDataModule(copy, cache_dir=tmp_path / "cache").setup()
    assert message_of(error).endswith(
        f"new_aan_pairs.eval.tsv:1: 2 of 5 tab-separated fields (label, id1, id2, text1, text2). "
        f"Delete {copy} and run `make data-lra` to fetch or generate it again."
    )


def test_missing_data_in_a_users_folder_says_how_to_point_at_data(project_data: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    with pytest.raises(DataNotFoundError) as error:
        AANDataModule(mine, cache_dir=tmp_path / "cache").setup()
    assert message_of(error) == (
        f"LRA Retrieval (AAN new_aan_pairs TSVs) not found or incomplete at {mine}: no new_aan_pairs.train.tsv. "
        f"data.data_dir= (or HGRN_DATA_DIR) chooses the folder a run reads: put the data in {mine} or point it at a "
        f"folder that holds it (`make data-lra` writes its own copy under {project_data})."
    )


def test_hgrn_data_dir_makes_it_the_users_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    path = tsv(mine / "lra" / "listops", "( [MAX 2 3 ] )\t²\n".encode(), name="basic_val.tsv")
    tsv(mine / "lra" / "listops", b"")
    monkeypatch.setenv("HGRN_DATA_DIR", str(mine))
    datamodule = instantiate(compose("paths.output_dir=RUN").data)
    with pytest.raises(MalformedDataError) as error:
        datamodule.setup()
    assert re.fullmatch(
        rf"ListOps split: {re.escape(str(path))}:3: target '²' .*\. Fix or replace line 3 of basic_val\.tsv, {FIX_IT}",
        message_of(error),
    )


def test_a_data_error_exits_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_, exit_on_user_error():
        raise MalformedDataError("X", tmp_path / "x.tsv", "data-lra", "unreadable (first\nsecond)", line=7)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"error: X: {tmp_path / 'x.tsv'}:7: unreadable (first second). Fix or replace line 7 of x.tsv, or point the "
        "run at a sound copy: data.data_dir= (or HGRN_DATA_DIR) chooses the folder a run reads.\n"
    )
