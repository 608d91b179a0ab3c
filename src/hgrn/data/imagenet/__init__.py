"""ImageNet-1K for the DeiT recipe (ImageFolder layout or a local Hugging Face copy), the sets in its layout that
ship inside packages (hgrn.data.imagenet.packaged), and `python -m hgrn.data.imagenet verify | fetch`."""

from hgrn.data.imagenet.datamodule import ImageNetDataModule, eval_transform, train_transform
from hgrn.data.imagenet.sampler import RepeatedAugmentationSampler

__all__ = ["ImageNetDataModule", "RepeatedAugmentationSampler", "eval_transform", "train_transform"]
