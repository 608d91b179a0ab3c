"""The LRA download CLI without network: unpacking a fake release archive, verifying trees against the manifest,
resuming downloads from a loopback server, and clear failures when offline."""

import http.server
import shutil
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from hgrn.data.lra import download
from hgrn.data.lra.download import DownloadError, fetch_cifar10, fetch_huggingface, main, unpack
from hgrn.data.lra.manifest import load_manifest, verify
from hgrn.data.lra.retrieval import AANDataModule

FIXTURES = Path(__file__).parents[1] / "fixtures" / "lra"
ARCHIVE_TASKS = ["listops", "retrieval", "pathfinder", "pathx"]


@pytest.fixture(scope="module")
def manifest() -> dict:
    return load_manifest()


def archive_members(manifest: dict, tasks: list[str]) -> dict[str, str]:
    return {source: target for task in tasks for source, target in manifest["tasks"][task]["unpack"].items()}


def make_release(path: Path, truncate: bool = False) -> Path:
    """A miniature lra_release.gz: the release's folders under lra_release/, plus ones the manifest skips."""
    listops = path.parent / "listops-1000"
    listops.mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        (listops / f"basic_{split}.tsv").write_text("Source\tTarget\n( [MAX 2 9 ] )\t9\n")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(listops, "lra_release/listops-1000")
        tar.add(FIXTURES / "retrieval" / "aan", "lra_release/tsv_data")
        tar.add(FIXTURES / "pathfinder" / "pathfinder32", "lra_release/pathfinder32")
        tar.add(
            FIXTURES / "pathfinder" / "pathfinder32" / "curv_contour_length_14",
            "lra_release/pathfinder32/curv_baseline",
        )
        tar.add(FIXTURES / "pathx" / "pathfinder128", "lra_release/pathfinder128")
        tar.add(FIXTURES / "pathfinder" / "pathfinder32", "lra_release/pathfinder64")
    if truncate:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_unpack_lays_out_what_the_loaders_read(tmp_path: Path, manifest: dict) -> None:
    archive = make_release(tmp_path / "lra_release.gz")
    root = tmp_path / "lra"
    unpack(archive, root, archive_members(manifest, ARCHIVE_TASKS))
    assert sorted(p.name for p in root.iterdir()) == ["aan", "listops", "pathfinder128", "pathfinder32"]
    assert [p.name for p in (root / "pathfinder32").iterdir()] == ["curv_contour_length_14"]  # not curv_baseline
    assert verify(root, manifest, ARCHIVE_TASKS) == []
    module = AANDataModule(root / "aan", cache_dir=tmp_path / "cache")
    module.setup()
    assert len(module.splits["train"]) == 4


