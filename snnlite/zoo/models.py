"""Architectures of the zoo's own Fashion-MNIST classifiers.

Both are deliberately built from plain, standard PyTorch/torchvision layers so a
converter sees exactly what it would see in a real pretrained model:

* :class:`FashionVGG` - conv3x3-BN-ReLU blocks with max pools *after* the ReLUs
  (the order ANN-to-SNN conversion handles best), one ``nn.ReLU`` module per use.
* :class:`FashionResNet` - stages of torchvision's own ``BasicBlock``. A
  ``BasicBlock`` calls its single ``self.relu`` twice (after ``bn1`` and after the
  residual add), so converters must cope with a ReLU module that is shared.

Widths are small on purpose: each model trains in minutes on one CPU thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    """conv3x3 (no bias: BN follows) -> BatchNorm -> ReLU."""
    return [
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class FashionVGG(nn.Module):
    """VGG-style CNN for 1x28x28 inputs.

    ``cfg`` lists conv widths with ``"M"`` for a 2x2 max pool, like torchvision's
    VGG configs. The default 28 -> 14 -> 7 -> 3 feature map is flattened into a
    small MLP head.
    """

    def __init__(
        self,
        cfg: Sequence[int | str] = (32, 32, "M", 64, 64, "M", 128, "M"),
        num_classes: int = 10,
        in_channels: int = 1,
        hidden: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        size = 28
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size //= 2
            else:
                layers += _conv_bn_relu(ch, int(v))
                ch = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(ch * size * size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FashionResNet(nn.Module):
    """A small ResNet for 1x28x28 inputs made of torchvision ``BasicBlock`` stages.

    Stem conv3x3-BN-ReLU at full 28x28 resolution (no 7x7/maxpool stem: the image
    is tiny), then one stage per entry of ``widths``. A stage with stride 2 halves
    the resolution in its first block, whose shortcut is conv1x1+BN exactly as
    torchvision's ``ResNet._make_layer`` builds it. The default downsamples in
    every stage (28 -> 14 -> 7 -> 4): that buys width 32/64/128 for the CPU
    time a full-resolution 16/32/64 net costs.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128),
        blocks: Sequence[int] = (1, 1, 1),
        strides: Sequence[int] = (2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, widths[0]))
        stages: list[nn.Module] = []
        ch = widths[0]
        for width, n, stride in zip(widths, blocks, strides):
            stages.append(self._make_stage(ch, width, n, stride))
            ch = width
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each block so every block starts as identity:
        # the usual torchvision ``zero_init_residual`` trick for short schedules.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    @staticmethod
    def _make_stage(in_ch: int, out_ch: int, n: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or in_ch != out_ch:
            downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch),
            )
        layers = [BasicBlock(in_ch, out_ch, stride=stride, downsample=downsample)]
        layers += [BasicBlock(out_ch, out_ch) for _ in range(n - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(self.flatten(self.avgpool(x)))
