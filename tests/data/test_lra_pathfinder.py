"""LRA Pathfinder-32 and Path-X-128 on miniature release trees (text metadata in .npy files, PNGs)."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hgrn.data.errors import DataNotFoundError, MalformedDataError
from hgrn.data.lra.pathfinder import DIFFICULTY, PathfinderDataModule, PathXDataModule, read_metadata
from hgrn.data.lra.tokens import PIXEL_VOCAB_SIZE

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lra"
PATHFINDER32 = FIXTURES / "pathfinder" / "pathfinder32"
PATHFINDER128 = FIXTURES / "pathx" / "pathfinder128"


def metadata_labels(root: Path) -> dict[str, int]:
    labels = {}
    for file in (root / DIFFICULTY / "metadata").glob("*.npy"):
        for line in file.read_text().splitlines():
            fields = line.split()
            labels[f"{fields[0]}/{fields[1]}"] = int(fields[3])
    return labels


def test_pathfinder32_reads_metadata_and_pixels(tmp_path: Path) -> None:
    module = PathfinderDataModule(PATHFINDER32, batch_size=4, cache_dir=tmp_path)
    module.setup()
    assert (module.vocab_size, module.input_dim, module.num_classes, module.max_length) == (
        PIXEL_VOCAB_SIZE,
        None,
        2,
        1024,
    )
    # 12 metadata lines, one empty PNG skipped: 11 images split 80/10/10 as int(0.1 * n) = 1
    assert {split: len(d) for split, d in module.splits.items()} == {"train": 9, "val": 1, "test": 1}
    dataset = module.splits["train"].dataset
    first = np.asarray(Image.open(PATHFINDER32 / DIFFICULTY / "imgs" / "0" / "sample_0.png"))
    assert dataset[0]["inputs"].tolist() == (first.reshape(-1).astype(np.int64) + 1).tolist()
    labels = metadata_labels(PATHFINDER32)
    kept = [f"imgs/{k}/sample_{i}.png" for k in (0, 1) for i in range(6) if (k, i) != (0, 2)]
    assert [dataset[j]["labels"].item() for j in range(len(dataset))] == [labels[name] for name in kept]
    batch = next(iter(module.train_dataloader()))
    assert batch["inputs"].shape == (4, 1024) and batch["inputs"].dtype == torch.long and batch["mask"].all()


def test_pathx_is_16384_pixels(tmp_path: Path) -> None:
    module = PathXDataModule(PATHFINDER128, batch_size=2, cache_dir=tmp_path)
    module.setup()
    assert module.max_length == 16384 and module.resolution == 128
    assert {split: len(d) for split, d in module.splits.items()} == {"train": 8, "val": 1, "test": 1}
    batch = next(iter(module.val_dataloader()))
    assert batch["inputs"].shape == (1, 16384)


def test_split_is_seeded_and_covers_every_image(tmp_path: Path) -> None:
    splits = []
    for cache in ("a", "b"):
        module = PathfinderDataModule(PATHFINDER32, cache_dir=tmp_path / cache)
        module.setup()
        splits.append([module.splits[s].indices for s in ("train", "val", "test")])
    assert splits[0] == splits[1]
    assert sorted(i for part in splits[0] for i in part) == list(range(11))


def test_metadata_files_are_read_in_numeric_order(tmp_path: Path) -> None:
    (tmp_path / "metadata").mkdir()
    for k in (10, 2):
        (tmp_path / "metadata" / f"{k}.npy").write_text(f"imgs/{k} sample_0.png 0 {k % 2} 1.0 14\n")
    assert [path.parent.name for path, _ in read_metadata(tmp_path)] == ["2", "10"]


def copy_tree(tmp_path: Path) -> Path:
    copy = tmp_path / "pathfinder32"
    shutil.copytree(PATHFINDER32, copy)
    return copy


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "imgs" / "1" / "sample_3.png").write_bytes(b"not a png"), r"sample_3\.png: unreadable image"),
        (lambda d: (d / "imgs" / "1" / "sample_3.png").unlink(), r"sample_3\.png: unreadable image"),
        (lambda d: Image.new("L", (16, 16)).save(d / "imgs" / "1" / "sample_3.png"), "is 16x16, expected 32x32"),
        (lambda d: (d / "metadata" / "1.npy").write_text("imgs/1 sample_0.png 0\n"), r"metadata/1\.npy:1: "),
        (lambda d: shutil.rmtree(d / "metadata"), "no metadata"),
        (lambda d: shutil.rmtree(d), "no such directory"),
    ],
    ids=["garbage-png", "missing-png", "wrong-size", "short-metadata-line", "no-metadata", "no-directory"],
)
def test_damage_raises_data_not_found_naming_directory_and_next_step(tmp_path: Path, damage, message: str) -> None:
    """A copy outside data/: a damaged file is to be fixed; missing data is to be put there (or data_dir moved)."""
    copy = copy_tree(tmp_path)
    damage(copy / DIFFICULTY)
    with pytest.raises(DataNotFoundError, match=message) as error:
        PathfinderDataModule(copy, cache_dir=tmp_path / "cache").setup()
    assert str(copy) in str(error.value) and "data.data_dir= (or HGRN_DATA_DIR)" in str(error.value)
    if isinstance(error.value, MalformedDataError):
        assert re.search(r"Fix or replace (line 1 of 1\.npy|sample_3\.png), ", str(error.value))
        assert "make" not in str(error.value)
    else:
        assert f"put the data in {copy} or point it at a folder that holds it (`make data-lra`" in str(error.value)


def test_resolution_must_match_the_images(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="expected 32x32"):
        PathfinderDataModule(PATHFINDER128, resolution=32, cache_dir=tmp_path).setup()
