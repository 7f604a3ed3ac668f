"""Tests for snnlite.data: real data, offline, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snnlite.data import (
    SCENE_CLASSES,
    DatasetNotFoundError,
    FashionScenes,
    augmented_crops,
    collate_detection,
    fashion,
    fashion_mnist,
    fashion_mnist_tensors,
    imagenet_batch,
    imagenet_transform,
    photo,
    photo_names,
    scene_tensors,
)
from tests.helpers import skip_or_fail

# ---------------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory):
    """A data root with Fashion-MNIST: a fresh one seeded offline if Debian's package is
    installed, else the default root (its cache, or torchvision's download into it).

    Without any of them the tests that need it fail in CI (``CI=true``, which ``make test``
    sets) with the command to fix it, so CI never goes green without them; elsewhere they
    are skipped with that message.
    """
    if fashion.DEBIAN_DIR.is_dir():
        return tmp_path_factory.mktemp("fmnist")
    root = fashion.default_root()
    try:
        fashion_mnist("test", root=root)  # the cache, or torchvision downloads all four files
    except DatasetNotFoundError as error:
        skip_or_fail(f"no Fashion-MNIST for these tests: {error}")
    return root


def test_a_missing_requirement_fails_in_ci_and_skips_elsewhere(monkeypatch):
    """The rule fashion_root follows: CI=true turns a would-be skip into a failure."""
    for value, outcome in (
        ("true", pytest.fail.Exception),
        ("1", pytest.fail.Exception),
        ("", pytest.skip.Exception),
        ("false", pytest.skip.Exception),
    ):
        monkeypatch.setenv("CI", value)
        with pytest.raises(outcome, match="make data"):
            skip_or_fail("no data: run `make data`")


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


# ----------------------------------------------------------------------- scenes


def _same_target(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_scenes_deterministic_and_random_access(fashion_root):
    first = FashionScenes("train", num_scenes=12, seed=5, root=fashion_root)
    again = FashionScenes("train", num_scenes=12, seed=5, root=fashion_root)
    other = FashionScenes("train", num_scenes=12, seed=6, root=fashion_root)
    for i in reversed(range(12)):  # different access order must not matter
        image_a, target_a = first[i]
        image_b, target_b = again[i]
        assert torch.equal(image_a, image_b) and _same_target(target_a, target_b)
    assert not torch.equal(first[0][0], other[0][0])
    images_a, semantic_a = scene_tensors("train", 6, 64, seed=5, root=fashion_root)
    images_b, semantic_b = scene_tensors("train", 6, 64, seed=5, root=fashion_root)
    assert torch.equal(images_a, images_b) and torch.equal(semantic_a, semantic_b)
    assert images_a.shape == (6, 3, 64, 64) and semantic_a.shape == (6, 64, 64)


def test_scene_targets_are_consistent(fashion_root):
    size = 96
    scenes = FashionScenes("test", num_scenes=60, size=size, seed=1, root=fashion_root)
    counts = set()
    for i in range(len(scenes)):
        image, target = scenes[i]
        assert image.shape == (3, size, size) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1
        boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
        semantic = target["semantic"]
        k = len(labels)
        counts.add(k)
        assert 1 <= k <= 4
        assert boxes.shape == (k, 4) and boxes.dtype == torch.float32
        assert labels.dtype == torch.int64 and masks.shape == (k, size, size)
        assert masks.dtype == torch.bool and semantic.dtype == torch.int64
        assert ((labels >= 1) & (labels <= 10)).all()
        assert masks.sum(0).max() <= 1  # visible masks never overlap
        assert torch.equal(semantic > 0, masks.any(0))
        for box, label, mask in zip(boxes, labels, masks):
            assert (semantic[mask] == label).all()
            rows = torch.nonzero(mask.any(1)).flatten()
            cols = torch.nonzero(mask.any(0)).flatten()
            tight = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]).float()
            assert torch.equal(box, tight)  # encloses every mask pixel, touches each edge
            assert mask.sum() >= 40
    assert counts == {1, 2, 3, 4}


def test_scene_items_come_from_their_split(fashion_root):
    pools = {
        split: fashion_mnist(split, root=fashion_root, normalize=False, download=False)
        for split in ("train", "test")
    }
    right_iou, wrong_iou = [], []
    for split, other in (("train", "test"), ("test", "train")):
        scenes = FashionScenes(split, num_scenes=30, seed=2, root=fashion_root)
        assert torch.equal(scenes.items, pools[split].data)
        for i in range(len(scenes)):
            _, target = scenes[i]
            sources = target["source_indices"]
            assert sources.max() < len(pools[split])
            assert torch.equal(target["labels"] - 1, pools[split].targets[sources])
            # The top item is unoccluded: its mask must be the source item's shape.
            x1, y1, x2, y2 = target["boxes"][-1].int().tolist()
            mask = target["masks"][-1, y1:y2, x1:x2]
            right_iou.append(_shape_iou(pools[split].data[sources[-1]], mask))
            # The same index in the other split (wrapped) is a different item.
            wrong_index = sources[-1] % len(pools[other])
            wrong_iou.append(_shape_iou(pools[other].data[wrong_index], mask))
    right, wrong = torch.tensor(right_iou), torch.tensor(wrong_iou)
    # Each top item matches its claimed source better than the other split's item.
    assert (right > wrong).all()
    assert right.mean() > 0.95 and wrong.mean() < 0.75


def _shape_iou(item: torch.Tensor, mask: torch.Tensor) -> float:
    """IoU of a 28x28 uint8 item's thresholded shape, stretched to the mask's size."""
    shape = item.float() / 255 > 0.2
    rows = torch.nonzero(shape.any(1)).flatten()
    cols = torch.nonzero(shape.any(0)).flatten()
    crop = item[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].float()[None, None] / 255
    resized = torch.nn.functional.interpolate(crop, size=mask.shape, mode="bilinear")
    resized = resized[0, 0] > 0.2
    return ((resized & mask).sum() / (resized | mask).sum()).item()


def test_collate_detection_and_bad_arguments(fashion_root):
    scenes = FashionScenes("test", num_scenes=3, size=64, seed=0, root=fashion_root)
    images, targets = collate_detection([scenes[0], scenes[1]])
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == 2
    assert images[0].shape == (3, 64, 64) and "boxes" in targets[1]
    assert SCENE_CLASSES[0] == "background" and len(SCENE_CLASSES) == 11
    with pytest.raises(ValueError, match="split"):
        FashionScenes("val", root=fashion_root)
    with pytest.raises(ValueError, match="size"):
        FashionScenes("train", size=16, root=fashion_root)
    with pytest.raises(IndexError):
        scenes[3]
