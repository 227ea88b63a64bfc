"""Tests of the raw dataset readers on tiny files built in the real on-disk formats."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import re
import struct
import tarfile
import urllib.error
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets as tvd
from torchvision.datasets import utils as tvu

from common import datasets
from common.datasets import DATASETS, DataError, read_split

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_FASHION_MNIST_DIRS = datasets.FASHION_MNIST_DIRS


@pytest.fixture(autouse=True)
def no_fashion_mnist_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the installed Fashion-MNIST from standing in for the files a test builds or omits,
    and the published md5s from refusing the small IDX files a test builds under their names."""
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIRS", ())
    monkeypatch.setattr(datasets, "idx_md5", lambda name: {})


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---- IDX ----


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding: 0, 0, type 0x08 (ubyte), rank, big-endian int32 dims, then the data."""
    header = bytes((0, 0, 0x08, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(root: Path, stem: str, array: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(array)
    path = root / (f"{stem}.gz" if gz else stem)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def digit_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 28, 28), np.uint8), rng.integers(0, 10, count, np.uint8)


def write_digits(root: Path, gz: bool) -> dict[bool, tuple[np.ndarray, np.ndarray]]:
    """MNIST-style files of 7 train and 3 test images; returns {train: (images, labels)}."""
    splits = {True: digit_split(7, 0), False: digit_split(3, 1)}
    for train, (images, labels) in splits.items():
        prefix = "train" if train else "t10k"
        write_idx(root, f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(root, f"{prefix}-labels-idx1-ubyte", labels, gz)
    return splits


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_idx_round_trip(tmp_path: Path, name: str, gz: bool, train: bool) -> None:
    images, labels = write_digits(tmp_path, gz)[train]
    x, y = read_split(name, tmp_path, train)
    assert x.dtype == torch.uint8 and x.shape == (len(images), 1, 28, 28) and x.is_contiguous()
    assert y.dtype == torch.int64 and y.shape == (len(images),)
    assert torch.equal(x[:, 0], torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels).long())


def test_fashion_mnist_falls_back_to_system_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system"
    system.mkdir()
    images, labels = write_digits(system, gz=True)[False]
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIRS", (tmp_path / "absent", system))
    x, y = read_split("fashion_mnist", tmp_path / "root", train=False)
    assert torch.equal(x[:, 0], torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels).long())
    with pytest.raises(DataError, match=r"^mnist: no data"):  # only Fashion-MNIST falls back
        read_split("mnist", tmp_path / "root", train=False)


def test_files_in_root_win_over_system_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system"
    system.mkdir()
    write_digits(system, gz=True)
    write_idx(system, "train-images-idx3-ubyte", np.zeros((7, 28, 28)), gz=True)
    images, _ = write_digits(tmp_path, gz=False)[True]
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIRS", (system,))
    x, _ = read_split("fashion_mnist", tmp_path, train=True)
    assert torch.equal(x[:, 0], torch.from_numpy(images))


def corrupt_truncated_gz(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


def corrupt_truncated_data(path: Path) -> None:
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-1]))


def corrupt_magic(path: Path) -> None:
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[2] = 0x0D  # float instead of unsigned byte
    path.write_bytes(gzip.compress(bytes(data)))


def corrupt_not_gzip(path: Path) -> None:
    path.write_bytes(b"<html>Not Found</html>")


@pytest.mark.parametrize(
    "corrupt", [corrupt_truncated_gz, corrupt_truncated_data, corrupt_magic, corrupt_not_gzip]
)
def test_corrupted_idx_raises(tmp_path: Path, corrupt: Callable[[Path], None]) -> None:
    write_digits(tmp_path, gz=True)
    corrupt(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=r"^mnist: .*train-images-idx3-ubyte\.gz: "):
        read_split("mnist", tmp_path, train=True)


def test_idx_label_count_and_range_checked(tmp_path: Path) -> None:
    images, labels = digit_split(7, 0)
    write_idx(tmp_path, "train-images-idx3-ubyte", images, gz=False)
    write_idx(tmp_path, "train-labels-idx1-ubyte", labels[:6], gz=False)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: labels .* expected 7 ints"):
        read_split("mnist", tmp_path, train=True)
    write_idx(tmp_path, "train-labels-idx1-ubyte", np.full(7, 10), gz=False)
    with pytest.raises(DataError, match=r"outside 0\.\.9"):
        read_split("mnist", tmp_path, train=True)


def test_idx_image_size_checked(tmp_path: Path) -> None:
    write_idx(tmp_path, "t10k-images-idx3-ubyte", np.zeros((3, 32, 32)), gz=False)
    write_idx(tmp_path, "t10k-labels-idx1-ubyte", np.zeros(3), gz=False)
    message = "t10k-images-idx3-ubyte: images uint8 (3, 32, 32), expected uint8 (N, 28, 28)"
    with pytest.raises(DataError, match=re.escape(message)):
        read_split("mnist", tmp_path, train=False)


# ---- CIFAR ----


def cifar_rows(first: int, count: int) -> np.ndarray:
    """Images `first`.. as CIFAR rows: 1024 red, 1024 green, 1024 blue bytes, each row-major.

    Red holds the pixel's row index h, green its column w, blue 200 + the image's index
    (above 127, which the default ASCII decoding of Python 2 pickles rejects).
    """
    h, w = np.mgrid[0:32, 0:32]
    planes = [[h, w, np.full((32, 32), 200 + n)] for n in range(first, first + count)]
    return np.array([np.concatenate([p.ravel() for p in image]) for image in planes], np.uint8)


def check_cifar_pattern(x: torch.Tensor) -> None:
    h, w = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32) and x.is_contiguous()
    assert torch.equal(x[:, 0], h.expand(len(x), 32, 32).to(torch.uint8))
    assert torch.equal(x[:, 1], w.expand(len(x), 32, 32).to(torch.uint8))
    assert torch.equal(x[:, 2, 5, 7], torch.arange(200, 200 + len(x), dtype=torch.uint8))


def py2_str(data: bytes) -> bytes:
    """Pickle opcode BINSTRING: a Python 2 str, as the original files store keys and buffers."""
    return b"T" + struct.pack("<I", len(data)) + data


def py2_pickle(rows: np.ndarray, label_key: str, labels: list[int]) -> bytes:
    """A batch pickled the way Python 2's cPickle (protocol 2) and numpy 1 wrote the originals."""
    n, width = rows.shape
    dtype = b"cnumpy\ndtype\n" + py2_str(b"u1") + b"K\x00K\x01\x87R"
    dtype += b"(K\x03" + py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + py2_str(b"b")
    array += b"\x87R(K\x01" + struct.pack("<cici", b"J", n, b"J", width) + b"\x86" + dtype
    array += b"\x89" + py2_str(rows.tobytes()) + b"tb"
    label_list = b"](" + b"".join(b"J" + struct.pack("<i", v) for v in labels) + b"e"
    entries = py2_str(b"data") + array + py2_str(label_key.encode()) + label_list
    return b"\x80\x02}(" + entries + b"u."


