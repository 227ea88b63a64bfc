"""common/imagefolder.py on a tiny generated ImageFolder: transforms, labels, errors, training,
and the run path: the `data` stage lists the folder, an `imagenet` run of `fit` streams from it
(or from `data.root`), and the key table says when the folder is absent."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from common.config import ConfigError, DataConfig, RunConfig, resolve
from common.data import load_prepared, prepare
from common.datasets import DataError, read_split
from common.imagefolder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataModule
from common.table import NOT_RUN, absent_folders, build_rows, to_markdown
from common.training import fit, load_network
from tests.conftest import TINY_PARAMS

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


def test_subsets_are_seeded_draws_and_the_listing_is_hashed(image_root: Path) -> None:
    sizes = DataConfig(val_size=0, train_size=4, test_size=5, test_curve_size=2)
    data = ImageFolderDataModule(image_root, 2, 0, subsets=sizes)
    data.setup()
    assert (len(data.train_set), len(data.test_set), len(data.test_curve_set)) == (4, 5, 2)
    assert {label for _, label in data.train_set} == {0, 1}  # a draw, not the first class's prefix
    whole = ready(image_root)
    assert whole.content_hash == data.content_hash  # the hash is of the folders, not the subset
    Image.new("RGB", (8, 8)).save(image_root / "train" / "dog" / "extra.png")
    assert ready(image_root).content_hash != whole.content_hash


class TinyConv(nn.Module):
    """A network `build_model` makes for any input: one strided conv, pooling, a linear layer."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 4, 16, stride=16), nn.ReLU())
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def imagenet_config(root: Path | None, **data) -> RunConfig:
    params = copy.deepcopy(TINY_PARAMS)
    params["datasets"] = ["imagenet"]
    params["profiles"]["default"]["datasets"] = {
        "imagenet": {
            "model": {"class_path": "tests.test_imagefolder.TinyConv"},
            "data": {"val_size": 0, "workers": 0, "root": root and str(root), **data},
            "optim": {"batch_size": 4},
        }
    }
    params["networks"]["tiny"] = {}
    return resolve(params, paper="tiny_paper", arm="tiny", dataset="imagenet", seed=0)


def test_fit_streams_an_imagenet_run_from_the_folder_its_data_stage_listed(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "raw" / "imagenet")
    prepare("imagenet", tmp_path / "raw", tmp_path / "imagenet.pt")  # the `data` stage
    listing = load_prepared(tmp_path / "imagenet.pt")
    assert (listing["root"], listing["num_classes"]) == (str(tmp_path / "raw" / "imagenet"), 2)
    out = tmp_path / "run"
    metrics = fit(imagenet_config(None, test_curve_size=4), tmp_path / "imagenet.pt", out)
    assert (metrics["train_images"], metrics["test_images"], metrics["test_curve_images"]) == (
        6, 6, 4,
    )  # fmt: skip
    assert metrics["epochs"] == 2 and 0 <= metrics["test_error"] <= 100
    saved = json.loads((out / "config.json").read_text())
    assert (saved["input_shape"], saved["num_classes"]) == ([3, 224, 224], 2)
    network, config = load_network(out)
    assert config.dataset == "imagenet" and network.fc.out_features == 2
    Image.new("RGB", (8, 8)).save(tmp_path / "raw" / "imagenet" / "val" / "cat" / "new.png")
    with pytest.raises(DataError, match=r"has changed since the `data` stage listed it; re-run"):
        fit(imagenet_config(None), tmp_path / "imagenet.pt", tmp_path / "stale")


def test_imagenet_needs_its_folder_and_no_validation_split(tmp_path: Path) -> None:
    absent = re.escape(str(tmp_path / "absent"))
    with pytest.raises(DataError, match=rf"^data\.root: {absent} does not exist"):
        fit(imagenet_config(tmp_path / "absent"), None, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()
    with pytest.raises(ConfigError, match=r"^data\.val_size: 10 must be 0 for imagenet"):
        imagenet_config(tmp_path, val_size=10)
    with pytest.raises(DataError, match=r"^imagenet: streamed from its ImageFolder directory"):
        read_split("imagenet", tmp_path, train=True)
    absent = re.escape(str(tmp_path / "raw" / "imagenet"))
    with pytest.raises(DataError, match=rf"^data\.root: {absent} does not exist"):
        prepare("imagenet", tmp_path / "raw", tmp_path / "imagenet.pt")
    assert not (tmp_path / "imagenet.pt").exists()
    with pytest.raises(DataError, match=r"^data\.root: not set"):
        fit(imagenet_config(None), None, tmp_path / "run")


def test_a_prepared_data_set_needs_its_file(make_config, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data: fashion_mnist needs its prepared file"):
        fit(make_config(), None, tmp_path)


def test_table_rows_on_imagenet_say_when_its_folder_is_absent(tmp_path: Path) -> None:
    params = copy.deepcopy(TINY_PARAMS)
    root = tmp_path / "imagenet"
    params["profiles"]["paper"]["datasets"]["imagenet"] = {
        "data": {"val_size": 0, "root": str(root)}
    }
    row = {
        "id": "top1", "name": "ImageNet top-1 error", "source": "Table 4", "published": 24.7,
        "ours": {"metric": "test_error", "arm": "tiny", "dataset": "imagenet"},
    }  # fmt: skip
    line = f"not run: imagenet folder not found at {root} (paper)"
    assert absent_folders(tmp_path, params) == {"imagenet": line}  # from the profile with ImageNet
    [entry] = build_rows({"title": "T", "rows": [row]}, [], absent=absent_folders(tmp_path, params))
    assert (entry["how"], entry["verdict"]) == (line, NOT_RUN)
    assert f"| — | {line} | {NOT_RUN} |" in to_markdown("T", [entry])
    make_image_folder(root)
    assert absent_folders(tmp_path, params) == {}
    del params["profiles"]["paper"]["datasets"]["imagenet"]["data"]["root"]  # the data stage's
    assert absent_folders(tmp_path, params) == {
        "imagenet": "not run: imagenet folder not found at data/raw/imagenet (paper)"
    }
