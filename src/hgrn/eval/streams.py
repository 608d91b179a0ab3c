"""The token stream a perplexity is measured on: a split of the run's own data, or a file given by hand.

- the run's data (default): the checkpoint's run directory keeps the composed config Hydra saved
  (<run>/.hydra/config.yaml); its `data` node builds the datamodule (hgrn.training.build), whose `tokens(split)` is
  the split's whole token stream (np.memmap uint16, the LM datamodule's token cache);
- a token file: .npy (any integer dtype) or .bin (raw uint16, the token cache's format), memory-mapped;
- a text file (.txt, UTF-8): encoded with GPT-2 BPE as one document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from hgrn.data.lm.tokenizer import gpt2_tokenizer

FILE_KINDS = (".npy", ".bin", ".txt")


def file_tokens(path: Path | str) -> Any:
    """The token stream [N] of a .npy / .bin token file or a .txt text file."""
    path = Path(path)
    if path.suffix not in FILE_KINDS:
        raise ValueError(f"{path}: a token stream is read from {' / '.join(FILE_KINDS)} files; got {path.suffix!r}")
    if not path.is_file():
        raise FileNotFoundError(f"token stream {path} does not exist")
    if path.suffix == ".npy":
        tokens = np.load(path, mmap_mode="r")
    elif path.suffix == ".bin":
        tokens = np.memmap(path, dtype=np.uint16, mode="r")
    else:
        tokens = np.asarray(gpt2_tokenizer().encode(path.read_text(encoding="utf-8")), dtype=np.uint16)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{path}: a token stream is one 1-D array of integer ids; got {tokens.dtype} {tokens.shape}")
    return tokens


def run_tokens(run_dir: Path, split: str) -> Any:
    """The token stream of `split` of the data a run trained on, from its saved config."""
    from hgrn.training.build import build_datamodule

    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(
            f"{saved} not found, so the run's data is unknown; give the token stream with --data "
            f"<{' | '.join(FILE_KINDS)} file>"
        )
    datamodule = build_datamodule(OmegaConf.load(saved))
    if not hasattr(datamodule, "tokens"):
        raise ValueError(
            f"the run's datamodule ({type(datamodule).__name__}) has no token streams (tokens(split)); it is not a "
            f"language-modeling run, or give the stream with --data"
        )
    return datamodule.tokens(split)
