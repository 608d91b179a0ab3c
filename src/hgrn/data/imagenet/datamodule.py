"""ImageNet-1K (or any set in its layout) for the DeiT recipe: timm's transforms, the project's rank-aware loaders.

Batches are dicts: inputs [B, 3, H, W] float32 (normalised with the ImageNet mean and std), labels [B] int64. The
training loader repeats augmentations under DDP and serves full batches only (hgrn.data.imagenet.sampler); validation
and test both read the `val` split (ImageNet's validation set, which DeiT reports), each example once over all ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.auto_augment import posterize as timm_posterize
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from hgrn.data.errors import MalformedDataError
from hgrn.data.imagenet.layout import SOURCES, detect_source, folder_samples, hf_num_classes, load_hf_split
from hgrn.data.imagenet.sampler import RepeatedAugmentationSampler
from hgrn.data.sampler import ResumableDataLoader, ShardBatchSampler, distributed_position, run_seed, sharded_loader

Transform = Callable[[Image.Image], Tensor]
SMALL_IMAGE = 32  # DeiT's build_transform: inputs this small are not resized (CIFAR-style crops, see train_transform)


def train_transform(
    image_size: int,
    auto_augment: str | None,
    color_jitter: float,
    re_prob: float,
    re_mode: str,
    re_count: int,
    interpolation: str,
) -> Transform:
    """DeiT's training transform, timm.data.create_transform(is_training=True): RandomResizedCrop, flip,
    RandAugment, colour jitter (ignored by timm when auto_augment is set), normalisation, random erasing; -> [3, H, W].
    At image_size <= 32 DeiT replaces the RandomResizedCrop by RandomCrop(image_size, padding=4), as here."""
    transform = create_transform(
        input_size=image_size,
        is_training=True,
        color_jitter=color_jitter,
        auto_augment=auto_augment,
        interpolation=interpolation,
        re_prob=re_prob,
        re_mode=re_mode,
        re_count=re_count,
    )
    if image_size <= SMALL_IMAGE:
        transform.transforms[0] = transforms.RandomCrop(image_size, padding=4)
    for step in transform.transforms:
        for op in getattr(step, "ops", ()):  # RandAugment's operations
            if op.name == "PosterizeIncreasing":
                op.aug_fn = posterize_down_to_zero_bits
    return transform


def posterize_down_to_zero_bits(image: Image.Image, bits_to_keep: int, **options: Any) -> Image.Image:
    """timm's posterize as it ran under the Pillow of the official runs: keeping 0 bits gives a black image.

    RandAugment's increasing posterize keeps 4 - int(4 level / 10) bits, 0 at magnitude 10, which the magnitude noise
    of rand-m9-mstd0.5 reaches; Pillow 13 refuses 0 bits (ValueError in a loader worker, ending the run), where the
    Pillow of DeiT's time returned the image with every bit masked off.
    """
    if bits_to_keep <= 0:
        return Image.new(image.mode, image.size)
    return timm_posterize(image, bits_to_keep, **options)


def eval_transform(image_size: int, interpolation: str, crop_pct: float) -> Transform:
    """DeiT's evaluation transform: Resize(image_size / crop_pct) and CenterCrop(image_size) (timm's, with crop_pct
    0.875: 256 -> 224), then normalisation. At image_size <= 32 DeiT does not resize: the image is only cut (or
    padded) to image_size at its centre, a no-op on images of that size."""
    if image_size <= SMALL_IMAGE:
        return transforms.Compose(
            [
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
            ]
        )
    return create_transform(input_size=image_size, is_training=False, interpolation=interpolation, crop_pct=crop_pct)


class FolderImages(Dataset):
    """(path, label) samples of an ImageFolder split -> {'inputs': [3, H, W], 'labels': int}."""

    def __init__(self, samples: list[tuple[str, int]], transform: Transform, make_target: str, root: Path) -> None:
        self.samples, self.transform, self.make_target, self.root = samples, transform, make_target, root

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except OSError as error:
            raise MalformedDataError("an image", path, self.make_target, str(error), data_dir=self.root) from None
        return {"inputs": self.transform(rgb), "labels": label}


class HFImages(Dataset):
    """A Hugging Face image dataset (columns image, label) -> {'inputs': [3, H, W], 'labels': int}."""

    def __init__(self, dataset: Any, transform: Transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.dataset[index]
        return {"inputs": self.transform(row["image"].convert("RGB")), "labels": int(row["label"])}


class ImageNetDataModule(L.LightningDataModule):
    """ImageNet-1K in the ImageFolder layout or a local Hugging Face copy (`source`: auto | folder | hf), or any
    set laid out the same way (the packaged Fashion-MNIST of `make data-fashion-mnist`).

    num_classes: the classes the head predicts; the data must have exactly these (known before any data is read).
    image_size: the side of the square crops the model sees.
    auto_augment, color_jitter, re_prob, re_mode, re_count, interpolation: timm's create_transform arguments (DeiT:
        rand-m9-mstd0.5-inc1, 0.4 in the HGRN runs, 0.25, pixel, 1, bicubic); crop_pct: evaluation crop (0.875).
    repeats: repeated augmentation (DeiT's RASampler, 3), under DDP only, as DeiT's main.py, unless
        repeat_on_one_process.
    make_target: the make target the data errors name.
    """

    def __init__(
        self,
        data_dir: str | Path,
        num_classes: int = 1000,
        image_size: int = 224,
        batch_size: int = 128,
        source: str = "auto",
        num_workers: int = 8,
        pin_memory: bool = True,
        auto_augment: str | None = "rand-m9-mstd0.5-inc1",
        color_jitter: float = 0.4,
        re_prob: float = 0.25,
        re_mode: str = "pixel",
        re_count: int = 1,
        interpolation: str = "bicubic",
        crop_pct: float = 0.875,
        repeats: int = 3,
        repeat_on_one_process: bool = False,
        cache_dir: str | Path | None = None,
        make_target: str = "data-imagenet",
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source={source!r} is not known; choose one of {SOURCES}")
        self.data_dir = Path(data_dir)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.data_dir / "cache"
        self.num_classes, self.image_size, self.batch_size = num_classes, image_size, batch_size
        self.source, self.num_workers, self.pin_memory = source, num_workers, pin_memory
        self.train_tf = train_transform(
            image_size, auto_augment, color_jitter, re_prob, re_mode, re_count, interpolation
        )
        self.eval_tf = eval_transform(image_size, interpolation, crop_pct)
        self.repeats, self.repeat_on_one_process = repeats, repeat_on_one_process
        self.make_target = make_target
        self.splits: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = {"train": self._read("train", self.train_tf), "val": self._read("val", self.eval_tf)}

    def _read(self, split: str, transform: Transform) -> Dataset:
        source = detect_source(self.data_dir, self.make_target) if self.source == "auto" else self.source
        if source == "folder":
            classes, samples = folder_samples(self.data_dir, split, self.make_target)
            self._check_classes(len(classes), self.data_dir / split)
            return FolderImages(samples, transform, self.make_target, self.data_dir)
        dataset = load_hf_split(self.data_dir, split, self.make_target, self.cache_dir)
        self._check_classes(hf_num_classes(dataset), self.data_dir)
        return HFImages(dataset, transform)

    def _check_classes(self, found: int, where: Path) -> None:
        if found != self.num_classes:
            raise MalformedDataError(
                "the image classes",
                where,
                self.make_target,
                f"{found} classes, and the run expects data.num_classes={self.num_classes}",
                data_dir=self.data_dir,
            )

    def train_dataloader(self) -> DataLoader:
        rank, world = distributed_position()
        repeats = self.repeats if world > 1 or self.repeat_on_one_process else 1
        seed = run_seed()
        sampler = RepeatedAugmentationSampler(
            len(self._split("train")), self.batch_size, repeats=repeats, seed=seed, rank=rank, world_size=world
        )
        return ResumableDataLoader(
            self._split("train"),
            ShardBatchSampler(sampler),
            generator=torch.Generator().manual_seed(seed),
            **self._loader_options(),
        )

    def val_dataloader(self) -> DataLoader:
        return sharded_loader(self._split("val"), self.batch_size, shuffle=False, **self._loader_options())

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def _split(self, split: str) -> Dataset:
        if not self.splits:
            raise RuntimeError(f"call setup() before asking {type(self).__name__} for the {split} loader")
        return self.splits[split]

    def _loader_options(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
        }
