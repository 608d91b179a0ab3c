"""What the evaluation command lines share: bad input (a missing file, an impossible option) is one line on stderr
and exit status 2, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def exit_on_bad_input() -> Iterator[None]:
    """ValueError and FileNotFoundError (hgrn's data and config errors among them) end the command with their
    message; those are the errors the evaluation code raises for what the user gave it."""
    try:
        yield
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
