"""Whole data sets held as uint8 tensors, split once, augmented per batch on the training device.

The prepared file (`prepare`, a DVC stage) stores a data set's train and test images as uint8
NCHW tensors; `ImageDataModule` splits off the validation set with a fixed seed and yields
index-sliced uint8 batches, so the per-image Python work of a PIL pipeline never happens.
Padding + random crop, flip and normalisation run on whole batches after transfer to the device.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from common.config import ConfigError, DataConfig, check_sizes, choice
from common.datasets import DATASETS, RAW_ROOT, DataError, read_split
from common.imagefolder import folder_listing
from common.io import atomic_torch_save, short_error

SPLITS = ("train_images", "train_labels", "test_images", "test_labels")


def prepare(name: str, raw_root: Path, out: Path, download: bool = True) -> None:
    """Read a data set's raw files (downloading them if allowed) into one tensor file; of a
    folder data set (ImageNet, in `raw_root/<name>`), write its listing instead."""
    choice("dataset", name, DATASETS)
    if DATASETS[name].folder:
        atomic_torch_save(folder_listing(name, raw_root / name), out)
        return
    train = read_split(name, raw_root / name, train=True, download=download)
    test = read_split(name, raw_root / name, train=False, download=download)
    tensors = dict(zip(SPLITS, (*train, *test), strict=True))
    save_prepared({"name": name, "num_classes": DATASETS[name].num_classes, **tensors}, out)


def content_hash(data: dict) -> str:
    """sha256 of a prepared set's name, class count and tensors (dtype, shape and bytes)."""
    h = hashlib.sha256(f"{data['name']}\n{int(data['num_classes'])}\n".encode())
    for key in SPLITS:
        tensor = data[key].contiguous()
        h.update(f"{key} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        h.update(tensor.numpy())
    return h.hexdigest()


def save_prepared(data: dict, out: Path) -> None:
    """Write a prepared set with its content hash, which `load_prepared` checks."""
    atomic_torch_save({**data, "sha256": content_hash(data)}, out)


def load_prepared(path: Path) -> dict:
    """Load a prepared data set and check its content hash, or a folder data set's listing;
    tensors and strings only, so `weights_only`."""
    rerun = "re-run its `data` stage (dvc repro)"
    if not path.is_file():
        raise DataError(f"data: {path} does not exist; run its `data` stage (dvc repro) first")
    try:
        data = torch.load(path, weights_only=True)
    except Exception as err:  # truncated, corrupt, or a pickle weights_only refuses
        raise DataError(f"data: {path} cannot be loaded ({short_error(err)}); {rerun}") from None
    listing = isinstance(data, dict) and "root" in data  # a folder data set's
    keys = ("name", "root", "sha256") if listing else (*SPLITS, "sha256")
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise DataError(f"data: {path} lacks {', '.join(missing)}; {rerun}")
    if not listing and content_hash(data) != data["sha256"]:
        raise DataError(f"data: {path} does not match its content hash (corrupt); {rerun}")
    return data


def split_indices(n: int, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded permutation of n indices cut into (train, validation)."""
    if not 0 <= val_size < n:
        raise ConfigError(f"data.val_size: {val_size} must be between 0 and {n - 1}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]


class TensorBatches(Dataset):
    """Images and labels indexed a whole batch at a time (DataLoader calls `__getitems__`)."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices)
        return self.images[idx], self.labels[idx]


def _batch_as_is(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch


def random_crop(images: Tensor, pad: int, padding_mode: str) -> Tensor:
    """Pad by `pad` on each side, then crop back to the original size at a random offset per image.

    This is the papers' "translation by up to `pad` pixels"; it runs as one gather over the batch.
    """
    if pad == 0:
        return images
    b, c, h, w = images.shape
    mode = "constant" if padding_mode == "zeros" else "reflect"
    source = images if mode == "constant" else images.float()  # reflect pad needs a float tensor
    padded = F.pad(source, (pad, pad, pad, pad), mode=mode).to(images.dtype)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b, 1), device=images.device)
    rows = (dy + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(images: Tensor) -> Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


class ImageDataModule(L.LightningDataModule):
    """Train/validation/test loaders over a prepared data set, with on-device augmentation."""

    def __init__(self, data_file: Path, config: DataConfig, batch_size: int) -> None:
        super().__init__()
        self.data_file, self.config, self.batch_size = Path(data_file), config, batch_size

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        data = load_prepared(self.data_file)
        self.content_hash = data["sha256"]
        self.num_classes = int(data["num_classes"])
        images, labels = data["train_images"], data["train_labels"]
        check_sizes(self.config, len(labels), len(data["test_labels"]), str(data["name"]))
        train_idx, val_idx = split_indices(
            len(labels), self.config.val_size, self.config.split_seed
        )
        train_idx = train_idx[: self.config.train_size]
        self.train_set = TensorBatches(images[train_idx], labels[train_idx])
        self.val_set = TensorBatches(images[val_idx], labels[val_idx])
        test_n, curve_n = self.config.test_size, self.config.test_curve_size
        test = (data["test_images"][:test_n], data["test_labels"][:test_n])
        self.test_set = TensorBatches(*test)
        self.test_curve_set = TensorBatches(*(t[:curve_n] for t in test))
        self.mean, self.std = self._normalization(self.train_set.images)

    def _normalization(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Per-pixel mean image (ResNet) or per-channel mean and std (WRN), from the train split."""
        x = images.float() / 255
        if self.config.normalize == "per_pixel_mean":
            return x.mean(0), torch.ones(())
        return x.mean((0, 2, 3))[:, None, None], x.std((0, 2, 3))[:, None, None]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_set.images.shape[1:])

    def _loader(self, dataset: TensorBatches, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, collate_fn=_batch_as_is
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        # Test error is logged every epoch beside validation error: the papers plot test curves
        # (on `test_curve_size` images when set, the whole test set once at the end).
        sets = {"val": self.val_set, "test": self.test_curve_set, "train_eval": self.train_set}
        return [self._loader(sets[split], False) for split in self.eval_splits]

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The evaluation loaders, in order: validation (if any) and test every epoch, then the
        training set in evaluation mode with `data.eval_train_epochs` (its last epochs only)."""
        splits = ("val", "test") if len(self.val_set) else ("test",)
        return (*splits, "train_eval") if self.config.eval_train_epochs else splits

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor], idx: int) -> tuple:
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            images = random_crop(images, self.config.pad, self.config.padding_mode)
            if self.config.flip:
                images = random_flip(images)
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images.float() / 255 - mean) / std, labels


def main(argv: list[str] | None = None) -> None:
    """`python -m common.data DATASET OUT`: the `data` stage of every paper's pipeline."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("dataset")
    parser.add_argument("out", type=Path)
    parser.add_argument("--raw-root", type=Path, default=RAW_ROOT)
    parser.add_argument("--no-download", action="store_true")
    args = parser.parse_args(argv)
    try:
        prepare(args.dataset, args.raw_root, args.out, download=not args.no_download)
    except (ConfigError, DataError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
