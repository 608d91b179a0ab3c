"""LRA Pathfinder (32 x 32) and Path-X (128 x 128): are the two circles joined by a path? Pixels in raster order.

Reads the release layout under data_dir = `pathfinder32` or `pathfinder128`, hardest difficulty as in LRA:

    curv_contour_length_14/metadata/<k>.npy    TEXT despite the extension, one image per line:
                                               `imgs/<k> sample_<i>.png <i> <label> ...` (label at index 3)
    curv_contour_length_14/imgs/<k>/sample_<i>.png

Metadata files are read in numeric order and their lines in order, as s4 does. Empty PNGs are a known defect of the
release (s4 blacklists one) and are skipped with a warning; a missing, unreadable or wrong-sized image means a damaged
download. The images are decoded once into a uint8 cache.

Inputs, as `tokenize` says: False (the official HGRN runs, s4's pipeline) gives one normalised value per pixel,
(intensity / 255 - 0.5) / 0.5 in [-1, 1], [T, 1] float32, which the model reads through Linear(1, d); True gives
intensity tokens (id = intensity + 1, vocab_size 257) for an embedding, as LRA's own code does.
Split: s4's convention, 80 / 10 / 10 with random_split seeded 42 (LRA cuts its TFDS order at 80% and 90% instead).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from hgrn.data.columns import ColumnDataset
from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.lra.cache import load_or_build
from hgrn.data.lra.datamodule import MAKE_TARGET, LRADataModule, held_out_split
from hgrn.data.lra.tokens import PIXEL_VOCAB_SIZE, PixelTokens

log = logging.getLogger(__name__)

WHAT = "LRA Pathfinder images and metadata"
DIFFICULTY = "curv_contour_length_14"
HELD_OUT = (0.1, 0.1)  # validation, test


def metadata_lines(root: Path) -> Iterator[tuple[Path, int, str]]:
    """(metadata file, line number, line) of every non-blank metadata line under root, in s4's order (files
    numerically); MalformedDataError (file and line) for a line that is not UTF-8 text or holds a NUL byte."""
    files = sorted((root / "metadata").glob("*.npy"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise DataNotFoundError(WHAT, root, MAKE_TARGET, "no metadata/*.npy", data_dir=root.parent)
    for file in files:
        for number, raw in enumerate(file.read_bytes().splitlines(), 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                problem = f"byte {raw[error.start]:#04x} at position {error.start + 1} is not UTF-8 (the file is text)"
                raise _malformed(file, problem, root.parent, number) from None
            if "\0" in line:  # no path holds one: name this line, not the PNG path it spoils
                problem = f"NUL character at position {line.index(chr(0)) + 1} (the file is text; no path holds one)"
                raise _malformed(file, problem, root.parent, number)
            if line.strip():
                yield file, number, line


def read_metadata(root: Path) -> list[tuple[Path, int]]:
    """(image path, label) per metadata line under root = <data_dir>/curv_contour_length_14. Blank lines are
    skipped; labels are the ASCII digits 0 or 1."""
    samples = []
    for file, number, line in metadata_lines(root):
        fields = line.split()
        if len(fields) < 4 or fields[3] not in ("0", "1"):
            problem = f"{line[:80]!r} is not 'imgs/<k> <png> <i> <0|1> ...' (label 0 or 1 fourth)"
            raise _malformed(file, problem, root.parent, number)
        samples.append((root / fields[0] / fields[1], int(fields[3])))
    return samples


def listed_at(path: Path, root: Path) -> str:
    """`<metadata file>:<line>` of the first line that lists an image: a listed image that is not there may be a lost
    file or a damaged line, so the error names both. Only called for that error, so re-reading the metadata is fine."""
    for file, number, line in metadata_lines(root):
        fields = line.split()
        if len(fields) >= 2 and root / fields[0] / fields[1] == path:
            return f"{file}:{number}"
    return str(root / "metadata")


def read_image(path: Path, resolution: int, data_dir: Path) -> np.ndarray | None:
    """Grayscale pixels uint8 [resolution ** 2]; None for an empty file. data_dir: the folder the run reads."""
    try:
        if path.stat().st_size == 0:
            return None
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        problem = f"unreadable image (missing or not a file; listed at {listed_at(path, data_dir / DIFFICULTY)})"
        raise _malformed(path, problem, data_dir) from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL reports broken PNG chunks as SyntaxError
        raise _malformed(path, f"unreadable image ({error})", data_dir) from error
    if pixels.shape != (resolution, resolution):
        problem = f"image is {pixels.shape[1]}x{pixels.shape[0]}, expected {resolution}x{resolution}"
        raise _malformed(path, problem, data_dir)
    return pixels.reshape(-1)


def _malformed(path: Path, problem: str, data_dir: Path, line: int | None = None) -> MalformedDataError:
    return MalformedDataError(WHAT, path, MAKE_TARGET, problem, line=line, data_dir=data_dir)


class NormalisedPixels:
    """uint8 pixel rows [N, P] served as values [P, 1] float32, Normalize(mean 0.5, std 0.5) of intensity / 255, so
    memory and cache stay one byte a pixel."""

    def __init__(self, pixels: Tensor) -> None:
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> Tensor:
        return (self.pixels[index].float() / 255 - 0.5).div_(0.5)[:, None]


def decode_images(samples: list[tuple[Path, int]], resolution: int, data_dir: Path) -> dict[str, Tensor]:
    """pixels uint8 [N, resolution ** 2] and labels int64 [N], empty images left out. PIL decodes outside the GIL,
    so threads parallelise it. data_dir: the folder the run reads, for the error a damaged image raises."""
    pixels = np.empty((len(samples), resolution * resolution), dtype=np.uint8)
    keep = np.ones(len(samples), dtype=bool)
    read = partial(read_image, resolution=resolution, data_dir=data_dir)
    with ThreadPoolExecutor(min(32, os.cpu_count() or 1)) as pool:
        images = pool.map(read, [path for path, _ in samples], chunksize=256)
        for i, image in enumerate(tqdm(images, total=len(samples), desc=f"decoding pathfinder{resolution}")):
            if image is None:
                keep[i] = False
            else:
                pixels[i] = image
    if not keep.all():
        empty = [str(samples[i][0]) for i in np.flatnonzero(~keep)]
        log.warning("skipped %d empty images: %s", len(empty), ", ".join(empty[:5]))
        pixels = pixels[keep]
    labels = np.array([label for _, label in samples], dtype=np.int64)[keep]
    return {"pixels": torch.from_numpy(pixels), "labels": torch.from_numpy(labels)}


class PathfinderDataModule(LRADataModule):
    """Batches: inputs [B, resolution ** 2, 1] float32 normalised pixels (tokenize=False) or [B, resolution ** 2]
    int64 pixel ids (tokenize=True), mask all True, labels [B] in {0, 1}. `resolution=None` selects the task's own
    (class attribute default_resolution)."""

    num_classes = 2
    default_resolution = 32

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 32,
        resolution: int | None = None,
        tokenize: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, pin_memory, cache_dir)
        self.resolution = self.default_resolution if resolution is None else resolution
        self.tokenize = tokenize

    @property
    def vocab_size(self) -> int | None:
        return PIXEL_VOCAB_SIZE if self.tokenize else None

    @property
    def input_dim(self) -> int | None:
        return None if self.tokenize else 1

    @property
    def max_length(self) -> int:
        return self.resolution**2

    def read_splits(self) -> dict[str, Dataset]:
        root = self.data_dir / DIFFICULTY
        if not root.is_dir():
            raise DataNotFoundError(WHAT, root, MAKE_TARGET, "no such directory", data_dir=self.data_dir)
        samples = read_metadata(root)
        # Image directories, not 200k images: extracting or deleting files changes their mtime.
        sources = [*(root / "metadata").glob("*.npy"), *(p for p in (root / "imgs").glob("*") if p.is_dir())]
        tensors = load_or_build(
            self.cache_dir,
            f"pathfinder{self.resolution}",
            sources,
            {"resolution": self.resolution, "difficulty": DIFFICULTY},
            lambda: decode_images(samples, self.resolution, self.data_dir),
        )
        inputs = PixelTokens(tensors["pixels"]) if self.tokenize else NormalisedPixels(tensors["pixels"])
        dataset = ColumnDataset(inputs=inputs, labels=tensors["labels"])
        train, val, test = held_out_split(len(dataset), HELD_OUT)
        return {"train": Subset(dataset, train), "val": Subset(dataset, val), "test": Subset(dataset, test)}


class PathXDataModule(PathfinderDataModule):
    """Path-X: Pathfinder at 128 x 128, sequences of 16384 pixels."""

    default_resolution = 128
