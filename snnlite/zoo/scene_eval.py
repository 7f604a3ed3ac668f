"""FashionScenes splits and task metrics shared by the zoo's scene models, their training
scripts and their tests.

The registry pins the exact generator arguments (``TRAIN_SCENES``, ``TEST_SCENES``) so that
a metric in ``zoo.info()`` names the scenes it was measured on; everything here is
deterministic given those arguments. The metrics are :mod:`snnlite.metrics`' evaluators
(one per metric, used alike by the zoo, the curves and the chapters), with the scenes'
number of classes and the input layout filled in.
"""

from __future__ import annotations

from torch import Tensor, nn

from snnlite.data import SCENE_CLASSES, load_scenes
from snnlite.metrics import ann_map, ann_miou
from snnlite.zoo.registry import TEST_SCENES, TRAIN_SCENES

__all__ = [
    "NUM_CLASSES",
    "TEST_SCENES",
    "TRAIN_SCENES",
    "detection_metrics",
    "load_scenes",
    "segmentation_miou",
]

NUM_CLASSES = len(SCENE_CLASSES)  # background + 10


def segmentation_miou(
    model: nn.Module, images: Tensor, semantic: Tensor, batch_size: int = 100
) -> float:
    """mIoU (11 classes, background counted, VOC-style) of a model returning {"out": logits}."""
    return ann_miou(model, images, semantic.long(), NUM_CLASSES, batch_size)


def detection_metrics(
    model: nn.Module, images: Tensor, targets: list[dict[str, Tensor]], batch_size: int = 50
) -> dict[str, float]:
    """COCO mAP / mAP@.5 of a torchvision detector (eval mode) on stacked images."""
    return ann_map(model, list(images), targets, batch_size)
