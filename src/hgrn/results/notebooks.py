"""Execute the notebooks under notebooks/ headless, top to bottom (`make notebooks`): each saves its figures as PNG
under results/plots/ (or HGRN_PLOTS). The notebooks are committed without outputs and are not rewritten.

    python -m hgrn.results.notebooks                         # every notebook
    python -m hgrn.results.notebooks notebooks/mqar.ipynb --runs results/runs --plots /tmp/plots

Needs nbclient, nbformat and ipykernel (requirements.txt); the kernel is this Python's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from hgrn.results.tables import REPO

NOTEBOOK_DIR = REPO / "notebooks"
TIMEOUT_S = 300


def notebook_paths(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks of the suite, sorted."""
    return sorted(folder.glob("*.ipynb"))


async def _execute(path: Path, env: Mapping[str, str], timeout: int) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    await client.async_execute(env=dict(env))


def execute(paths: Sequence[Path], env: Mapping[str, str] | None = None, timeout: int = TIMEOUT_S) -> None:
    """Run the notebooks concurrently, each in its own kernel started with `env` added to this process's
    environment; the first cell that raises raises here (nbclient.exceptions.CellExecutionError, naming the cell)."""
    environment = {**os.environ, **(env or {})}

    async def run_all() -> None:
        await asyncio.gather(*(_execute(Path(path), environment, timeout) for path in paths))

    asyncio.run(run_all())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Execute the notebooks headless; they write results/plots/*.png.")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    parser.add_argument("--runs", nargs="+", help="folders searched for records (default: outputs/ results/runs/)")
    parser.add_argument("--plots", type=Path, help="where the PNGs go (default: results/plots/)")
    args = parser.parse_args(argv)
    paths = args.notebooks or notebook_paths()
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        parser.error(f"no notebook {' '.join(missing)}")
    env = {}
    if args.runs:
        env["HGRN_RUNS"] = os.pathsep.join(str(Path(root).resolve()) for root in args.runs)
    if args.plots:
        env["HGRN_PLOTS"] = str(args.plots.resolve())
    execute(paths, env)
    print(f"executed {len(paths)} notebook(s): {' '.join(path.name for path in paths)}", file=sys.stderr)


if __name__ == "__main__":
    main()
