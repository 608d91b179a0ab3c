"""LRA Image (CIFAR-10 from torchvision's python batches): grayscale tokens and the RGB + augmentation variant."""

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hgrn.data.errors import DataNotFoundError
from hgrn.data.lra.datamodule import held_out_split
from hgrn.data.lra.image import RGB_MEAN, RGB_STD, CIFAR10DataModule, to_grayscale
from hgrn.data.lra.tokens import PIXEL_VOCAB_SIZE

CIFAR = Path(__file__).parents[1] / "fixtures" / "lra" / "image" / "cifar10"
BATCHES = CIFAR / "cifar-10-batches-py"


def fixture_test_batch() -> dict:
    with (BATCHES / "test_batch").open("rb") as f:
        return pickle.load(f, encoding="latin1")


def test_grayscale_is_tensorflows_rgb_to_grayscale() -> None:
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]], dtype=np.uint8)
    assert to_grayscale(colours).tolist() == [76, 149, 29, 255, 0]


def test_grayscale_variant_is_1024_pixel_tokens() -> None:
    module = CIFAR10DataModule(CIFAR, batch_size=4)
    module.setup()
    assert (module.vocab_size, module.input_dim, module.num_classes, module.max_length) == (
        PIXEL_VOCAB_SIZE,
        None,
        10,
        1024,
    )
    assert {split: len(d) for split, d in module.splits.items()} == {"train": 18, "val": 2, "test": 4}
    batch = next(iter(module.test_dataloader()))
    assert batch["inputs"].shape == (4, 1024) and batch["inputs"].dtype == torch.long
    assert batch["mask"].all()
    assert (batch["inputs"][0] == 256).all()  # white: intensity 255 -> token 256
    assert (batch["inputs"][1] == 150).all()  # pure green: intensity 149 -> token 150
    assert batch["labels"].tolist() == fixture_test_batch()["labels"]
    assert int(batch["inputs"].min()) >= 1 and int(batch["inputs"].max()) < PIXEL_VOCAB_SIZE


def test_rgb_variant_is_1024_normalised_pixels_in_raster_order() -> None:
    module = CIFAR10DataModule(CIFAR, batch_size=4, grayscale=False, augment=True)
    module.setup()
    assert (module.vocab_size, module.input_dim) == (None, 3)
    batch = next(iter(module.test_dataloader()))
    assert batch["inputs"].shape == (4, 1024, 3) and batch["inputs"].dtype == torch.float32
    image = torch.from_numpy(fixture_test_batch()["data"][2].reshape(3, 32, 32))
    expected = ((image.float() / 255 - RGB_MEAN) / RGB_STD).permute(1, 2, 0).reshape(1024, 3)
    torch.testing.assert_close(batch["inputs"][2], expected)  # test images are never augmented


def test_augmentation_touches_training_images_only() -> None:
    torch.manual_seed(0)
    module = CIFAR10DataModule(CIFAR, grayscale=False, augment=True)
    module.setup()
    train, val = module.splits["train"], module.splits["val"]
    assert not all(torch.equal(train[0]["inputs"], train[0]["inputs"]) for _ in range(10))
    assert all(torch.equal(val[0]["inputs"], val[0]["inputs"]) for _ in range(10))


def test_validation_split_is_seeded_and_disjoint() -> None:
    train, val = held_out_split(50_000, [0.1])
    assert (len(train), len(val)) == (45_000, 5_000)
    assert not set(train) & set(val) and held_out_split(50_000, [0.1]) == [train, val]
    a = CIFAR10DataModule(CIFAR)
    a.setup()
    b = CIFAR10DataModule(CIFAR)
    b.setup()
    assert all(torch.equal(a.splits["val"][i]["inputs"], b.splits["val"][i]["inputs"]) for i in range(2))


def test_missing_batch_names_directory_and_make_target(tmp_path: Path) -> None:
    shutil.copytree(CIFAR, tmp_path / "cifar10")
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="no data_batch_3") as error:
        CIFAR10DataModule(tmp_path / "cifar10").setup()
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in str(error.value)
    assert "make data-lra" in str(error.value)


def test_truncated_batch_raises_data_not_found(tmp_path: Path) -> None:
    shutil.copytree(CIFAR, tmp_path / "cifar10")
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataNotFoundError, match=r"data_batch_1: unreadable batch .*Fix or replace data_batch_1, "):
        CIFAR10DataModule(tmp_path / "cifar10").setup()
