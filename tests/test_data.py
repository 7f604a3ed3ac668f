"""Tests for snnlite.data: real data, offline, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snnlite.data import (
    augmented_crops,
    fashion,
    fashion_mnist,
    fashion_mnist_tensors,
    imagenet_batch,
    imagenet_transform,
    photo,
    photo_names,
)

# ---------------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory):
    """A fresh data root seeded offline (from Debian's package)."""
    if not fashion.DEBIAN_DIR.is_dir() and not fashion._has_raw(fashion.default_root()):
        pytest.skip("no offline Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    if fashion.DEBIAN_DIR.is_dir():
        return tmp_path_factory.mktemp("fmnist")
    return fashion.default_root()


def test_fashion_mnist_loads_offline(fashion_root):
    train = fashion_mnist("train", root=fashion_root, download=False)
    test = fashion_mnist("test", root=fashion_root, download=False)
    assert len(train) == 60000 and len(test) == 10000
    image, label = train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < 10


def test_fashion_mnist_tensors_match_dataset_and_normalised(fashion_root):
    images, labels = fashion_mnist_tensors("test", root=fashion_root, download=False)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (10000,) and labels.dtype == torch.int64
    assert labels.min() == 0 and labels.max() == 9
    assert torch.bincount(labels).tolist() == [1000] * 10
    ds = fashion_mnist("test", root=fashion_root, download=False)
    for i in (0, 1234, 9999):
        image, label = ds[i]
        torch.testing.assert_close(image, images[i])
        assert label == labels[i]
    subset = images[:2000]
    assert abs(subset.mean().item()) < 0.05
    assert abs(subset.std().item() - 1.0) < 0.05
    raw, _ = fashion_mnist_tensors("test", root=fashion_root, normalize=False, download=False)
    assert raw.min() >= 0 and raw.max() <= 1


def test_fashion_mnist_bad_split():
    with pytest.raises(ValueError, match="split"):
        fashion_mnist("validation")


def test_fashion_mnist_clear_error_without_data(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "no-debian")

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(fashion.datasets.FashionMNIST, "download", offline)
    with pytest.raises(RuntimeError, match="dataset-fashion-mnist") as info:
        fashion_mnist("train", root=tmp_path / "empty")
    assert "SNNLITE_DATA" in str(info.value)
    with pytest.raises(RuntimeError, match="download disabled"):
        fashion_mnist("test", root=tmp_path / "empty", download=False)


# ----------------------------------------------------------------------- photos


def test_photos_load_offline():
    names = photo_names()
    assert len(names) >= 4
    for name in names:
        image = photo(name)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        assert min(image.shape[:2]) >= 64
    with pytest.raises(ValueError, match="unknown photo"):
        photo("no-such-photo")


def test_imagenet_batch_and_transform():
    batch = imagenet_batch()
    assert batch.shape == (len(photo_names()), 3, 224, 224) and batch.dtype == torch.float32
    one = imagenet_transform()(photo(photo_names()[0]))
    torch.testing.assert_close(one, batch[0])
    assert imagenet_batch(size=96).shape[-2:] == (96, 96)


def test_augmented_crops_deterministic_per_seed():
    a = augmented_crops(6, seed=3, size=64)
    b = augmented_crops(6, seed=3, size=64)
    c = augmented_crops(6, seed=4, size=64)
    assert a.shape == (6, 3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()