def py3_pickle(rows: np.ndarray, label_key: str, labels: list[int]) -> bytes:
    """A batch re-pickled by Python 3, whose keys come out as bytes."""
    batch = {b"batch_label": b"tiny", b"data": rows, label_key.encode(): labels}
    return pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)


CIFAR_LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    "cifar100": ("cifar-100-python", ["train"], ["test"]),
}


def cifar_label(index: int, num_classes: int) -> int:
    """Label of image `index` of a split; the first is the largest class."""
    return (num_classes - 1 + 7 * index) % num_classes


Pickler = Callable[[np.ndarray, str, list[int]], bytes]


def write_cifar(root: Path, name: str, pickler: Pickler = py3_pickle) -> dict[str, str]:
    """Batches of 2 images per file (test: 3); returns their filename -> md5."""
    folder, train_files, test_files = CIFAR_LAYOUTS[name]
    label_key = "labels" if name == "cifar10" else "fine_labels"
    (root / folder).mkdir(parents=True)
    for files, count in ((train_files, 2), (test_files, 3)):
        for i, filename in enumerate(files):
            first = i * count  # index in the split of the file's first image
            labels = [cifar_label(first + j, DATASETS[name].num_classes) for j in range(count)]
            data = pickler(cifar_rows(first, count), label_key, labels)
            (root / folder / filename).write_bytes(data)
    return {f: md5(root / folder / f) for f in train_files + test_files}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("pickler", [py2_pickle, py3_pickle], ids=["py2", "py3"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_cifar_round_trip(tmp_path: Path, name: str, pickler: Pickler, train: bool) -> None:
    checksums = write_cifar(tmp_path, name, pickler)
    x, y = read_split(name, tmp_path, train, checksums=checksums)
    images_per_file = 2 if train else 3
    files = CIFAR_LAYOUTS[name][1 if train else 2]
    assert x.shape == (images_per_file * len(files), 3, 32, 32)
    check_cifar_pattern(x)
    expected = [cifar_label(i, DATASETS[name].num_classes) for i in range(len(x))]
    assert y.dtype == torch.int64 and y.tolist() == expected


def test_cifar_py2_pickle_is_the_original_layout() -> None:
    """The hand-written pickle decodes like an original file: str keys under latin1."""
    batch = pickle.loads(py2_pickle(cifar_rows(0, 2), "labels", [3, 4]), encoding="latin1")
    assert sorted(batch) == ["data", "labels"] and batch["labels"] == [3, 4]
    assert np.array_equal(batch["data"], cifar_rows(0, 2))


def test_cifar_checksum_mismatch_is_never_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checksums = write_cifar(tmp_path, "cifar10")

    def forbidden(*args: object, **kwargs: object) -> None:
        pytest.fail("a file with a wrong md5 was unpickled")

    for attr in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, attr, forbidden)
    monkeypatch.setattr(datasets, "_unpickle", forbidden)
    actual = checksums["data_batch_3"]
    checksums["data_batch_3"] = "0" * 32
    with pytest.raises(DataError) as error:
        read_split("cifar10", tmp_path, train=True, checksums=checksums)
    message = str(error.value)
    assert message.startswith("cifar10: ") and "data_batch_3" in message
    assert actual in message and "0" * 32 in message
    # The default table holds the md5s of the real files, which these tiny ones do not match.
    with pytest.raises(DataError, match=r"test_batch: md5 is \w+, expected 40351d58"):
        read_split("cifar10", tmp_path, train=False)
    del checksums["data_batch_3"]
    with pytest.raises(DataError, match=r"data_batch_3: md5 is \w+, expected none known"):
        read_split("cifar10", tmp_path, train=True, checksums=checksums)


def test_cifar_malformed_batch_raises(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rows = np.zeros((2, 3000), np.uint8)
    (folder / "test").write_bytes(py3_pickle(rows, "fine_labels", [0, 1]))
    message = "test: data uint8 (2, 3000), expected uint8 (N, 3072)"
    with pytest.raises(DataError, match=re.escape(message)):
        read_split("cifar100", tmp_path, train=False, checksums={"test": md5(folder / "test")})
    (folder / "test").write_bytes(py3_pickle(cifar_rows(0, 2), "labels", [0, 1]))  # CIFAR-10 key
    with pytest.raises(DataError, match="lacks the 'data' or 'fine_labels' entry"):
        read_split("cifar100", tmp_path, train=False, checksums={"test": md5(folder / "test")})


# ---- SVHN ----


def write_svhn(root: Path, filename: str, labels: list[int]) -> None:
    """X (32, 32, 3, N) with red = row h, green = column w, blue = 200 + n; y (N, 1)."""
    count = len(labels)
    h, w = np.mgrid[0:32, 0:32]
    x = np.empty((32, 32, 3, count), np.uint8)
    x[:, :, 0], x[:, :, 1] = h[..., None], w[..., None]
    x[:, :, 2] = 200 + np.arange(count)
    y = np.array(labels, np.uint8)[:, None]
    scipy.io.savemat(root / filename, {"X": x, "y": y})


@pytest.mark.parametrize("train", [True, False], ids=["train", "test"])
def test_svhn_round_trip(tmp_path: Path, train: bool) -> None:
    filename = "train_32x32.mat" if train else "test_32x32.mat"
    write_svhn(tmp_path, filename, [10, 1, 9, 5, 10])
    x, y = read_split("svhn", tmp_path, train)
    assert x.shape == (5, 3, 32, 32)
    check_cifar_pattern(x)
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 9, 5, 0]  # 10 is the digit 0


def test_svhn_damaged_file_raises(tmp_path: Path) -> None:
    write_svhn(tmp_path, "test_32x32.mat", [1, 2])
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"^svhn: .*test_32x32\.mat: cannot read"):
        read_split("svhn", tmp_path, train=False)
    write_svhn(tmp_path, "test_32x32.mat", [0, 2])  # SVHN labels run 1..10
    with pytest.raises(DataError, match=r"outside 1\.\.10"):
        read_split("svhn", tmp_path, train=False)


