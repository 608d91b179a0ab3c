"""ImageNet data: both layouts read alike, verify names what is missing in one line, missing or malformed data is one
clear line naming the make target, timm's transforms, and the repeated-augmentation sampler against timm's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.distributed_sampler import RepeatAugSampler

from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.imagenet import ImageNetDataModule, RepeatedAugmentationSampler, train_transform
from hgrn.data.imagenet import __main__ as cli
from hgrn.data.imagenet import sampler as ra_sampler
from hgrn.data.imagenet.datamodule import posterize_down_to_zero_bits
from hgrn.data.imagenet.layout import ExpectedCounts, check_counts, inventory
from tests.data.imagenet_folder import CLASSES, write_random_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_folder(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def hf_copies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same kind of images as a Hugging Face save_to_disk folder and as the hub's parquet shards."""
    import datasets

    rng = np.random.default_rng(1)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))})
    splits = {}
    for split, per_class in (("train", 4), ("validation", 2)):
        labels = [label for label in range(len(CLASSES)) for _ in range(per_class)]
        images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in labels]
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    root = tmp_path_factory.mktemp("hf")
    datasets.DatasetDict(splits).save_to_disk(str(root / "save_to_disk"))
    for split, dataset in splits.items():
        dataset.to_parquet(str(root / "parquet" / "data" / f"{split}-00000-of-00001.parquet"))
    return {"save_to_disk": root / "save_to_disk", "parquet": root / "parquet"}


def loaded(data_dir: Path, **options) -> ImageNetDataModule:
    settings = {"num_classes": len(CLASSES), "image_size": 32, "batch_size": 4, "num_workers": 0, "pin_memory": False}
    datamodule = ImageNetDataModule(data_dir, **{**settings, **options})
    datamodule.setup("fit")
    return datamodule


def test_folder_batches_are_normalised_crops_with_labels(folder):
    datamodule = loaded(folder)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["inputs"].shape == (4, 3, 32, 32) and batch["inputs"].dtype == torch.float32
    assert batch["labels"].dtype == torch.int64 and set(batch["labels"].tolist()) <= set(range(len(CLASSES)))
    val = [b["labels"] for b in datamodule.val_dataloader()]
    assert torch.cat(val).tolist() == [label for label in range(len(CLASSES)) for _ in range(4)]  # every image once


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_hugging_face_copies_read_like_the_folder(layout, hf_copies, tmp_path):
    datamodule = loaded(hf_copies[layout], image_size=40, cache_dir=tmp_path)
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["inputs"].shape == (4, 3, 40, 40)
    assert len(datamodule.splits["train"]) == 16 and len(datamodule.splits["val"]) == 8
    assert inventory(hf_copies[layout]).per_class["val"] == {str(label): 2 for label in range(len(CLASSES))}


def test_timm_transforms_of_the_deit_recipe():
    datamodule = ImageNetDataModule("unused", image_size=224)
    names = [type(t).__name__ for t in datamodule.train_tf.transforms]
    assert names[:3] == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "RandAugment"]
    assert names[-1] == "RandomErasing" and datamodule.train_tf.transforms[-1].probability == 0.25
    resize, crop = datamodule.eval_tf.transforms[:2]
    assert resize.size == 256 and crop.size == (224, 224)  # crop 0.875
    small = ImageNetDataModule("unused", image_size=28).train_tf.transforms[0]
    assert type(small).__name__ == "RandomCrop" and small.padding == 4  # DeiT's path for inputs <= 32


def test_randaugment_at_full_magnitude_posterizes_to_black_as_under_the_old_pillow():
    """Magnitude 10 makes the increasing posterize keep 0 bits, which Pillow 13 refuses; the transform must not."""
    transform = train_transform(32, "rand-m10-n8-inc1", 0.4, 0.0, "pixel", 1, "bicubic")
    image = Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8))
    for _ in range(30):
        assert transform(image).shape == (3, 32, 32)
    black = posterize_down_to_zero_bits(image, 0)
    assert black.mode == "RGB" and not np.asarray(black).any()


