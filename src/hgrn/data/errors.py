"""The error every loader raises when its data is missing or damaged: what was expected, and how to get it."""

from __future__ import annotations

from pathlib import Path


class DataNotFoundError(FileNotFoundError):
    def __init__(self, what: str, path: Path | str, make_target: str, detail: str = "") -> None:
        self.path = Path(path)
        self.make_target = make_target
        reason = f": {detail}" if detail else ""
        super().__init__(
            f"{what} not found or incomplete at {self.path}{reason}. Run `make {make_target}` to fetch or generate it."
        )
