"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written one.

Every file the package writes for others to read (results.json, decode-once caches, generated data splits) goes
through here, so there is one place that gets the details right: the temporary file sits beside its target (same
file system, so the rename is atomic), is hidden (`.name.<random>.tmp`, which no reader globs), is fsynced before the
rename, is removed on any exception including KeyboardInterrupt, and is created with mode 0666 minus the umask like a
plain open(), so colleagues can read it (mkstemp and NamedTemporaryFile create 0600 files).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

Mode = Literal["w", "wb"]
_ATTEMPTS = 100


@contextmanager
def atomic_write(path: Path | str, mode: Mode = "w") -> Iterator[IO[Any]]:
    """Open `path` for writing; the file appears (or replaces the old one) only when the block completes.

    Text mode writes UTF-8 exactly as given (no newline translation), so generated data is byte-identical anywhere.
    """
    with atomic_writes([path], mode) as (file,):
        yield file


@contextmanager
def atomic_writes(paths: Iterable[Path | str], mode: Mode = "w") -> Iterator[list[IO[Any]]]:
    """Open several files that must appear together (e.g. the splits of one data set): none is renamed into place
    until the block has completed and every file is on disk, so an interrupted writer leaves the previous set. The
    renames then follow one another; only a failing rename (not a failing writer) could leave a mixed set."""
    targets = [Path(p) for p in paths]
    pending: dict[Path, Path] = {}  # temporary -> target
    files: list[IO[Any]] = []
    try:
        for target in targets:
            file, temporary = _create_beside(target, mode)
            files.append(file)
            pending[temporary] = target
        yield files
        for file in files:
            file.flush()
            os.fsync(file.fileno())
            file.close()
        for temporary, target in list(pending.items()):
            os.replace(temporary, target)
            del pending[temporary]
    finally:
        for file in files:
            file.close()
        for temporary in pending:
            temporary.unlink(missing_ok=True)


def _create_beside(target: Path, mode: Mode) -> tuple[IO[Any], Path]:
    """A new hidden file in target's directory (which must exist, as for open()), created exclusively with mode
    0666 & ~umask, as open() would."""
    for _ in range(_ATTEMPTS):
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
            return os.fdopen(fd, mode, **text), temporary
        except BaseException:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
    raise FileExistsError(f"no free temporary name beside {target} after {_ATTEMPTS} attempts")
