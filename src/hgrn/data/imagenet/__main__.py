"""Check a copy of ImageNet-1K (or a packaged set in its layout), or put one in place.

    python -m hgrn.data.imagenet verify --root data/imagenet                      # 1000 classes, 1,281,167 / 50,000
    python -m hgrn.data.imagenet verify --root data/fashion_mnist --expect fashion-mnist
    python -m hgrn.data.imagenet fetch --root data/imagenet --source /datasets/imagenet   # link a local copy
    python -m hgrn.data.imagenet fetch --root data/imagenet    # the hub's ILSVRC/imagenet-1k parquet (gated: log in)

verify prints one line, what is missing or that the copy is complete, and exits 1 when something is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hgrn.data.errors import DataNotFoundError
from hgrn.data.imagenet.layout import check_counts, expected_counts, inventory

HF_REPO = "ILSVRC/imagenet-1k"


def verify(root: Path, expect: str, source: str = "auto") -> tuple[bool, str]:
    """(complete, one line): the copy's class and image counts against `expect`'s."""
    found = inventory(root, source)
    layout = "ImageFolder layout" if found.source == "folder" else "Hugging Face copy"
    problems = check_counts(found, expected_counts(expect))
    if problems:
        return False, f"{root} ({expect}, {layout}) is incomplete: " + "; ".join(problems)
    counts = " / ".join(f"{found.images(split):,} {split}" for split in found.per_class)
    return True, f"{root} ({expect}, {layout}): complete, {expected_counts(expect).classes} classes, {counts} images"


def fetch(root: Path, source: Path | None) -> None:
    """Link a local copy (either layout) at root, or download the hub's train and validation parquet shards into
    root/hf (needs `huggingface-cli login` and the dataset's terms accepted on the hub)."""
    if source is not None:
        if not source.is_dir():
            raise DataNotFoundError("a local ImageNet copy", source, "data-imagenet", data_dir=source)
        root.parent.mkdir(parents=True, exist_ok=True)
        if root.is_symlink():
            root.unlink()
        if root.exists():
            raise FileExistsError(f"{root} exists and is not a link; remove it or verify it as it is")
        root.symlink_to(source.resolve(), target_is_directory=True)
        return
    from huggingface_hub import snapshot_download

    snapshot_download(
        HF_REPO,
        repo_type="dataset",
        local_dir=root / "hf",
        allow_patterns=["data/train-*.parquet", "data/validation-*.parquet"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="count classes and images against the expected set")
    check.add_argument("--root", type=Path, default=Path(os.environ.get("HGRN_DATA_DIR", "data")) / "imagenet")
    check.add_argument("--expect", default="imagenet-1k", help="imagenet-1k | fashion-mnist | mnist-5k")
    check.add_argument("--source", default="auto", choices=("auto", "folder", "hf"))
    get = commands.add_parser("fetch", help="link a local copy, or download the Hugging Face parquet shards")
    get.add_argument("--root", type=Path, default=Path(os.environ.get("HGRN_DATA_DIR", "data")) / "imagenet")
    get.add_argument("--source", type=Path, help="a local copy (ImageFolder or Hugging Face) to link at --root")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            fetch(args.root, args.source)
            args.expect, args.source = "imagenet-1k", "auto"
        complete, line = verify(args.root, args.expect, args.source)
    except (DataNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(line, file=sys.stdout if complete else sys.stderr)
    raise SystemExit(0 if complete else 1)


if __name__ == "__main__":
    main()
