"""ImageNet-scale data streamed from an ImageFolder directory by DataLoader workers.

`root` (a run's `data.root`) holds `train/` and `val/`, each with one folder of images per class,
the same class folders in both; labels follow the sorted folder names (torchvision's ImageFolder).
Training images get the standard ImageNet augmentation — RandomResizedCrop(224), horizontal flip —
evaluation images Resize(256) + CenterCrop(224); all are normalised by ImageNet's per-channel mean
and std on the workers. Under DDP, Lightning swaps each loader's sampler for a
DistributedSampler, so every rank reads its own shard of the images.

The papers report their ImageNet errors on the 50k `val/` images, so `val/` is this module's
"test" split (`eval_splits == ("test",)`, as for an in-memory set without a validation split).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from common.datasets import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXPECTED = "a directory with train/ and val/, each holding one folder of images per class"


def check_root(root: str | Path | None) -> Path:
    """`root` as a Path if it has train/ and val/ class folders, else a one-line DataError."""
    if root is None:
        raise DataError(f"data.root: not set; expected {EXPECTED}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data.root: {root} does not exist; expected {EXPECTED}")
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
            raise DataError(f"data.root: {folder} has no class folders; expected {EXPECTED}")
    return root


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


class ImageFolderDataModule(L.LightningDataModule):
    """Train and test loaders over `root`/train and `root`/val, read and augmented by workers.

    Exposes what `common.training.fit` reads from a data module: `image_shape`, `num_classes`,
    `train_set`, `eval_splits` (and `test_set`, the set behind the one evaluation loader).
    """

    def __init__(
        self,
        root: str | Path | None,
        batch_size: int,
        num_workers: int = 4,
        crop_size: int = 224,
        resize_size: int = 256,
    ) -> None:
        super().__init__()
        self.root, self.batch_size, self.num_workers = root, batch_size, num_workers
        self.crop_size, self.resize_size = crop_size, resize_size

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        root = check_root(self.root)
        train = read_folder(root / "train", train_transform(self.crop_size))
        test = read_folder(root / "val", eval_transform(self.crop_size, self.resize_size))
        if train.classes != test.classes:
            only = sorted(set(train.classes) ^ set(test.classes))[:3]
            raise DataError(
                f"data.root: {root}/train and {root}/val hold different class folders "
                f"(e.g. {', '.join(only)}); expected the same classes in both"
            )
        self.train_set, self.test_set = train, test
        self.num_classes = len(train.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.crop_size, self.crop_size)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The sets evaluated every epoch, in dataloader order: val/, as the papers' test set."""
        return ("test",)

    def _loader(self, dataset: ImageFolder, shuffle: bool) -> DataLoader:
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
        return [self._loader(self.test_set, shuffle=False)]
