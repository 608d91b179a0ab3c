"""LRA Image: CIFAR-10 classified from its 1024 pixels in raster order, read from torchvision's on-disk format.

Reads `<data_dir>/cifar-10-batches-py/` (data_batch_1..5, test_batch, batches.meta), which `make data-lra` fetches
with torchvision; nothing is downloaded at run time. Two variants:

- grayscale=True, the standard LRA task: intensities from tf.image.rgb_to_grayscale, as LRA computes them, used as
  tokens (id = intensity + 1, vocab_size 257): inputs [B, 1024] int64.
- grayscale=False, what the official HGRN2 Image run used (`dataset.grayscale=false dataset.augment=true`): RGB in
  [0, 1] normalised with s4's CIFAR-10 channel statistics: inputs [B, 1024, 3] float32, input_dim 3.

augment=True adds s4's training augmentation (random crop of the image padded by 4 symmetric pixels, horizontal
flip) to the training split only; s4 splits an augmented training set, so its validation images are augmented too.
Split: 45k / 5k / 10k as LRA, the 5k validation images drawn as s4 draws them (random_split of the 50k training
images, seed 42; LRA takes the last 10%), the 10k test batch as test.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10
from torchvision.transforms import v2

from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.lra.datamodule import MAKE_TARGET, LRADataModule, held_out_split
from hgrn.data.lra.tokens import PIXEL_VOCAB_SIZE, pixel_ids

WHAT = "LRA Image (CIFAR-10 python batches)"
SIDE = 32
VAL_FRACTION = 0.1
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)  # tf.image.rgb_to_grayscale
RGB_MEAN = torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]  # s4 src/dataloaders/basic.py
RGB_STD = torch.tensor([0.247, 0.243, 0.261])[:, None, None]


class CIFAR10Files(CIFAR10):
    """torchvision's reader with existence checks only: checksums are checked once by `download verify`, and would
    reject the miniature test fixtures."""

    train_list: ClassVar = [[name, None] for name, _ in CIFAR10.train_list]
    test_list: ClassVar = [[name, None] for name, _ in CIFAR10.test_list]
    meta: ClassVar = {**CIFAR10.meta, "md5": None}


def read_cifar(data_dir: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 32, 32, 3] and labels int64 [N] of the training (50k) or test (10k) batches."""
    folder = data_dir / CIFAR10.base_folder
    names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    for name in names:
        if not (folder / name).is_file():
            raise DataNotFoundError(WHAT, folder, MAKE_TARGET, f"no {name}", data_dir=data_dir)
    try:
        cifar = CIFAR10Files(str(data_dir), train=train)
    except Exception as error:  # a damaged pickle runs damaged opcodes: any exception (TypeError, LookupError, ...)
        name = first_unreadable_batch(folder, names)
        path = folder / name if name else folder
        problem = f"unreadable batch ({type(error).__name__}: {str(error)[:200]})"  # a repr can quote megabytes
        raise MalformedDataError(WHAT, path, MAKE_TARGET, problem, data_dir=data_dir) from error
    if len(cifar.targets) != len(cifar.data):
        detail = f"{len(cifar.data)} images but {len(cifar.targets)} labels"
        raise MalformedDataError(WHAT, folder, MAKE_TARGET, detail, data_dir=data_dir)
    wrong = next((label for label in cifar.targets if not is_label(label)), None)
    if wrong is not None:
        detail = f"label {wrong!r} is not a whole number 0-9"
        raise MalformedDataError(WHAT, folder, MAKE_TARGET, detail, data_dir=data_dir)
    return cifar.data, np.asarray(cifar.targets, dtype=np.int64)


def is_label(value: object) -> bool:
    """A CIFAR-10 class: an integer 0-9. Not a string: numpy would read '3' (and '٣') as 3."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and 0 <= value <= 9


def first_unreadable_batch(folder: Path, names: list[str]) -> str | None:
    """The first batch file that does not unpickle to a dict with images, to name it in the error; None if all do."""
    for name in names:
        try:
            with (folder / name).open("rb") as f:
                batch = pickle.load(f, encoding="latin1")
            if not isinstance(batch, dict) or not ("data" in batch or "label_names" in batch):
                return name
        except Exception:  # whatever unpickling raises, this file is the one to name
            return name
    return None


def to_grayscale(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> uint8 [...] as tf.image.rgb_to_grayscale: weighted sum in [0, 1], times 255.5, truncated."""
    return ((rgb.astype(np.float32) / 255) @ GRAY_WEIGHTS * 255.5).astype(np.uint8)


class PixelImageDataset(Dataset):
    """uint8 images [N, C, 32, 32]; one channel becomes token ids [1024], three become normalised values [1024, 3]."""

    def __init__(self, images: Tensor, labels: Tensor, augment: bool) -> None:
        self.images, self.labels = images, labels
        self.augment = (
            v2.Compose([v2.RandomCrop(SIDE, padding=4, padding_mode="symmetric"), v2.RandomHorizontalFlip()])
            if augment
            else None
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image = self.images[index]
        if self.augment is not None:
            image = self.augment(image)
        if image.shape[0] == 1:
            inputs = pixel_ids(image.flatten())
        else:
            inputs = ((image.float() / 255 - RGB_MEAN) / RGB_STD).flatten(1).T.contiguous()
        return {"inputs": inputs, "labels": self.labels[index]}


class CIFAR10DataModule(LRADataModule):
    """Batches: inputs [B, 1024] int64 pixel ids (grayscale) or [B, 1024, 3] float32 (RGB), mask [B, 1024] all True,
    labels [B] in 0..9."""

    num_classes = 10

    def __init__(
        self,
        data_dir: str | Path,
        batch_size: int = 32,
        grayscale: bool = True,
        augment: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, pin_memory)
        self.grayscale = grayscale
        self.augment = augment

    @property
    def vocab_size(self) -> int | None:
        return PIXEL_VOCAB_SIZE if self.grayscale else None

    @property
    def input_dim(self) -> int | None:
        return None if self.grayscale else 3

    @property
    def max_length(self) -> int:
        return SIDE * SIDE

    def prepare_data(self) -> None:
        """Nothing to build: the batches are read directly."""

    def read_splits(self) -> dict[str, Dataset]:
        train_images, train_labels = read_cifar(self.data_dir, train=True)
        test_images, test_labels = read_cifar(self.data_dir, train=False)
        train_idx, val_idx = held_out_split(len(train_labels), [VAL_FRACTION])
        return {
            "train": self._dataset(train_images[train_idx], train_labels[train_idx], self.augment),
            "val": self._dataset(train_images[val_idx], train_labels[val_idx], False),
            "test": self._dataset(test_images, test_labels, False),
        }

    def _dataset(self, images: np.ndarray, labels: np.ndarray, augment: bool) -> PixelImageDataset:
        channels = to_grayscale(images)[..., None] if self.grayscale else images
        chw = torch.from_numpy(np.ascontiguousarray(channels.transpose(0, 3, 1, 2)))
        return PixelImageDataset(chw, torch.from_numpy(labels), augment)
