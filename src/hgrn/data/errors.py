"""The errors every loader raises when its data is missing or damaged: what was expected, where, and the next step.

The next step depends on whose folder it is. Under the project's data directory (DEFAULT_DATA_DIR, where `make data-*`
puts the data) the make target fetches or regenerates it. Anywhere else the folder is the user's own copy, which a make
target would not touch (it writes under DEFAULT_DATA_DIR, and `make data-listops` writes synthetic data): the message
says what to fix in which file, and that `data.data_dir=` or HGRN_DATA_DIR choose the folder a run reads.
Messages are one line, as `hgrn.config.exit_on_user_error` prints them.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[3] / "data"  # the repository's data/, as the Makefile fills it
CHOOSE_FOLDER = "data.data_dir= (or HGRN_DATA_DIR) chooses the folder a run reads"


def is_default_data(path: Path) -> bool:
    """Whether a path lies in the project's data directory, which the make targets fill."""
    return path.resolve().is_relative_to(DEFAULT_DATA_DIR.resolve())


class DataNotFoundError(FileNotFoundError):
    """Data missing at `path` (a file or a folder).

    data_dir: the folder the run was pointed at (default: path); it decides the next step the message gives.
    """

    def __init__(
        self, what: str, path: Path | str, make_target: str, detail: str = "", *, data_dir: Path | str | None = None
    ) -> None:
        self.path = Path(path)
        self.make_target = make_target
        self.data_dir = Path(data_dir) if data_dir is not None else self.default_data_dir()
        message = f"{self.describe(what, detail)}. {self.next_step()}"
        super().__init__(" ".join(message.splitlines()))  # a detail quoting another error may span lines

    def default_data_dir(self) -> Path:
        return self.path

    def describe(self, what: str, detail: str) -> str:
        return f"{what} not found or incomplete at {self.path}" + (f": {detail}" if detail else "")

    def next_step(self) -> str:
        if is_default_data(self.data_dir):
            return f"Run `make {self.make_target}` to fetch or generate it."
        return (
            f"{CHOOSE_FOLDER}: put the data in {self.data_dir} or point it at a folder that holds it "
            f"(`make {self.make_target}` writes its own copy under {DEFAULT_DATA_DIR})."
        )


class MalformedDataError(DataNotFoundError):
    """A data file that exists but does not read as its format says: names the file and, for text, the line.

    problem: what is wrong and what was expected, e.g. "label '²' is not one ASCII digit 0-9".
    data_dir: the folder the run was pointed at (default: the file's folder).
    """

    def __init__(
        self,
        what: str,
        path: Path | str,
        make_target: str,
        problem: str,
        *,
        line: int | None = None,
        data_dir: Path | str | None = None,
    ) -> None:
        self.line = line
        super().__init__(what, path, make_target, problem, data_dir=data_dir)

    def default_data_dir(self) -> Path:
        return self.path.parent

    def describe(self, what: str, detail: str) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{what}: {where}: {detail}"

    def next_step(self) -> str:
        if is_default_data(self.data_dir):
            return f"Delete {self.data_dir} and run `make {self.make_target}` to fetch or generate it again."
        part = f"line {self.line} of {self.path.name}" if self.line is not None else self.path.name
        return f"Fix or replace {part}, or point the run at a sound copy: {CHOOSE_FOLDER}."
