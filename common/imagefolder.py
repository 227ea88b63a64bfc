"""ImageNet-scale data streamed from an ImageFolder directory by DataLoader workers.

`root` (a run's `data.root`) holds `train/` and `val/`, each with one folder of images per class,
the same class folders in both; labels follow the sorted folder names (torchvision's ImageFolder).
Training images get the standard ImageNet augmentation — RandomResizedCrop(224), horizontal flip —
evaluation images Resize(256) + CenterCrop(224); all are normalised by ImageNet's per-channel mean
and std on the workers. Under DDP, Lightning swaps each loader's sampler for a
DistributedSampler, so every rank reads its own shard of the images.

The papers report their ImageNet errors on the 50k `val/` images, so `val/` is this module's
"test" split (`eval_splits == ("test",)`, as for an in-memory set without a validation split).
`train_size`, `test_size` and `test_curve_size` take seeded random subsets (the folders are
sorted by class, so a prefix would hold the first classes only).

Under DVC the folder is `data/raw/<name>` (a link to your copy): the root `data` stage writes its
listing (`folder_listing`: where it is, how many classes, the listing's hash) to `data/<name>.pt`,
which the train stages depend on, so adding or removing images re-runs them. `data.root`, when
set, points a run elsewhere.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from common.config import DataConfig, check_sizes
from common.datasets import DataError, check_root

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(crop_size: int = 224) -> T.Compose:
    """Random-size crop (8%-100% of the area, 3/4-4/3 aspect) to `crop_size`, flip, normalise."""
    return T.Compose(
        [
            T.RandomResizedCrop(crop_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(crop_size: int = 224, resize_size: int = 256) -> T.Compose:
    """Shorter side to `resize_size`, the central `crop_size` square, normalise."""
    return T.Compose(
        [
            T.Resize(resize_size),
            T.CenterCrop(crop_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def read_folder(folder: Path, transform: T.Compose) -> ImageFolder:
    try:
        return ImageFolder(folder, transform)
    except FileNotFoundError as err:  # a class folder without images of a known extension
        raise DataError(f"data.root: {folder}: {err}") from err


def _subset(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """`size` images of `dataset` drawn with a seeded permutation, or all of them."""
    if size is None or size >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:size].tolist())


def listing_hash(root: Path, *folders: ImageFolder) -> str:
    """sha256 of the folders' classes and of every image's path, label and size: hashing
    ImageNet's 150 GB would outlast a short run; the listing sees added, removed, moved or
    resized images, which is what a checkpoint's run digest needs to know of the data."""
    h = hashlib.sha256()
    for folder in folders:
        h.update(f"{folder.classes}\n".encode())
        for path, label in folder.samples:
            h.update(f"{os.path.relpath(path, root)} {label} {os.path.getsize(path)}\n".encode())
    return h.hexdigest()


def read_splits(
    root: str | Path | None, crop_size: int = 224, resize_size: int = 256
) -> tuple[ImageFolder, ImageFolder]:
    """The train/ and val/ image folders of `root`, which must hold the same classes."""
    root = check_root(root)
    train = read_folder(root / "train", train_transform(crop_size))
    test = read_folder(root / "val", eval_transform(crop_size, resize_size))
    if train.classes != test.classes:
        only = sorted(set(train.classes) ^ set(test.classes))[:3]
        raise DataError(
            f"data.root: {root}/train and {root}/val hold different class folders "
            f"(e.g. {', '.join(only)}); expected the same classes in both"
        )
    return train, test


def folder_listing(name: str, root: Path) -> dict[str, str | int]:
    """What the `data` stage writes for a folder data set (`common.data.prepare`)."""
    train, test = read_splits(root)
    return {
        "name": name, "num_classes": len(train.classes), "root": str(Path(root).resolve()),
        "sha256": listing_hash(Path(root), train, test),
    }  # fmt: skip


class ImageFolderDataModule(L.LightningDataModule):
    """Train and test loaders over `root`/train and `root`/val, read and augmented by workers.

    Exposes what `common.training.fit` reads from a data module: `image_shape`, `num_classes`,
    `train_set`, `eval_splits`, `test_set` (the whole test subset, `test_dataloader`),
    `test_curve_set` (the one evaluated every epoch) and `content_hash`. A `listing` from the
    `data` stage gives the root when `root` is None, and the hash the folder must still have.
    """

    def __init__(
        self,
        root: str | Path | None,
        batch_size: int,
        num_workers: int = 4,
        crop_size: int = 224,
        resize_size: int = 256,
        subsets: DataConfig | None = None,
        listing: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if root is None and listing is not None:
            root = listing["root"]
        self.root, self.batch_size, self.num_workers = root, batch_size, num_workers
        self.crop_size, self.resize_size = crop_size, resize_size
        self.subsets = subsets or DataConfig(val_size=0)
        same = listing is not None and Path(root).resolve() == Path(listing["root"])
        self.listed_hash = listing["sha256"] if same else None

    @classmethod
    def from_config(
        cls, config: DataConfig, batch_size: int, listing: dict[str, Any] | None = None
    ) -> ImageFolderDataModule:
        """A run's data module: `data.root` (else the listing's), `data.workers`, its subsets."""
        return cls(config.root, batch_size, config.workers, subsets=config, listing=listing)

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        train, test = read_splits(self.root, self.crop_size, self.resize_size)
        self.content_hash = listing_hash(Path(self.root), train, test)
        if self.listed_hash not in (None, self.content_hash):
            raise DataError(
                f"data: {self.root} has changed since the `data` stage listed it; "
                "re-run that stage (dvc repro)"
            )
        self.num_classes = len(train.classes)
        s = self.subsets
        check_sizes(s, len(train), len(test), Path(self.root).name)
        self.train_set = _subset(train, s.train_size, s.split_seed)
        self.test_set = _subset(test, s.test_size, s.split_seed)
        self.test_curve_set = _subset(self.test_set, s.test_curve_size, s.split_seed)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.crop_size, self.crop_size)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The sets evaluated every epoch, in dataloader order: val/, as the papers' test set."""
        return ("test",)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.test_curve_set, shuffle=False)]

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
