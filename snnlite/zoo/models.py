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

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.resnet import BasicBlock
from torchvision.models.segmentation import FCN, DeepLabV3
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d


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


# ---------------------------------------------------------------- FashionScenes models
#
# Segmentation and detection models for ``snnlite.data.FashionScenes`` (3x96x96). They are
# torchvision's own model classes (FCN, DeepLabV3, RetinaNet, FCOS) on a small ResNet made of
# torchvision ``BasicBlock`` stages, so a converter meets the real torchvision structures
# (IntermediateLayerGetter, FCNHead, ASPP with its pooling branch, BackboneWithFPN with
# LastLevelP6P7, RetinaNetHead, FCOSHead) at a size that trains on one CPU thread.

SCENE_SIZE = 96  # FashionScenes' default canvas; the detectors never resize
SCENE_NUM_CLASSES = 11  # background + 10 Fashion-MNIST classes (as in target["semantic"])
# Per-channel statistics of FashionScenes train images (1000 scenes, seed 0). The detectors'
# GeneralizedRCNNTransform normalises with them; the segmentation models take the raw [0, 1]
# images (the BatchNorm after their first conv absorbs the offset), so all four models eat
# exactly what FashionScenes yields.
SCENE_MEAN = (0.496, 0.496, 0.493)
SCENE_STD = (0.228, 0.231, 0.233)