def test_verify_names_the_missing_file(tmp_path: Path, manifest: dict, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "lra"
    unpack(make_release(tmp_path / "lra_release.gz"), root, archive_members(manifest, ARCHIVE_TASKS))
    (root / "aan" / "new_aan_pairs.eval.tsv").unlink()
    shutil.rmtree(root / "pathfinder128" / "curv_contour_length_14" / "imgs")
    problems = verify(root, manifest, ARCHIVE_TASKS)
    assert problems == [
        f"retrieval: missing {root / 'aan' / 'new_aan_pairs.eval.tsv'}",
        f"pathx: 0 files match {root / 'pathfinder128/curv_contour_length_14/imgs/*/*.png'}, expected 1+",
    ]
    assert main(["verify", "--root", str(root), "--tasks", "retrieval"]) == 1
    err = capsys.readouterr().err
    assert "new_aan_pairs.eval.tsv" in err and "make data-lra" in err


def test_verify_checks_text_layout_and_cifar_checksums(tmp_path: Path, manifest: dict) -> None:
    root = tmp_path / "lra"
    shutil.copytree(FIXTURES / "text" / "imdb", root / "imdb")
    shutil.copytree(FIXTURES / "image" / "cifar10", root / "cifar10")
    assert verify(root, manifest, ["text"]) == []
    problems = verify(root, manifest, ["image"])
    assert len(problems) == 7  # the fixture batches are not the real CIFAR-10
    assert problems[0].startswith(f"image: {root / 'cifar10/cifar-10-batches-py/data_batch_1'} has md5")


def test_unpack_leaves_existing_directories_alone(tmp_path: Path, manifest: dict) -> None:
    root = tmp_path / "lra"
    (root / "listops").mkdir(parents=True)
    (root / "listops" / "generated.txt").write_text("made by make data-listops")
    unpack(make_release(tmp_path / "lra_release.gz"), root, archive_members(manifest, ARCHIVE_TASKS))
    assert [p.name for p in (root / "listops").iterdir()] == ["generated.txt"]
    assert (root / "aan" / "new_aan_pairs.train.tsv").is_file()


def test_truncated_archive_fails_and_unpacks_nothing(tmp_path: Path, manifest: dict) -> None:
    root = tmp_path / "lra"
    with pytest.raises(DownloadError, match="damaged or truncated"):
        unpack(make_release(tmp_path / "lra_release.gz", truncate=True), root, archive_members(manifest, ARCHIVE_TASKS))
    assert sorted(p.name for p in root.iterdir()) == [".unpack"]  # only the staging area, cleared on the next run
    unpack(make_release(tmp_path / "lra_release.gz"), root, archive_members(manifest, ARCHIVE_TASKS))
    assert verify(root, manifest, ARCHIVE_TASKS) == [] and not (root / ".unpack").exists()


def test_cli_unpacks_an_archive_placed_by_hand(tmp_path: Path) -> None:
    root = tmp_path / "lra"
    root.mkdir()
    make_release(root / "lra_release.gz")
    assert main(["--root", str(root), "--tasks", *ARCHIVE_TASKS]) == 0
    assert (root / "pathfinder128" / "curv_contour_length_14" / "metadata" / "0.npy").is_file()


PAYLOAD = bytes(range(256)) * 40


class RangeHandler(http.server.BaseHTTPRequestHandler):
    ranges: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        requested = self.headers.get("Range")
        self.ranges.append(requested)
        start = int(requested.removeprefix("bytes=").rstrip("-")) if requested else 0
        self.send_response(206 if requested else 200)
        if requested:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        self.wfile.write(PAYLOAD[start:])

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.ranges = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/lra_release.gz"
    httpd.shutdown()
    httpd.server_close()


def test_download_resumes_a_partial_file(tmp_path: Path, server: str) -> None:
    dest = tmp_path / "lra_release.gz"
    (tmp_path / "lra_release.gz.part").write_bytes(PAYLOAD[:1000])
    download.download(server, dest)
    assert dest.read_bytes() == PAYLOAD and RangeHandler.ranges == ["bytes=1000-"]
    assert not (tmp_path / "lra_release.gz.part").exists()


def test_download_rejects_a_size_the_manifest_does_not_expect(tmp_path: Path, server: str) -> None:
    dest = tmp_path / "lra_release.gz"
    with pytest.raises(DownloadError, match="manifest expects 5"):
        download.download(server, dest, size=5)
    assert not dest.exists() and not (tmp_path / "lra_release.gz.part").exists()
    download.download(server, dest, size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and RangeHandler.ranges == [None, None]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/lra_release.gz"


def test_offline_download_says_where_to_put_the_file(tmp_path: Path) -> None:
    dest = tmp_path / "lra_release.gz"
    with pytest.raises(DownloadError, match="looks offline") as error:
        download.download(closed_port_url(), dest)
    assert str(dest) in str(error.value)


def test_offline_hugging_face_fetch_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HF_DATASETS_OFFLINE=0") as error:
        fetch_huggingface(tmp_path / "imdb", "hgrn-tests/no-such-dataset", ["train", "test"])
    assert str(tmp_path / "imdb") in str(error.value) and not (tmp_path / "imdb").exists()


def test_offline_cifar_fetch_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download.CIFAR10, "url", closed_port_url())
    with pytest.raises(DownloadError, match="looks offline") as error:
        fetch_cifar10(tmp_path / "cifar10")
    assert "cifar-10-batches-py" in str(error.value)


def test_offline_cli_reports_every_source_it_could_not_fetch(
    tmp_path: Path, manifest: dict, capsys: pytest.CaptureFixture
) -> None:
    offline = {**manifest, "sources": {**manifest["sources"]}}
    offline["sources"]["lra_release"] = {**manifest["sources"]["lra_release"], "url": closed_port_url()}
    offline["sources"]["imdb"] = {**manifest["sources"]["imdb"], "dataset": "hgrn-tests/no-such-dataset"}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(offline))
    assert main(["--root", str(tmp_path / "lra"), "--manifest", str(path), "--tasks", "text", "retrieval"]) == 1
    err = capsys.readouterr().err
    assert "HF_DATASETS_OFFLINE=0" in err and f"put it at {tmp_path / 'lra' / 'lra_release.gz'}" in err
