"""common/data.py: the validation split, batch augmentation, ImageDataModule, prepared files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from common.config import ConfigError, DataConfig
from common.data import (
    ImageDataModule,
    load_prepared,
    random_crop,
    random_flip,
    split_indices,
)
from common.datasets import DataError

# ---- split_indices ----


def test_split_indices_sizes_disjoint_and_complete():
    train, val = split_indices(100, 20, seed=0)
    assert len(train) == 80 and len(val) == 20
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(100))


def test_split_indices_deterministic_per_seed():
    a_train, a_val = split_indices(100, 20, seed=0)
    b_train, b_val = split_indices(100, 20, seed=0)
    assert torch.equal(a_train, b_train) and torch.equal(a_val, b_val)
    _, c_val = split_indices(100, 20, seed=1)
    assert not torch.equal(a_val, c_val)
    assert set(a_val.tolist()) != set(c_val.tolist())


@pytest.mark.parametrize("val_size", [-1, 100, 101])
def test_split_indices_rejects_impossible_sizes(val_size):
    with pytest.raises(ConfigError, match=r"^data\.val_size:"):
        split_indices(100, val_size, seed=0)


# ---- random_crop / random_flip ----


def _random_images(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)


def _window_offsets(images: torch.Tensor, out: torch.Tensor, pad: int, mode: str) -> list:
    """Per image, the (dy, dx) of the window of the padded input that `out` equals (slow)."""
    h, w = images.shape[-2:]
    offsets = []
    for image, crop in zip(images, out, strict=True):
        if mode == "zeros":
            padded = F.pad(image, (pad, pad, pad, pad))
        else:
            padded = F.pad(image[None].float(), (pad, pad, pad, pad), mode="reflect")[0]
            padded = padded.to(image.dtype)
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(padded[:, dy : dy + h, dx : dx + w], crop)
        ]
        assert matches, "output is not a window of the padded input"
        offsets.append(matches[0])
    return offsets


def test_random_crop_without_padding_is_identity():
    images = _random_images(8, 3, 6, 6)
    assert torch.equal(random_crop(images, 0, "zeros"), images)
    assert torch.equal(random_crop(images, 0, "reflect"), images)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_random_crop_is_a_shifted_window_of_the_padded_input(mode):
    torch.manual_seed(0)
    pad = 2
    images = _random_images(64, 3, 7, 9)
    out = random_crop(images, pad, mode)
    assert out.shape == images.shape and out.dtype == images.dtype
    offsets = _window_offsets(images, out, pad, mode)
    # Random offsets per image, covering more than the centre.
    assert len(set(offsets)) >= 10
    assert {dy for dy, _ in offsets} == set(range(2 * pad + 1))
    assert {dx for _, dx in offsets} == set(range(2 * pad + 1))


def test_random_crop_zero_mode_brings_in_zeros_reflect_does_not():
    torch.manual_seed(0)
    images = torch.full((200, 1, 5, 5), 7, dtype=torch.uint8)
    zeros = random_crop(images, 2, "zeros")
    assert (zeros == 0).any() and set(zeros.unique().tolist()) == {0, 7}
    assert torch.equal(random_crop(images, 2, "reflect"), images)


def test_random_flip_mirrors_about_half():
    torch.manual_seed(0)
    images = _random_images(1000, 2, 4, 5)
    out = random_flip(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    mirrored = images.flip(-1)
    same = (out == images).flatten(1).all(1)
    flipped = (out == mirrored).flatten(1).all(1)
    assert not (same & flipped).any()  # random images are not symmetric
    assert (same | flipped).all()  # every output is the image or its exact mirror
    assert 400 < int(flipped.sum()) < 600


# ---- ImageDataModule ----


def _module(path: Path, batch_size: int = 64, **config) -> ImageDataModule:
    data = ImageDataModule(path, DataConfig(**config), batch_size)
    data.setup()
    return data


def _transfer_all(data: ImageDataModule, images: torch.Tensor) -> torch.Tensor:
    labels = torch.zeros(len(images), dtype=torch.long)
    return data.on_after_batch_transfer((images, labels), 0)[0]


def test_subset_sizes_and_split(prepared_file):
    data = _module(prepared_file, val_size=100, train_size=300, test_size=50)
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (300, 100, 50)
    assert data.num_classes == 10 and data.image_shape == (1, 12, 12)
    raw = load_prepared(prepared_file)
    train_idx, val_idx = split_indices(600, 100, seed=0)
    assert torch.equal(data.train_set.images, raw["train_images"][train_idx[:300]])
    assert torch.equal(data.val_set.labels, raw["train_labels"][val_idx])
    assert torch.equal(data.test_set.images, raw["test_images"][:50])


def test_no_validation_set_trains_on_everything_and_evaluates_test(prepared_file):
    data = _module(prepared_file, val_size=0)
    assert (len(data.train_set), len(data.val_set)) == (600, 0)
    assert data.eval_splits == ("test",) and len(data.val_dataloader()) == 1


def test_whole_sets_when_no_subset(prepared_file):
    data = _module(prepared_file, val_size=100)
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (500, 100, 200)


def test_split_seed_changes_the_validation_set(prepared_file):
    a = _module(prepared_file, val_size=100, split_seed=0)
    b = _module(prepared_file, val_size=100, split_seed=1)
    assert not torch.equal(a.val_set.images, b.val_set.images)


def test_per_pixel_mean_normalisation_centres_the_train_set(prepared_file):
    data = _module(prepared_file, val_size=100, train_size=300)
    assert data.mean.shape == (1, 12, 12)
    x = _transfer_all(data, data.train_set.images)
    assert x.dtype == torch.float32
    assert x.mean(0).abs().max() < 1e-5  # every pixel's mean is 0
    assert x.std() > 0.1  # and nothing was scaled away
    # The validation set is normalised with the train mean, not its own.
    expected = data.val_set.images.float() / 255 - data.mean
    assert torch.allclose(_transfer_all(data, data.val_set.images), expected)


def test_mean_std_normalisation_gives_unit_std_per_channel(prepared_rgb_file):
    data = _module(prepared_rgb_file, val_size=50, normalize="mean_std")
    assert data.mean.shape == (3, 1, 1) and data.std.shape == (3, 1, 1)
    x = _transfer_all(data, data.train_set.images)
    assert x.mean((0, 2, 3)).abs().max() < 1e-4
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-3)


def test_batches_are_uint8_until_transfer(prepared_file):
    data = _module(prepared_file, batch_size=64, val_size=100)
    images, labels = next(iter(data.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (64, 1, 12, 12)
    assert labels.dtype == torch.int64 and labels.shape == (64,)
    val_loader, test_loader = data.val_dataloader()
    val_images, _ = next(iter(val_loader))
    assert val_images.dtype == torch.uint8
    assert torch.equal(val_images, data.val_set.images[:64])  # not shuffled
    assert sum(len(b[1]) for b in test_loader) == 200
    out, out_labels = data.on_after_batch_transfer((images, labels), 0)
    assert out.dtype == torch.float32 and torch.equal(out_labels, labels)


def test_augmentation_only_while_training(prepared_file):
    torch.manual_seed(0)
    data = _module(prepared_file, val_size=100, pad=2, flip=True)
    images = data.train_set.images[:64]
    evaluated = _transfer_all(data, images)
    data.trainer = SimpleNamespace(training=False)
    assert torch.equal(_transfer_all(data, images), evaluated)
    data.trainer = SimpleNamespace(training=True)
    assert not torch.equal(_transfer_all(data, images), evaluated)


def test_no_augmentation_when_disabled(prepared_file):
    data = _module(prepared_file, val_size=100, pad=0, flip=False)
    images = data.train_set.images[:64]
    evaluated = _transfer_all(data, images)
    data.trainer = SimpleNamespace(training=True)
    assert torch.equal(_transfer_all(data, images), evaluated)


# ---- load_prepared ----


def test_load_prepared_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"^data: .*nope\.pt does not exist"):
        load_prepared(tmp_path / "nope.pt")


def test_load_prepared_incomplete_file(tmp_path):
    path = tmp_path / "partial.pt"
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    torch.save({"name": "mnist", "num_classes": 10, "train_images": images}, path)
    with pytest.raises(DataError, match="train_labels, test_images, test_labels"):
        load_prepared(path)


def test_data_module_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError):
        ImageDataModule(tmp_path / "nope.pt", DataConfig(val_size=10), 8).setup()