class SceneResNet(nn.Module):
    """A small ResNet trunk of torchvision ``BasicBlock`` stages, for 3xSxS scenes.

    Children in forward order ``conv1, bn1, relu, layer1, ..., layerN`` - the names and
    order torchvision's ResNet uses, so ``IntermediateLayerGetter`` and
    ``BackboneWithFPN`` can pick stages by name. ``BasicBlock`` refuses dilation, so the
    output stride is set by the stage strides alone (the stem conv3x3 has stride 2).
    ``norm_layer`` is ``nn.BatchNorm2d`` for training and
    ``torchvision.ops.misc.FrozenBatchNorm2d`` for the detection zoo models (as
    torchvision's detectors do); both share one state-dict layout.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128),
        strides: Sequence[int] = (2, 2, 1),
        blocks: Sequence[int] | None = None,
        stem_width: int = 24,
        in_channels: int = 3,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        blocks = (1,) * len(widths) if blocks is None else tuple(blocks)
        if not len(widths) == len(strides) == len(blocks):
            raise ValueError(f"{len(widths)} widths, {len(strides)} strides, {len(blocks)} blocks")
        self.conv1 = nn.Conv2d(in_channels, stem_width, 3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(stem_width)
        self.relu = nn.ReLU(inplace=True)
        ch = stem_width
        for i, (width, stride, n) in enumerate(zip(widths, strides, blocks), start=1):
            downsample = None
            if stride != 1 or ch != width:
                downsample = nn.Sequential(
                    nn.Conv2d(ch, width, 1, stride=stride, bias=False), norm_layer(width)
                )
            stage = [BasicBlock(ch, width, stride, downsample, norm_layer=norm_layer)]
            stage += [BasicBlock(width, width, norm_layer=norm_layer) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            ch = width
        self.out_channels = ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if isinstance(m, BasicBlock) and isinstance(m.bn2, nn.BatchNorm2d):
                nn.init.zeros_(m.bn2.weight)  # every block starts as identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


class SceneDeepLabHead(DeepLabHead):
    """torchvision's ``DeepLabHead`` (ASPP -> conv3x3-BN-ReLU -> conv1x1) at a chosen width.

    torchvision hard-codes 256 channels, which on a 128-channel trunk would be ~2 M head
    parameters and 5x the trunk's compute; the layer sequence here is identical, built
    from torchvision's own ``ASPP`` (1x1 branch, one 3x3 branch per atrous rate, the
    global-pooling branch, 1x1 projection with dropout) with ``width`` channels.
    """

    def __init__(
        self, in_channels: int, num_classes: int, atrous_rates: Sequence[int], width: int = 64
    ) -> None:
        nn.Sequential.__init__(
            self,
            ASPP(in_channels, atrous_rates, out_channels=width),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 1),
        )


def _seg_trunk(blocks: Sequence[int] = (1, 2, 2)) -> nn.Module:
    """Output stride 8 (96 -> 12): stem /2, layer1 /2, layer2 /2 (2 blocks), layer3 /1 (2)."""
    trunk = SceneResNet(widths=(32, 64, 128), strides=(2, 2, 1), blocks=blocks)
    return IntermediateLayerGetter(trunk, return_layers={"layer3": "out"})


def scenes_fcn(num_classes: int = SCENE_NUM_CLASSES) -> FCN:
    """torchvision ``FCN`` with its ``FCNHead`` on the stride-8 SceneResNet; {"out": logits}."""
    return FCN(_seg_trunk(), FCNHead(128, num_classes), aux_classifier=None)


def scenes_deeplabv3(num_classes: int = SCENE_NUM_CLASSES) -> DeepLabV3:
    """torchvision ``DeepLabV3`` (ASPP rates 2/4/6 for the 12x12 map, global-pool branch)."""
    head = SceneDeepLabHead(128, num_classes, atrous_rates=(2, 4, 6))
    return DeepLabV3(_seg_trunk(), head, aux_classifier=None)


def scene_fpn_backbone(
    norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d,
) -> BackboneWithFPN:
    """SceneResNet (strides 8/16/32 at layer2-4) + FPN (64 ch) + P6/P7: maps 12, 6, 3, 2, 1."""
    trunk = SceneResNet(widths=(32, 64, 128, 128), strides=(2, 2, 2, 2), norm_layer=norm_layer)
    return BackboneWithFPN(
        trunk,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=[64, 128, 128],
        out_channels=64,  # divisible by FCOS's 32 GroupNorm groups
        extra_blocks=LastLevelP6P7(64, 64),  # P6 from P5 (in == out channels)
    )


def scene_anchor_generator(per_location: int = 9) -> AnchorGenerator:
    """Anchors on the 5 FPN levels (12, 6, 3, 2, 1 px maps: strides 8, 16, 32, 48, 96).

    RetinaNet (``per_location=9``): 3 scales x 3 aspect ratios around bases 16-88 px, for
    items whose longest side is 24-56 px and whose tight visible boxes can be as thin as
    ~8 px. FCOS (``per_location=1``): one square anchor per location whose size torchvision
    reads as the level's scale: centre-sampling radius 1.5x size and regression range
    [4x, 8x] size; sizes 8, 16, ... as torchvision's FCOS uses, so every item (largest
    box side distance <= 56 px < 64) is learned on the 12x12 level.
    """
    if per_location == 1:
        return AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
    if per_location != 9:
        raise ValueError(f"per_location must be 1 (FCOS) or 9 (RetinaNet), got {per_location}")
    bases = (16, 28, 44, 64, 88)
    sizes = tuple(tuple(round(b * 2 ** (k / 3)) for k in range(3)) for b in bases)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(bases))


_DETECTOR_KW = dict(
    min_size=SCENE_SIZE,
    max_size=SCENE_SIZE,
    image_mean=list(SCENE_MEAN),
    image_std=list(SCENE_STD),
    detections_per_img=50,
)


_Detector = TypeVar("_Detector", RetinaNet, FCOS)


def _scene_detector(
    detector: type[_Detector],
    anchors: int,
    num_classes: int,
    norm_layer: Callable[[int], nn.Module],
) -> _Detector:
    """A torchvision one-stage ``detector`` on the scenes' FPN, ``anchors`` per location."""
    return detector(
        scene_fpn_backbone(norm_layer),
        num_classes,
        anchor_generator=scene_anchor_generator(anchors),
        **_DETECTOR_KW,
    )


def scenes_retinanet(
    num_classes: int = SCENE_NUM_CLASSES, norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d
) -> RetinaNet:
    """torchvision ``RetinaNet`` (its default head: conv-ReLU towers, no norm) on the FPN."""
    return _scene_detector(RetinaNet, 9, num_classes, norm_layer)


def scenes_fcos(
    num_classes: int = SCENE_NUM_CLASSES, norm_layer: Callable[[int], nn.Module] = FrozenBatchNorm2d
) -> FCOS:
    """torchvision ``FCOS`` (its default head: conv-GroupNorm(32)-ReLU towers) on the FPN."""
    return _scene_detector(FCOS, 1, num_classes, norm_layer)
