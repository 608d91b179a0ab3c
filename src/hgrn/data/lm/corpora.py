"""The corpora the LM pipeline reads, by the name configs and the prepare command use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hgrn.data.lm import pile, ptb, wikitext
from hgrn.data.lm.sources import SplitSource


@dataclass(frozen=True)
class Corpus:
    """what / make_target: for messages; find(data_dir): its splits there, None when data_dir holds no copy."""

    what: str
    make_target: str
    find: Callable[[Path], dict[str, SplitSource] | None]


CORPORA = {
    "ptb": Corpus(ptb.WHAT, ptb.MAKE_TARGET, ptb.find_ptb),
    "wikitext103": Corpus(wikitext.WHAT, wikitext.MAKE_TARGET, wikitext.find_wikitext),
    "pile": Corpus(pile.WHAT, pile.MAKE_TARGET, pile.find_pile),
}


def corpus(name: str) -> Corpus:
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; choose one of {', '.join(CORPORA)}")
    return CORPORA[name]
