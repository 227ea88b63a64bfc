"""Raw readers for the papers' image sets, returning whole splits as uint8 tensors.

Each set is read from its original distribution files (IDX, CIFAR pickles, SVHN MATLAB files) and
validated; missing files can be downloaded from the URLs and md5s torchvision lists. A `folder`
set (ImageNet) is not read here: it streams from an ImageFolder directory the user points to
(`data.root`, common/imagefolder.py); `check_root` tells whether that directory is usable.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch


class DataError(Exception):
    """A dataset's files are missing, corrupted or could not be downloaded."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W); a folder set's training crop
    folder: bool = False  # streamed from an ImageFolder directory (data.root), never prepared
    # Images in the official training and test sets (0: a folder set, counted when listed).
    train_images: int = 0
    test_images: int = 0


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("fashion_mnist", 10, (1, 28, 28), train_images=60000, test_images=10000),
        DatasetInfo("mnist", 10, (1, 28, 28), train_images=60000, test_images=10000),
        DatasetInfo("cifar10", 10, (3, 32, 32), train_images=50000, test_images=10000),
        DatasetInfo("cifar100", 100, (3, 32, 32), train_images=50000, test_images=10000),
        DatasetInfo("svhn", 10, (3, 32, 32), train_images=73257, test_images=26032),
        DatasetInfo("imagenet", 1000, (3, 224, 224), folder=True),
    )
}

FOLDER_LAYOUT = "a directory with train/ and val/, each holding one folder of images per class"
RAW_ROOT = Path("data/raw")  # the `data` stage's raw files, `RAW_ROOT/<name>` (from the repo root)

# Searched after `root` for Fashion-MNIST; Debian's dataset-fashion-mnist package installs here.
FASHION_MNIST_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

_CIFAR_LABEL_KEYS = {"cifar10": "labels", "cifar100": "fine_labels"}


def _source(name: str) -> Any:
    """torchvision's record of a set's files (URLs, md5s). Imported when first needed: importing
    torchvision takes seconds, which a process that needs only `DATASETS` does not pay."""
    from torchvision import datasets as tvd

    classes = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10,
               "cifar100": tvd.CIFAR100, "svhn": tvd.SVHN}  # fmt: skip
    return classes[name]


def cifar_md5(name: str) -> dict[str, str]:
    """filename -> md5 of the pickled CIFAR files; a file is unpickled only if its md5 is listed."""
    source = _source(name)
    return dict(source.train_list + source.test_list)


# md5s an IDX file may have, by dataset and file name: torchvision's published md5 of each .gz
# file, and for Fashion-MNIST the md5 of each file's IDX content (decompressed), measured on
# Debian's dataset-fashion-mnist package, whose .gz files are recompressed (other .gz md5s) but
# hold the same IDX bytes; uncompressed files are checked by that. A file without any known md5
# (MNIST uncompressed) is checked for structure only.
_IDX_CONTENT_MD5 = {
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    }
}


@cache
def idx_md5(name: str) -> dict[str, set[str]]:
    """filename -> md5s of the file or of its IDX content that `_read_idx` accepts."""
    content = _IDX_CONTENT_MD5.get(name, {})
    known = {stem: {md5} for stem, md5 in content.items()}
    for filename, md5 in _source(name).resources:
        known[filename] = {md5, *known.get(filename.removesuffix(".gz"), ())}
    return known


# What a failed download raises: URLError/HTTPError are OSErrors, a bad md5 is a RuntimeError.
_DOWNLOAD_ERRORS = (OSError, RuntimeError, tarfile.TarError)