def test_verify_names_what_is_missing_in_one_line(folder, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify", "--root", str(folder)])
    line = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and "\n" not in line
    assert "train has 4 of 1000 classes (missing n01494475," in line and "32 of 1,281,167 images" in line
    complete = ExpectedCounts(4, {"train": 32, "val": 16}, CLASSES)
    assert check_counts(inventory(folder), complete) == []
    (folder / "missing").mkdir()
    short = ExpectedCounts(5, {"train": 40, "val": 16}, (*CLASSES, "n09999999"))
    assert check_counts(inventory(folder), short) == [
        "train has 4 of 5 classes (missing n09999999), 32 of 40 images",
        "val has 4 of 5 classes (missing n09999999)",
    ]


def test_missing_data_is_one_line_naming_the_make_target(tmp_path, capsys):
    with pytest.raises(DataNotFoundError, match="make data-imagenet") as error:
        loaded(tmp_path / "absent")
    assert "\n" not in str(error.value)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify", "--root", str(tmp_path / "absent")])
    line = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and line.startswith("error: ") and "make data-imagenet" in line and "\n" not in line


def test_malformed_data_is_one_line(folder, tmp_path):
    flat = write_random_folder(tmp_path / "flat", {"train": 1})
    (flat / "val").mkdir()
    Image.new("RGB", (8, 8)).save(flat / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(MalformedDataError, match=r"lie directly in val/.*one folder per class") as error:
        loaded(flat)
    assert "\n" not in str(error.value)
    with pytest.raises(MalformedDataError, match=r"4 classes, and the run expects data.num_classes=1000"):
        loaded(folder, num_classes=1000, make_target="data-fashion-mnist")
    broken = write_random_folder(tmp_path / "broken", {"train": 2, "val": 1})
    (broken / "train" / CLASSES[0] / f"{CLASSES[0]}_0.JPEG").write_bytes(b"not a jpeg")
    dataset = loaded(broken).splits["train"]
    with pytest.raises(MalformedDataError, match=rf"{CLASSES[0]}_0.JPEG: cannot identify image file"):
        dataset[0]


def test_repeated_augmentation_is_timms_assignment_of_the_same_stream(monkeypatch):
    """With timm's permutation, rank r's indices are exactly timm RepeatAugSampler's for rank r."""
    n, batch, world = 512, 8, 4

    def timm_permutation(num_examples, shuffle, seed, epoch):
        return torch.randperm(num_examples, generator=torch.Generator().manual_seed(epoch)).numpy()

    monkeypatch.setattr(ra_sampler, "epoch_order", timm_permutation)
    for rank in range(world):
        ours = RepeatedAugmentationSampler(n, batch, repeats=3, rank=rank, world_size=world)
        theirs = RepeatAugSampler(range(n), num_replicas=world, rank=rank, num_repeats=3)
        for epoch in (0, 1):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs)


def test_repeated_augmentation_epochs_are_whole_batches_of_repeated_images():
    n, batch, world = 100, 6, 2
    ranks = [RepeatedAugmentationSampler(n, batch, repeats=3, seed=5, rank=r, world_size=world) for r in range(world)]
    served = [ranks[r].batches() for r in range(world)]
    assert all(len(b) == batch for rank in served for b in rank) and len(served[0]) == n // (batch * world)
    stream = np.concatenate([np.concatenate(step) for step in zip(*served, strict=True)])
    counts = np.bincount(stream, minlength=n)
    assert set(counts) <= {0, 1, 2, 3} and counts.sum() == 96  # about a third of the images, three times each
    plain = RepeatedAugmentationSampler(n, batch, repeats=1, seed=5)
    assert len(set(plain)) == len(plain) == 96  # repeats 1: a permutation without its last partial batch
    assert plain.examples_in_steps(3) == 18 and plain.steps_in_examples(18) == 3  # resumable like every ShardSampler
