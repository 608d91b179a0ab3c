"""WikiText-103 (raw, i.e. untokenised text; Merity et al.) in any of the layouts it is distributed in. `data_dir` is
the folder that holds one of them:

    raw files       wiki.{train,valid,test}.raw, as in the release's wikitext-103-raw-v1.zip
    save_to_disk    dataset_dict.json + {train,validation,test}/ (Hugging Face `Salesforce/wikitext`,
                    config `wikitext-103-raw-v1`, saved with DatasetDict.save_to_disk; what `make data-wikitext` writes)
    parquet         {train,validation,test}-*.parquet (that config's folder of the hub repository), column `text`
    fairseq         dict.txt + {train,valid,test}.{bin,idx}, the official scripts' data-bin (hgrn.data.lm.fairseq)

The Hugging Face copies hold one row per line of the raw files (the line's text with its newline, "" for a blank
line), so every layout gives the same lines and, tokenised as a line corpus (hgrn.data.lm.encode), the same stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.lm.encode import TokenBatch, Tokenizer, encode_texts
from hgrn.data.lm.fairseq import DataBin
from hgrn.data.lm.sources import SPLITS, SplitSource

WHAT = "WikiText-103"
MAKE_TARGET = "data-wikitext"
HF_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
ROWS_PER_BATCH = 8192


def require(path: Path, data_dir: Path, layout: str) -> Path:
    if not path.exists():
        raise DataNotFoundError(f"{WHAT} ({layout})", path, MAKE_TARGET, data_dir=data_dir)
    return path


def file_lines(path: Path, data_dir: Path) -> Iterator[str]:
    """Lines as fairseq's encoder reads them: UTF-8 text with universal newlines."""
    with path.open(encoding="utf-8") as file:
        try:
            yield from file
        except UnicodeDecodeError as error:
            raise MalformedDataError(WHAT, path, MAKE_TARGET, f"not UTF-8 ({error})", data_dir=data_dir) from error


def raw_sources(data_dir: Path) -> dict[str, SplitSource] | None:
    if not any(data_dir.glob("wiki.*.raw")):
        return None
    sources = {}
    for split in SPLITS:
        path = require(data_dir / f"wiki.{split}.raw", data_dir, "raw files")
        read = partial(read_lines, partial(file_lines, path, data_dir))
        sources[split] = SplitSource("wikitext103 (raw files)", (path,), read)
    return sources


def saved_rows(folder: Path, data_dir: Path) -> Iterator[str]:
    """The `text` column of one split saved with save_to_disk."""
    import datasets  # only when the data is read
    import pyarrow

    try:
        dataset = datasets.load_from_disk(str(folder))
    except (OSError, ValueError, TypeError, KeyError, pyarrow.ArrowException) as error:
        raise MalformedDataError(WHAT, folder, MAKE_TARGET, f"unreadable ({error})", data_dir=data_dir) from error
    text = dataset.features.get("text")
    if getattr(text, "dtype", None) not in ("string", "large_string"):
        problem = f"column text is {text}, expected strings"
        raise MalformedDataError(WHAT, folder, MAKE_TARGET, problem, data_dir=data_dir)
    for batch in dataset.iter(batch_size=ROWS_PER_BATCH):
        yield from batch["text"]


def saved_sources(data_dir: Path) -> dict[str, SplitSource] | None:
    if not (data_dir / "dataset_dict.json").is_file():
        return None
    sources = {}
    for split, hf_split in HF_SPLITS.items():
        folder = require(data_dir / hf_split, data_dir, "save_to_disk")
        files = tuple(sorted(folder.glob("*.arrow")))
        if not files:
            raise MalformedDataError(WHAT, folder, MAKE_TARGET, "no .arrow data file", data_dir=data_dir)
        read = partial(read_lines, partial(saved_rows, folder, data_dir))
        sources[split] = SplitSource("wikitext103 (save_to_disk)", files, read)
    return sources


def parquet_rows(paths: tuple[Path, ...], data_dir: Path) -> Iterator[str]:
    """The `text` column of parquet files, in file order."""
    import pyarrow
    import pyarrow.parquet

    for path in paths:
        try:
            file = pyarrow.parquet.ParquetFile(path)
            text = file.schema_arrow.field("text").type
            if text not in (pyarrow.string(), pyarrow.large_string()):
                raise ValueError(f"column text is {text}, expected strings")
            for batch in file.iter_batches(batch_size=ROWS_PER_BATCH, columns=["text"]):
                yield from batch.column(0).to_pylist()
        except (KeyError, ValueError, OSError, pyarrow.ArrowException) as error:
            raise MalformedDataError(WHAT, path, MAKE_TARGET, f"unreadable ({error})", data_dir=data_dir) from error


def parquet_sources(data_dir: Path) -> dict[str, SplitSource] | None:
    if not any(data_dir.glob("*.parquet")):
        return None
    sources = {}
    for split, hf_split in HF_SPLITS.items():
        paths = tuple(sorted(data_dir.glob(f"{hf_split}-*.parquet")))
        if not paths:
            pattern = data_dir / f"{hf_split}-*.parquet"
            raise DataNotFoundError(f"{WHAT} (parquet)", pattern, MAKE_TARGET, data_dir=data_dir)
        read = partial(read_lines, partial(parquet_rows, paths, data_dir))
        sources[split] = SplitSource("wikitext103 (parquet)", paths, read)
    return sources


def fairseq_sources(data_dir: Path) -> dict[str, SplitSource] | None:
    if not (data_dir / "dict.txt").is_file():
        return None
    sources = {}
    for split in SPLITS:
        data_bin = DataBin(data_dir, split, WHAT, MAKE_TARGET)
        files = tuple(require(path, data_dir, "fairseq data-bin") for path in (data_bin.tokens, data_bin.index))
        sources[split] = SplitSource("wikitext103 (fairseq data-bin)", (data_bin.dictionary, *files), data_bin.read)
    return sources


def read_lines(lines: Callable[[], Iterator[str]], tokenizer: Tokenizer) -> Iterator[TokenBatch]:
    return encode_texts(lines(), tokenizer, lines=True)


LAYOUTS = (raw_sources, saved_sources, parquet_sources, fairseq_sources)


def find_wikitext(data_dir: Path) -> dict[str, SplitSource] | None:
    """The splits of the copy in data_dir; None when it holds none (DataNotFoundError when a split is missing)."""
    if not data_dir.is_dir():
        return None
    for layout in LAYOUTS:
        if (sources := layout(data_dir)) is not None:
            return sources
    return None