def read_split(
    name: str,
    root: str | Path,
    train: bool,
    download: bool = False,
    *,
    checksums: Mapping[str, str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, C, H, W) and labels int64 (N,) of the train or test split of `name`.

    `root` holds the dataset's raw files; missing ones are downloaded there if `download`.
    `checksums` (filename -> md5) replaces `cifar_md5(name)` for the pickled CIFAR files.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset: {name!r} is not one of {', '.join(sorted(DATASETS))}")
    if DATASETS[name].folder:
        raise DataError(f"{name}: streamed from its ImageFolder directory (data.root), not read")
    root = Path(root)
    if name in _CIFAR_LABEL_KEYS:
        md5s = cifar_md5(name) if checksums is None else checksums
        images, labels = _read_cifar(name, root, train, download, md5s)
    elif checksums is not None:
        raise ValueError(f"{name}: checksums apply to the pickled CIFAR files only")
    elif name == "svhn":
        images, labels = _read_svhn(root, train, download)
    else:
        images, labels = _read_idx_split(name, root, train, download)
    # IDX arrays are read-only views of the file bytes; torch needs writable memory.
    images = np.require(images, requirements=("C", "W"))
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def check_root(root: str | Path | None) -> Path:
    """`root` as a Path if it has train/ and val/ class folders, else a one-line DataError."""
    if root is None:
        raise DataError(f"data.root: not set; expected {FOLDER_LAYOUT}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root: {root} does not exist; expected {FOLDER_LAYOUT}")
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
            raise DataError(f"data.root: {folder} has no class folders; expected {FOLDER_LAYOUT}")
    return root


def _fail(name: str, path: Path, problem: str) -> DataError:
    return DataError(f"{name}: {path}: {problem}")


def _missing(name: str, dirs: Sequence[Path], files: Sequence[str]) -> DataError:
    where = " or ".join(str(d) for d in dirs)
    return DataError(
        f"{name}: no data in {where} (expected {', '.join(files)}); "
        "run with download enabled or place the files there"
    )


def _check_array(
    name: str, path: Path, what: str, array: np.ndarray, shape: tuple[int, ...], dtype: type
) -> None:
    """DataError unless `array` has `dtype` and `shape` (-1 matches any size)."""
    wanted = tuple(a if s == -1 else s for a, s in zip(array.shape, shape, strict=False))
    if array.dtype != dtype or array.ndim != len(shape) or array.shape != wanted:
        want = f"{np.dtype(dtype)} ({', '.join('N' if s == -1 else str(s) for s in shape)})"
        raise _fail(name, path, f"{what} {array.dtype} {array.shape}, expected {want}")


def _check_labels(name: str, path: Path, labels: np.ndarray, count: int, classes: range) -> None:
    """DataError unless `labels` are `count` integers in `classes`."""
    if labels.dtype.kind not in "iu" or labels.shape != (count,):
        raise _fail(name, path, f"labels are {labels.dtype} {labels.shape}, expected {count} ints")
    if count and (labels.min() not in classes or labels.max() not in classes):
        span = f"{classes.start}..{classes.stop - 1}"
        raise _fail(name, path, f"labels span {labels.min()}..{labels.max()}, outside {span}")


def _download(name: str, urls: Sequence[str], target: Path, fetch: Callable[[str], None]) -> None:
    """Call `fetch` on each mirror URL until one succeeds; DataError if all fail."""
    for url in urls:
        try:
            fetch(url)
            return
        except _DOWNLOAD_ERRORS as e:
            # A partial or corrupted download must not be found and read later.
            target.unlink(missing_ok=True)
            error = " ".join(f"{type(e).__name__}: {e}".split())
    raise DataError(f"{name}: download of {' or '.join(urls)} failed: {error}")


# ---- IDX (MNIST, Fashion-MNIST) ----

_IDX_UBYTE = 0x08


def _read_idx(name: str, path: Path, ndim: int) -> np.ndarray:
    """The `ndim`-d uint8 array stored in IDX file `path` (gzip-compressed if it ends in .gz),
    whose file or content md5 must be one `idx_md5` knows for its name, where it knows any."""
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise _fail(name, path, f"cannot read: {e}") from None
    known = idx_md5(name).get(path.name, set())
    md5s = {hashlib.md5(raw).hexdigest(), hashlib.md5(data).hexdigest()}
    if known and not known & md5s:
        expected = " or ".join(sorted(known))
        raise _fail(name, path, f"md5 is {hashlib.md5(raw).hexdigest()}, expected {expected}")
    header = 4 + 4 * ndim
    if len(data) < header or data[:4] != bytes((0, 0, _IDX_UBYTE, ndim)):
        raise _fail(name, path, f"not an IDX file of {ndim}-d unsigned bytes")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise _fail(name, path, f"has {len(data)} bytes, expected {expected} for shape {dims}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _idx_stems(train: bool) -> tuple[str, str]:
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find_idx(directory: Path, stem: str) -> Path | None:
    return next((p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()), None)


def _locate_idx(dirs: Sequence[Path], stems: Sequence[str]) -> list[Path] | None:
    """Paths of all `stems` in the first of `dirs` that holds them all."""
    for directory in dirs:
        paths = [p for p in (_find_idx(directory, stem) for stem in stems) if p is not None]
        if len(paths) == len(stems):
            return paths
    return None


def _download_idx(name: str, root: Path, stems: Sequence[str]) -> None:
    from torchvision.datasets import utils as tvu

    source = _source(name)
    md5s = dict(source.resources)
    for filename in (f"{stem}.gz" for stem in stems if _find_idx(root, stem) is None):
        urls = [mirror + filename for mirror in source.mirrors]
        fetch = partial(tvu.download_url, root=root, filename=filename, md5=md5s[filename])
        _download(name, urls, root / filename, fetch)


def _read_idx_split(
    name: str, root: Path, train: bool, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    stems = _idx_stems(train)
    dirs = [root, *FASHION_MNIST_DIRS] if name == "fashion_mnist" else [root]
    paths = _locate_idx(dirs, stems)
    if paths is None:
        if not download:
            raise _missing(name, dirs, [f"{stem}[.gz]" for stem in stems])
        _download_idx(name, root, stems)
        return _read_idx_split(name, root, train, download=False)
    image_path, label_path = paths
    images = _read_idx(name, image_path, 3)
    _check_array(name, image_path, "images", images, (-1, *DATASETS[name].shape[1:]), np.uint8)
    labels = _read_idx(name, label_path, 1)
    _check_labels(name, label_path, labels, len(images), range(DATASETS[name].num_classes))
    return images[:, None], labels


# ---- CIFAR-10 / CIFAR-100 ----


def _unpickle(data: bytes) -> object:
    # latin1 decodes the Python 2 strings (dict keys, numpy buffers) of the original files.
    return pickle.loads(data, encoding="latin1")


def _verified_bytes(name: str, path: Path, checksums: Mapping[str, str]) -> bytes:
    """The contents of `path`, whose md5 must be `checksums[path.name]`."""
    data = path.read_bytes()
    actual, expected = hashlib.md5(data).hexdigest(), checksums.get(path.name, "none known")
    if actual != expected:
        raise _fail(name, path, f"md5 is {actual}, expected {expected}; refusing to unpickle")
    return data


def _parse_cifar_batch(name: str, path: Path, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(data)
    if not isinstance(batch, dict):
        raise _fail(name, path, f"holds a {type(batch).__name__}, expected a dict")
    # The originals have Python 2 str keys (str under latin1); Python 3 re-pickles have bytes.
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    label_key = _CIFAR_LABEL_KEYS[name]
    if "data" not in batch or label_key not in batch:
        raise _fail(name, path, f"lacks the 'data' or {label_key!r} entry")
    rows, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    _check_array(name, path, "data", rows, (-1, math.prod(DATASETS[name].shape)), np.uint8)
    _check_labels(name, path, labels, len(rows), range(DATASETS[name].num_classes))
    return rows.reshape(-1, *DATASETS[name].shape), labels


def _read_cifar(
    name: str, root: Path, train: bool, download: bool, checksums: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    source = _source(name)
    folder = root / source.base_folder
    files = [filename for filename, _ in (source.train_list if train else source.test_list)]
    expected = [f"{source.base_folder}/{filename}" for filename in files]
    if not all((folder / filename).is_file() for filename in files):
        if not download:
            raise _missing(name, [root], expected)
        from torchvision.datasets import utils as tvu

        fetch = partial(tvu.download_and_extract_archive, download_root=root, md5=source.tgz_md5)
        _download(name, [source.url], root / source.filename, fetch)
        if not all((folder / filename).is_file() for filename in files):
            raise DataError(f"{name}: archive {source.url} did not hold {', '.join(expected)}")
    paths = [folder / filename for filename in files]
    # Unpickling can run arbitrary code: every file is checked before any is unpickled, and the
    # bytes checked are the bytes unpickled.
    blobs = [_verified_bytes(name, path, checksums) for path in paths]
    batches = [_parse_cifar_batch(name, p, blob) for p, blob in zip(paths, blobs, strict=True)]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


# ---- SVHN ----


def _read_svhn(root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io
    from torchvision.datasets import utils as tvu

    # loadmat reports damaged files by assorted exception types (v7.3: NotImplementedError)
    mat_errors = (
        OSError,
        ValueError,
        IndexError,
        NotImplementedError,
        scipy.io.matlab.MatReadError,
    )
    url, filename, md5 = _source("svhn").split_list["train" if train else "test"]
    path = root / filename
    if not path.is_file():
        if not download:
            raise _missing("svhn", [root], [filename])
        fetch = partial(tvu.download_url, root=root, filename=filename, md5=md5)
        _download("svhn", [url], path, fetch)
    try:
        mat = scipy.io.loadmat(path, variable_names=("X", "y"))
    except mat_errors as e:
        raise _fail("svhn", path, f"cannot read: {e}") from None
    if "X" not in mat or "y" not in mat:
        raise _fail("svhn", path, "lacks the 'X' or 'y' variable")
    images, labels = mat["X"], mat["y"].ravel()  # y is (N, 1)
    _check_array("svhn", path, "X", images, (32, 32, 3, -1), np.uint8)
    _check_labels("svhn", path, labels, images.shape[3], range(1, 11))
    # X is (H, W, C, N); label 10 stands for the digit 0.
    return images.transpose(3, 2, 0, 1), np.where(labels == 10, 0, labels)
