"""The README's copies of the rendered tables, so a reader sees every number without opening results/tables/.

Each table lives in the README between `<!-- table:NAME -->` and `<!-- /table:NAME -->`: its Markdown rendered with
links relative to the README's folder and headings two levels down (the README's own sections are `##`).
`python -m hgrn.results.tables --readme README.md` (what `make tables` runs) rewrites every block whose markers are
there; a table without markers is not embedded, and a README without them is left alone.
"""

from __future__ import annotations

import re
from pathlib import Path

from hgrn.io import atomic_writes


def block(markdown: str) -> str:
    """A table's Markdown as the README embeds it: every heading two levels further down."""
    return "".join("##" + line if line.startswith("#") else line for line in markdown.splitlines(keepends=True))


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- table:{name} -->\n", f"<!-- /table:{name} -->"


def embedded(readme_text: str) -> dict[str, str]:
    """The blocks a README holds now, by table name."""
    pattern = re.compile(r"<!-- table:(\w+) -->\n(.*?)<!-- /table:\1 -->", re.DOTALL)
    return {match[1]: match[2] for match in pattern.finditer(readme_text)}


def update(readme: Path, blocks: dict[str, str]) -> list[str]:
    """Replace each named block (text already passed through `block`) in `readme`; returns the names written."""
    text = readme.read_text(encoding="utf-8")
    written = []
    for name, body in blocks.items():
        start, end = _markers(name)
        if start in text and end in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = head + start + body + end + tail
            written.append(name)
    with atomic_writes([readme]) as (file,):
        file.write(text)
    return written