# ---- errors common to all sets ----


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist", "train-images-idx3-ubyte[.gz]"),
        ("fashion_mnist", "train-labels-idx1-ubyte[.gz]"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("cifar100", "cifar-100-python/train"),
        ("svhn", "train_32x32.mat"),
    ],
)
def test_missing_files_raise(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(DataError) as error:
        read_split(name, tmp_path, train=True)
    message = str(error.value)
    assert message.startswith(f"{name}: no data in {tmp_path} ")
    assert expected in message and "download" in message


def test_unknown_dataset() -> None:
    message = "dataset: 'foo' is not one of cifar10, cifar100, fashion_mnist, imagenet, mnist, svhn"
    with pytest.raises(ValueError, match=f"^{message}$"):
        read_split("foo", Path("."), train=True)


def test_checksums_only_for_cifar(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mnist: checksums apply to the pickled CIFAR files"):
        read_split("mnist", tmp_path, train=True, checksums={})


def test_dataset_info() -> None:
    assert sorted(DATASETS) == ["cifar10", "cifar100", "fashion_mnist", "imagenet", "mnist", "svhn"]
    assert [name for name, info in DATASETS.items() if info.folder] == ["imagenet"]
    assert DATASETS["cifar100"].num_classes == 100 and DATASETS["mnist"].shape == (1, 28, 28)
    assert all(name == info.name for name, info in DATASETS.items())


# ---- downloads (torchvision's downloader replaced: no network here) ----


def offline(calls: list[str]) -> Callable[..., None]:
    def download_url(url: str, root: object, filename: object = None, md5: object = None) -> None:
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    return download_url


@pytest.mark.parametrize(
    ("name", "urls"),
    [
        ("mnist", [m + "t10k-images-idx3-ubyte.gz" for m in tvd.MNIST.mirrors]),
        ("fashion_mnist", [m + "t10k-images-idx3-ubyte.gz" for m in tvd.FashionMNIST.mirrors]),
        ("cifar10", [tvd.CIFAR10.url]),
        ("cifar100", [tvd.CIFAR100.url]),
        ("svhn", [tvd.SVHN.split_list["test"][0]]),
    ],
)
def test_download_without_network_raises_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, urls: list[str]
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(tvu, "download_url", offline(calls))
    with pytest.raises(DataError) as error:
        read_split(name, tmp_path, train=False, download=True)
    message = str(error.value)
    assert calls == urls  # every mirror tried, in order
    assert message.startswith(f"{name}: download of ") and "\n" not in message
    assert all(url in message for url in urls) and "name resolution" in message


def test_idx_download_uses_torchvision_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = digit_split(4, 2)
    served = {"t10k-images-idx3-ubyte.gz": images, "t10k-labels-idx1-ubyte.gz": labels}
    calls: list[tuple[str, str | None]] = []

    def download_url(url: str, root: Path, filename: str, md5: str | None = None) -> None:
        calls.append((url, md5))
        (Path(root) / filename).write_bytes(gzip.compress(idx_bytes(served[filename])))

    monkeypatch.setattr(tvu, "download_url", download_url)
    x, y = read_split("fashion_mnist", tmp_path, train=False, download=True)
    assert torch.equal(x[:, 0], torch.from_numpy(images))
    assert torch.equal(y, torch.from_numpy(labels).long())
    mirror, md5s = tvd.FashionMNIST.mirrors[0], dict(tvd.FashionMNIST.resources)
    assert calls == [(mirror + f, md5s[f]) for f in served]


def test_corrupted_download_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def download_url(url: str, root: Path, filename: str, md5: str | None = None) -> None:
        (Path(root) / filename).write_bytes(b"partial")
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(tvu, "download_url", download_url)
    with pytest.raises(DataError, match=r"^svhn: download of .* failed: RuntimeError: File not"):
        read_split("svhn", tmp_path, train=True, download=True)
    assert not (tmp_path / "train_32x32.mat").exists()


def test_cifar_download_extracts_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = tmp_path / "build"
    checksums = write_cifar(build, "cifar10")
    archive = tmp_path / "served.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(build / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    calls: list[tuple[str, str | None]] = []

    def download_url(url: str, root: Path, filename: str, md5: str | None = None) -> None:
        calls.append((url, md5))
        Path(root).mkdir(parents=True, exist_ok=True)  # as torchvision's does
        (Path(root) / filename).write_bytes(archive.read_bytes())

    monkeypatch.setattr(tvu, "download_url", download_url)
    x, _ = read_split("cifar10", tmp_path / "root", train=False, download=True, checksums=checksums)
    assert x.shape == (3, 3, 32, 32)
    assert calls == [(tvd.CIFAR10.url, tvd.CIFAR10.tgz_md5)]


# ---- the real Fashion-MNIST, when Debian's dataset-fashion-mnist is installed ----


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(),
    reason=f"{DEBIAN_FASHION_MNIST} absent (Debian package dataset-fashion-mnist not installed)",
)
def test_real_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEBIAN_FASHION_MNIST in DEFAULT_FASHION_MNIST_DIRS
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIRS", DEFAULT_FASHION_MNIST_DIRS)
    for train, count in ((True, 60000), (False, 10000)):
        x, y = read_split("fashion_mnist", tmp_path, train)
        assert x.shape == (count, 1, 28, 28) and x.dtype == torch.uint8
        assert y.shape == (count,) and y.dtype == torch.int64
        assert torch.equal(y.bincount(), torch.full((10,), count // 10))


def test_prepared_file_is_the_same_bytes_from_any_process(tmp_path: Path, run_modules) -> None:
    """Issue 19: the same raw files prepared by two processes give byte-identical files, so DVC's
    hash of `data/<name>.pt` (and its run cache) holds across runs and machines."""
    (tmp_path / "raw" / "mnist").mkdir(parents=True)
    write_digits(tmp_path / "raw" / "mnist", gz=True)
    (tmp_path / "prepare_tiny.py").write_text(  # the files built here are not the published ones
        "import sys\nfrom common import data, datasets\n\n"
        "datasets.idx_md5 = lambda name: {}\ndata.main(sys.argv[1:])\n"
    )
    outs = [tmp_path / "a" / "mnist.pt", tmp_path / "b" / "mnist.pt"]
    args = ["mnist", "--raw-root", "raw", "--no-download"]
    commands = [("prepare_tiny", [*args[:1], out, *args[1:]], tmp_path) for out in outs]
    for result in run_modules(commands):
        assert result.returncode == 0, result.stderr[-2000:]
    assert outs[0].read_bytes() == outs[1].read_bytes()
