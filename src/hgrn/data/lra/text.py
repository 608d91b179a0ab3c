"""LRA Text: IMDb sentiment at byte level, documents cut to max_length tokens (4096 as in the s4 / HGRN configs).

Reads the Hugging Face `stanfordnlp/imdb` dataset that `make data-lra` saves with `DatasetDict.save_to_disk`:

    <data_dir>/dataset_dict.json, <data_dir>/{train,test}/{data-*.arrow, dataset_info.json, state.json}

with columns `text` (str) and `label` (0 negative, 1 positive). LRA has no validation split for IMDb: the test split
also serves as validation, as in the LRA paper and s4 (`val_split: 0.0`), so "best val" is best test; report it so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils.data import Dataset

from hgrn.data.columns import ColumnDataset
from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.lra.cache import load_or_build
from hgrn.data.lra.datamodule import MAKE_TARGET, ByteDataModule
from hgrn.data.lra.tokens import byte_documents, pack_rows, truncate_document

if TYPE_CHECKING:
    import datasets

WHAT = "LRA Text (IMDb saved with save_to_disk)"
HF_SPLITS = ("train", "test")


def read_imdb(data_dir: Path) -> datasets.DatasetDict:
    """The saved DatasetDict, its splits and columns checked; MalformedDataError names the damaged file where the
    JSON metadata tell which, else the folder `datasets` reads as a whole."""
    import datasets  # only when the data is read: building the model and config need no `datasets`
    import pyarrow

    if not (data_dir / "dataset_dict.json").is_file():
        raise DataNotFoundError(WHAT, data_dir, MAKE_TARGET, "no dataset_dict.json")
    try:
        dataset = datasets.load_from_disk(str(data_dir))
    except (OSError, ValueError, LookupError, TypeError, AttributeError, pyarrow.ArrowException) as error:
        # What damaged JSON (a field of the wrong type) or a damaged Arrow header raises inside `datasets`.
        path = first_unreadable_json(data_dir) or data_dir
        raise MalformedDataError(WHAT, path, MAKE_TARGET, f"unreadable ({error})", data_dir=data_dir) from error
    for split in HF_SPLITS:
        if split not in dataset or not {"text", "label"} <= set(dataset[split].column_names):
            problem = f"no {split!r} split with columns text, label"
            raise MalformedDataError(WHAT, data_dir, MAKE_TARGET, problem, data_dir=data_dir)
        if problem := column_problem(dataset[split].features):
            raise MalformedDataError(WHAT, data_dir / split, MAKE_TARGET, problem, data_dir=data_dir)
    return dataset


def first_unreadable_json(data_dir: Path) -> Path | None:
    """The first of save_to_disk's JSON files that is missing or not JSON, to name it in the error (the JSON parser's
    "line 13 column 1" does not say which file); None if all parse."""
    names = ("dataset_info.json", "state.json")
    for path in (data_dir / "dataset_dict.json", *(data_dir / split / name for split in HF_SPLITS for name in names)):
        try:
            json.loads(path.read_bytes())
        except (OSError, ValueError):
            return path
    return None


def column_problem(features: datasets.Features) -> str | None:
    """Text must be strings and labels integers (ClassLabel or an int Value): a string label would be parsed, and
    int() reads '٣' as 3."""
    import datasets

    text, label = features["text"], features["label"]
    if not (isinstance(text, datasets.Value) and text.dtype in ("string", "large_string")):
        return f"column text is {text}, expected strings"
    if isinstance(label, datasets.ClassLabel):
        return None
    if not (isinstance(label, datasets.Value) and label.dtype.startswith(("int", "uint"))):
        return f"column label is {label}, expected integers 0 and 1"
    return None


def encode_split(rows: datasets.Dataset, max_length: int) -> dict[str, Tensor]:
    """Labels and packed, truncated UTF-8 documents of one split. The Arrow data are validated first: a damaged file
    can have a sound header over invalid UTF-8 or offsets, which would otherwise fail (or read out of bounds) in the
    middle of the conversion; pyarrow.ArrowInvalid names the problem."""
    rows.data.validate(full=True)
    labels = torch.tensor(rows["label"], dtype=torch.long)
    data, offsets = pack_rows([truncate_document(text.encode("utf-8"), max_length) for text in rows["text"]])
    return {"data": data, "offsets": offsets, "labels": labels}


class IMDbDataModule(ByteDataModule):
    """Batches: inputs [B, T] int64 byte ids (0 pad, 1 <eos>, byte b -> b + 2; T <= max_length), mask [B, T],
    labels [B] in {0, 1}. Splits: train 25k; val and test are both the 25k test split."""

    num_classes = 2
    default_max_length = 4096

    def read_splits(self) -> dict[str, Dataset]:
        imdb = read_imdb(self.data_dir)  # memory-mapped, so cheap even when the caches are warm
        train, test = (self._read(imdb, split) for split in HF_SPLITS)
        return {"train": train, "val": test, "test": test}

    def _read(self, imdb: datasets.DatasetDict, split: str) -> ColumnDataset:
        files = [Path(f["filename"]) for f in imdb[split].cache_files]
        tensors = load_or_build(
            self.cache_dir,
            f"imdb-{split}",
            files,
            {"max_length": self.max_length},
            lambda: self._encode(imdb, split, files),
        )
        labels = tensors["labels"]
        if not ((labels == 0) | (labels == 1)).all():
            problem = f"labels outside {{0, 1}}, e.g. {int(labels[(labels != 0) & (labels != 1)][0])}"
            raise MalformedDataError(WHAT, self.data_dir / split, MAKE_TARGET, problem, data_dir=self.data_dir)
        return ColumnDataset(inputs=byte_documents(tensors["data"], tensors["offsets"]), labels=labels)

    def _encode(self, imdb: datasets.DatasetDict, split: str, files: list[Path]) -> dict[str, Tensor]:
        """encode_split, with damaged Arrow data reported as the split's file (its folder if it has several)."""
        import pyarrow

        try:
            return encode_split(imdb[split], self.max_length)
        except (pyarrow.ArrowException, ValueError) as error:  # ArrowInvalid; UnicodeDecodeError if validation passed
            path = files[0] if len(files) == 1 else self.data_dir / split
            problem = f"damaged Arrow data ({str(error)[:200]})"
            raise MalformedDataError(WHAT, path, MAKE_TARGET, problem, data_dir=self.data_dir) from error
