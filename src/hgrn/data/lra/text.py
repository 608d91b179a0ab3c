"""LRA Text: IMDb sentiment at byte level, documents cut to max_length tokens (4096 as in the s4 / HGRN configs).

Reads the Hugging Face `stanfordnlp/imdb` dataset that `make data-lra` saves with `DatasetDict.save_to_disk`:

    <data_dir>/dataset_dict.json, <data_dir>/{train,test}/{data-*.arrow, dataset_info.json, state.json}

with columns `text` (str) and `label` (0 negative, 1 positive). LRA has no validation split for IMDb: the test split
also serves as validation, as in the LRA paper and s4 (`val_split: 0.0`), so "best val" is best test; report it so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils.data import Dataset

from hgrn.data.columns import ColumnDataset
from hgrn.data.errors import DataNotFoundError
from hgrn.data.lra.cache import load_or_build
from hgrn.data.lra.datamodule import MAKE_TARGET, ByteDataModule
from hgrn.data.lra.tokens import byte_documents, pack_rows, truncate_document

if TYPE_CHECKING:
    import datasets

WHAT = "LRA Text (IMDb saved with save_to_disk)"
HF_SPLITS = ("train", "test")


def read_imdb(data_dir: Path) -> datasets.DatasetDict:
    import datasets  # only when the data is read: building the model and config need no `datasets`

    if not (data_dir / "dataset_dict.json").is_file():
        raise DataNotFoundError(WHAT, data_dir, MAKE_TARGET, "no dataset_dict.json")
    try:
        dataset = datasets.load_from_disk(str(data_dir))
    except (OSError, ValueError, KeyError) as error:
        raise DataNotFoundError(WHAT, data_dir, MAKE_TARGET, f"unreadable ({error})") from error
    for split in HF_SPLITS:
        if split not in dataset or not {"text", "label"} <= set(dataset[split].column_names):
            raise DataNotFoundError(WHAT, data_dir, MAKE_TARGET, f"no {split!r} split with columns text, label")
    return dataset


def encode_split(rows: datasets.Dataset, max_length: int) -> dict[str, Tensor]:
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
        tensors = load_or_build(
            self.cache_dir,
            f"imdb-{split}",
            [Path(f["filename"]) for f in imdb[split].cache_files],
            {"max_length": self.max_length},
            lambda: encode_split(imdb[split], self.max_length),
        )
        labels = tensors["labels"]
        if not ((labels == 0) | (labels == 1)).all():
            raise DataNotFoundError(WHAT, self.data_dir, MAKE_TARGET, f"{split!r} labels outside {{0, 1}}")
        return ColumnDataset(inputs=byte_documents(tensors["data"], tensors["offsets"]), labels=labels)
