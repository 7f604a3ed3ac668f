"""The low-latency mode on a network nobody tuned it for: no per-model constants.

An all-convolutional CNN of another shape than the zoo's (strided convolutions instead of
pools, a global average pool, a hidden linear layer) is trained here, from a fixed seed, for
two short epochs on Fashion-MNIST, then converted with the defaults. Tuned for T = 8 it must
come within the issue's 2.5 points of its ANN at T = 8 and be far ahead of the paper's
network there, as the zoo's classifiers are.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import snnlite
from snnlite.data import fashion_mnist_tensors
from snnlite.metrics import accuracy_curve, ann_accuracy

TRAIN_IMAGES, EPOCHS, BATCH = 12000, 2, 100
TEST_IMAGES = 1000
GAP_AT_8 = 0.025  # the target: at most 2.5 points below the ANN at T = 8


def all_conv_net() -> nn.Sequential:
    """28x28 -> 10 logits; downsampling by stride-2 convolutions, no max pool."""

    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU()]  # fmt: skip

    return nn.Sequential(
        *block(1, 24, 1), *block(24, 48, 2), *block(48, 48, 1), *block(48, 96, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor]:
    """The trained network (eval mode) and its training images."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images, labels = fashion_mnist_tensors("train")
    images, labels = images[:TRAIN_IMAGES], labels[:TRAIN_IMAGES]
    model = all_conv_net()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(EPOCHS):
        model.train()
        for batch in torch.randperm(TRAIN_IMAGES, generator=gen).split(BATCH):
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    precise_batch_norm(model, images)
    return model.eval(), images


def precise_batch_norm(model: nn.Module, images: torch.Tensor) -> None:
    """Re-estimate every BatchNorm's statistics as plain averages over the training images.

    After two short epochs with Adam the running averages (momentum 0.1) still lag the
    weights, and the network in eval mode loses points it has in train mode (74.6% instead
    of 83.7% on the test images here): a known effect, fixed by one pass without gradients.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average
    model.train()
    with torch.no_grad():
        for batch in images.split(500):
            model(batch)


def test_target_8_works_on_a_network_outside_the_zoo(trained) -> None:
    model, images = trained
    x, y = fashion_mnist_tensors("test")
    x, y = x[:TEST_IMAGES], y[:TEST_IMAGES]
    calibration = list(images[:6000].split(100))  # cycled to the default 600 updates
    paper = snnlite.convert(model, calibration, progress=False)
    fast = snnlite.convert(model, calibration, target_timesteps=8, progress=False)
    ann = ann_accuracy(model, x, y)
    before = accuracy_curve(paper, x, y, [8], progress=False)[8]
    tuned = accuracy_curve(fast, x, y, [8], progress=False)[8]
    assert ann >= 0.80, ann  # a real classifier (83.7%), not a chance-level one
    assert ann - tuned <= GAP_AT_8, (ann, before, tuned)
    assert tuned >= before + 0.02, (before, tuned)
