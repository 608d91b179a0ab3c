"""LRA Retrieval: do two ACL Anthology (AAN) papers cite one another? Byte level, two documents per example.

Reads the release files `<data_dir>/new_aan_pairs.{train,eval,test}.tsv`: no header, one pair per line, five
tab-separated fields `label, id1, id2, text1, text2`. Like LRA (`use_quote_delim=False`) fields are split on tabs
only, quotes are text; the texts are taken as the raw bytes LRA's byte-level encoder sees. Each document is cut to
max_length tokens (4000, as LRA and s4). A line without exactly five fields means a truncated or damaged file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from hgrn.data.columns import ColumnDataset
from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.lra.cache import load_or_build
from hgrn.data.lra.datamodule import MAKE_TARGET, ByteDataModule
from hgrn.data.lra.tokens import byte_documents, pack_rows, truncate_document

WHAT = "LRA Retrieval (AAN new_aan_pairs TSVs)"
FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
FIELDS = 5


def parse_label(field: bytes) -> int | None:
    """0 or 1 (LRA reads the label as a float, so "1.0" counts as 1); None for anything else. float() of bytes takes
    ASCII only, so no other script's digits pass as a label."""
    try:
        value = float(field)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


def encode_pairs(path: Path, max_length: int) -> dict[str, Tensor]:
    """Parse one TSV into packed, truncated byte documents and labels; MalformedDataError (file and line) on a
    malformed line. Texts stay bytes, as LRA reads them, so no encoding can be wrong. Blank lines may end the file."""
    labels: list[int] = []
    first: list[bytes] = []
    second: list[bytes] = []
    first_blank: int | None = None
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                first_blank = first_blank or number
                continue
            if first_blank is not None:
                raise _malformed(path, "blank line with rows after it; delete it", first_blank)
            fields = line.rstrip(b"\n").split(b"\t")
            if len(fields) != FIELDS:
                raise _malformed(
                    path, f"{len(fields)} of {FIELDS} tab-separated fields (label, id1, id2, text1, text2)", number
                )
            label = parse_label(fields[0])
            if label is None:
                shown = fields[0][:20].decode("utf-8", "backslashreplace")
                raise _malformed(path, f"label {shown!r} is not 0 or 1", number)
            labels.append(label)
            first.append(truncate_document(fields[3], max_length))
            second.append(truncate_document(fields[4], max_length))
    if not labels:
        raise _malformed(path, "no examples (the file is empty)")
    (data1, offsets1), (data2, offsets2) = pack_rows(first), pack_rows(second)
    return {"data1": data1, "offsets1": offsets1, "data2": data2, "offsets2": offsets2, "labels": torch.tensor(labels)}


def _malformed(path: Path, problem: str, line: int | None = None) -> MalformedDataError:
    return MalformedDataError(WHAT, path, MAKE_TARGET, problem, line=line)


class AANDataModule(ByteDataModule):
    """Two-tower batches: inputs [B, T1] and inputs2 [B, T2] int64 byte ids (0 pad, 1 <eos>, byte b -> b + 2;
    T <= max_length per document), mask [B, T1], mask2 [B, T2], labels [B] in {0, 1}.
    Splits: the release's train / eval / test files."""

    num_classes = 2
    default_max_length = 4000
    pair = True  # two documents per example: the classifier encodes both with one backbone (the two-tower setup)

    def read_splits(self) -> dict[str, Dataset]:
        paths = {split: self.data_dir / name for split, name in FILES.items()}
        for path in paths.values():
            if not path.is_file():
                raise DataNotFoundError(WHAT, self.data_dir, MAKE_TARGET, f"no {path.name}")
        return {split: self._read(split, path) for split, path in paths.items()}

    def _read(self, split: str, path: Path) -> ColumnDataset:
        tensors = load_or_build(
            self.cache_dir,
            f"aan-{split}",
            [path],
            {"max_length": self.max_length},
            lambda: encode_pairs(path, self.max_length),
        )
        return ColumnDataset(
            inputs=byte_documents(tensors["data1"], tensors["offsets1"]),
            inputs2=byte_documents(tensors["data2"], tensors["offsets2"]),
            labels=tensors["labels"],
        )
