"""common/imagefolder.py on a tiny generated ImageFolder: transforms, labels, errors, training."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from common.datasets import DataError
from common.imagefolder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataModule

CLASSES = ("cat", "dog")  # folder order = label order


def make_image_folder(root: Path, per_class: int = 3) -> Path:
    """root/{train,val}/{cat,dog}/k.png: small RGB PNGs of differing sizes, seeded noise."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                pixels = rng.integers(0, 256, (20 + 4 * k, 30, 3), dtype=np.uint8)
                pixels[..., label] = 255  # class 0 reddish, class 1 greenish
                Image.fromarray(pixels).save(folder / f"{k}.png")
    return root


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "imagenet")


def ready(root: Path | None, batch_size: int = 2, num_workers: int = 0) -> ImageFolderDataModule:
    data = ImageFolderDataModule(root, batch_size=batch_size, num_workers=num_workers)
    data.setup()
    return data


def test_shapes_labels_and_fit_attributes(image_root: Path) -> None:
    data = ready(image_root)
    assert data.image_shape == (3, 224, 224)
    assert data.num_classes == 2
    assert data.eval_splits == ("test",)
    assert data.train_set.classes == data.test_set.classes == list(CLASSES)
    assert data.train_set.targets == data.test_set.targets == [0, 0, 0, 1, 1, 1]
    for dataset in (data.train_set, data.test_set):
        image, label = dataset[4]
        assert image.shape == (3, 224, 224) and image.dtype == torch.float32
        assert label == 1


def test_eval_is_a_normalised_center_crop_and_deterministic(image_root: Path) -> None:
    data = ready(image_root)
    image, _ = data.test_set[0]
    torch.testing.assert_close(data.test_set[0][0], image)
    # The 20x30 image resized to 256x384, its central 224x224: columns 80..303 of the resize.
    pil = Image.open(image_root / "val" / "cat" / "0.png").convert("RGB")
    resized = torch.from_numpy(np.array(pil.resize((384, 256), Image.BILINEAR))).float() / 255
    crop = resized[16:240, 80:304].permute(2, 0, 1)
    mean, std = (torch.tensor(v)[:, None, None] for v in (IMAGENET_MEAN, IMAGENET_STD))
    torch.testing.assert_close(image, (crop - mean) / std, atol=1e-6, rtol=0)
    # Training crops are random: two reads of one image differ.
    torch.manual_seed(0)
    assert not torch.equal(data.train_set[0][0], data.train_set[0][0])


def test_loaders_with_workers(image_root: Path) -> None:
    data = ready(image_root, batch_size=4, num_workers=2)
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 224, 224) and labels.shape == (4,)
    (val,) = data.val_dataloader()
    assert [y.tolist() for _, y in val] == [[0, 0, 0, 1], [1, 1]]  # unshuffled, folder order


def one_line_error(root: Path | None) -> str:
    with pytest.raises(DataError) as info:
        ready(root)
    message = str(info.value)
    assert "\n" not in message and message.startswith("data.root: ")
    return message


def test_missing_or_empty_directory_is_one_line_error(tmp_path: Path) -> None:
    expected = "expected a directory with train/ and val/, each holding one folder of images"
    absent = tmp_path / "nowhere"
    assert re.fullmatch(
        f"data.root: {absent} does not exist; {expected} per class", one_line_error(absent)
    )
    assert "data.root: not set" in one_line_error(None)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    assert f"{tmp_path / 'empty' / 'train'} has no class folders" in one_line_error(
        tmp_path / "empty"
    )


def test_class_without_images_or_mismatched_classes(image_root: Path) -> None:
    (image_root / "val" / "emu").mkdir()
    assert "Found no valid file for the classes emu" in one_line_error(image_root)
    Image.new("RGB", (8, 8)).save(image_root / "val" / "emu" / "0.png")
    assert "different class folders (e.g. emu)" in one_line_error(image_root)


class TinyNet(L.LightningModule):
    """A 2-class net small enough for 224x224 on a CPU; logs per split as Classifier does."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(4, 2)

    def _loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, labels = batch
        return F.cross_entropy(self.fc(self.net(images).flatten(1)), labels)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._loss(batch)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, idx: int = 0) -> None:
        split = self.trainer.datamodule.eval_splits[idx]
        self.log(f"{split}_loss", self._loss(batch), add_dataloader_idx=False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trains_with_lightning(image_root: Path) -> None:
    data = ImageFolderDataModule(image_root, batch_size=2, num_workers=1)
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyNet(), data)
    assert trainer.state.finished
    assert "test_loss" in trainer.callback_metrics
