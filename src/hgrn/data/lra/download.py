"""Fetch the LRA data into the layout the loaders read, then verify it against tasks/lra/manifest.yaml.

    python -m hgrn.data.lra.download --root data/lra [--tasks text retrieval ...]   # fetch, then verify
    python -m hgrn.data.lra.download verify --root data/lra [--tasks ...]

The LRA release (one tar holding ListOps, AAN and Pathfinder) downloads to <root>/lra_release.gz.part, resuming with
an HTTP range request after an interruption, and is renamed into place once its size matches the server's. Only the
directories the manifest names are unpacked, into <root>/.unpack, and each is renamed into place only after the whole
archive has been read, so an interrupted run leaves nothing half unpacked; directories already in place are left
alone (ListOps may come from `make data-listops` instead). IMDb comes from the Hugging Face hub and is saved with
save_to_disk; CIFAR-10 comes through torchvision's download, which checks its md5s. Without network every step says
what to fetch by hand and where to put it. The Hugging Face step needs HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import datasets
from torchvision.datasets import CIFAR10
from tqdm import tqdm

from hgrn.data.lra.manifest import DEFAULT_MANIFEST, load_manifest, verify

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    pass


def _range_total(content_range: str | None) -> int | None:
    """N from a Content-Range header `bytes a-b/N` or `bytes */N`."""
    total = (content_range or "").rpartition("/")[2]
    return int(total) if total.isdigit() else None


def download(url: str, dest: Path, size: int | None = None, timeout: float = 60) -> None:
    """Fetch url to dest through dest.part, resuming a partial .part; dest appears only once complete."""
    if dest.exists():
        return
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and done == _range_total(error.headers.get("Content-Range")):
            os.replace(part, dest)  # the previous run had every byte and stopped before the rename
            return
        raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}") from error
    except OSError as error:
        raise DownloadError(
            f"cannot reach {url} ({getattr(error, 'reason', error)}); this machine looks offline. "
            f"Download it elsewhere, put it at {dest}, and run this command again to unpack it."
        ) from error
    with response:
        if response.status == 206:
            total, mode = _range_total(response.headers.get("Content-Range")), "ab"
        else:
            length = response.headers.get("Content-Length")
            total, done, mode = (int(length) if length else None), 0, "wb"
        try:
            with (
                part.open(mode) as f,
                tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=dest.name) as bar,
            ):
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
        except OSError as error:
            raise DownloadError(f"download of {url} interrupted ({error}); run again to resume") from error
    got = part.stat().st_size
    if total is not None and got != total:
        raise DownloadError(f"{part} has {got} of {total} bytes; run again to resume")
    if size is not None and got != size:
        part.unlink()
        raise DownloadError(f"{url} gave {got} bytes where the manifest expects {size}; removed it, run again")
    os.replace(part, dest)


def _destination(name: str, prefixes: Mapping[tuple[str, ...], str]) -> str | None:
    """Where an archive member goes: the first prefix found in its path, whatever top folders precede it."""
    parts = PurePosixPath(name).parts
    for prefix, target in prefixes.items():
        for i in range(len(parts) - len(prefix) + 1):
            if parts[i : i + len(prefix)] == prefix:
                return str(PurePosixPath(target, *parts[i + len(prefix) :]))
    return None


def unpack(archive: Path, root: Path, members: Mapping[str, str]) -> None:
    """Extract the archive directories in members (name below the top folders -> directory under root)."""
    pending = {source: target for source, target in members.items() if not (root / target).exists()}
    if not pending:
        return
    staging = root / ".unpack"
    shutil.rmtree(staging, ignore_errors=True)
    prefixes = {PurePosixPath(source).parts: target for source, target in pending.items()}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tqdm(tar, desc=f"unpacking {archive.name}", unit=" files"):
                target = _destination(member.name, prefixes)
                if target is not None:
                    member.name = target
                    tar.extract(member, staging, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DownloadError(f"{archive} is damaged or truncated ({error}); delete it and run again") from error
    for source, target in pending.items():
        if not (staging / target).exists():
            raise DownloadError(f"{archive} holds no {source}/ directory")
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / target, root / target)
    shutil.rmtree(staging)


def fetch_huggingface(target: Path, dataset: str, splits: Sequence[str]) -> None:
    if target.exists():
        return
    try:
        downloaded = datasets.load_dataset(dataset)
    except Exception as error:  # the hub client fails in many types offline; each means the same here
        raise DownloadError(
            f"cannot fetch {dataset} from the Hugging Face hub ({error}). With network, run with "
            f"HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0; without, save it elsewhere with "
            f"`datasets.load_dataset({dataset!r})` (splits {', '.join(splits)}) and copy its save_to_disk to {target}."
        ) from error
    staging = target.with_name(target.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)
    datasets.DatasetDict({split: downloaded[split] for split in splits}).save_to_disk(str(staging))
    os.replace(staging, target)


def fetch_cifar10(target: Path) -> None:
    try:
        CIFAR10(str(target), train=True, download=True)  # a no-op when the md5s already match
    except (OSError, RuntimeError) as error:
        raise DownloadError(
            f"cannot fetch CIFAR-10 ({error}); this machine looks offline. Unpack {CIFAR10.url} "
            f"elsewhere and copy its {CIFAR10.base_folder}/ into {target}."
        ) from error


def _fetch_archive(root: Path, source: dict[str, Any], members: dict[str, str]) -> None:
    if all((root / target).exists() for target in members.values()):
        return
    archive = root / source["filename"]
    download(source["url"], archive, source.get("size"))
    unpack(archive, root, members)


def fetch(root: Path, manifest: dict[str, Any], tasks: Sequence[str]) -> None:
    """Fetch every source the tasks need; one that fails does not stop the others, and all failures are reported."""
    root.mkdir(parents=True, exist_ok=True)
    steps: dict[str, Callable[[], None]] = {}
    archive_members: dict[str, dict[str, str]] = defaultdict(dict)
    for task in tasks:
        spec = manifest["tasks"][task]
        name, source = spec["source"], manifest["sources"][spec["source"]]
        if source["kind"] == "archive":
            archive_members[name].update(spec["unpack"])
            steps[name] = partial(_fetch_archive, root, source, archive_members[name])
        elif source["kind"] == "huggingface":
            steps[name] = partial(fetch_huggingface, root / spec["dir"], source["dataset"], source["splits"])
        elif source["kind"] == "torchvision":
            steps[name] = partial(fetch_cifar10, root / spec["dir"])
        else:
            raise ValueError(f"task {task!r}: unknown source kind {source['kind']!r}")
    failures = []
    for step in steps.values():
        try:
            step()
        except DownloadError as error:
            failures.append(str(error))
    if failures:
        raise DownloadError("\n".join(failures))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hgrn.data.lra.download", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=("fetch", "verify"), default="fetch", help="default: fetch")
    parser.add_argument("--root", type=Path, default=Path("data/lra"), help="where the task directories go")
    parser.add_argument("--tasks", nargs="+", help="task names from the manifest (default: all)")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    args = parser.parse_args(argv)
    manifest = load_manifest(args.manifest)
    tasks = args.tasks or list(manifest["tasks"])
    if unknown := sorted(set(tasks) - set(manifest["tasks"])):
        parser.error(f"unknown tasks {', '.join(unknown)}; the manifest has {', '.join(manifest['tasks'])}")
    if args.command == "fetch":
        try:
            fetch(args.root, manifest, tasks)
        except DownloadError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    problems = verify(args.root, manifest, tasks)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("LRA data incomplete: run `make data-lra` (ListOps: `make data-listops`).", file=sys.stderr)
        return 1
    print(f"LRA data in place under {args.root}: {', '.join(tasks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
