"""The LRA data manifest (tasks/lra/manifest.yaml): where each task comes from and what must be on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

import yaml

DEFAULT_MANIFEST = Path(__file__).resolve().parents[4] / "tasks" / "lra" / "manifest.yaml"


def load_manifest(path: Path = DEFAULT_MANIFEST) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no LRA manifest at {path}; pass --manifest with the path to tasks/lra/manifest.yaml")
    manifest = yaml.safe_load(path.read_text())
    for task, spec in manifest["tasks"].items():
        if spec["source"] not in manifest["sources"]:
            raise ValueError(f"{path}: task {task!r} names unknown source {spec['source']!r}")
    return manifest


def _md5(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def verify(root: Path, manifest: dict[str, Any], tasks: Iterable[str]) -> list[str]:
    """One line per problem under root, naming the task and the file; empty when everything is in place."""
    problems = []
    for task in tasks:
        spec = manifest["tasks"][task]
        for entry in spec.get("files", []):
            entry = {"path": entry} if isinstance(entry, str) else entry
            path = root / entry["path"]
            if not path.is_file():
                problems.append(f"{task}: missing {path}")
            elif "size" in entry and path.stat().st_size != entry["size"]:
                problems.append(f"{task}: {path} has {path.stat().st_size} bytes, expected {entry['size']}")
            elif "md5" in entry and (digest := _md5(path)) != entry["md5"]:
                problems.append(f"{task}: {path} has md5 {digest}, expected {entry['md5']}")
        for entry in spec.get("globs", []):
            found = sum(1 for _ in islice(root.glob(entry["pattern"]), entry["min_count"]))
            if found < entry["min_count"]:
                problems.append(
                    f"{task}: {found} files match {root / entry['pattern']}, expected {entry['min_count']}+"
                )
    return problems
