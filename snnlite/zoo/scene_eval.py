"""FashionScenes splits, task metrics, and the one way scene models are converted and scored,
shared by the zoo's scene models, their training scripts, their measurements
(:mod:`snnlite.zoo.dense_curves`), the ``snnlite`` command line and the tests.

The registry pins the exact generator arguments (``TRAIN_SCENES``, ``TEST_SCENES``) so that
a metric in ``zoo.info()`` names the scenes it was measured on; everything here is
deterministic given those arguments. The metrics are :mod:`snnlite.metrics`' evaluators
(one per metric, used alike by the zoo, the curves and the chapters), with the scenes'
number of classes and the input layout filled in.

:func:`convert_scene_model` and :func:`score_scene_model` are the conversion and the
evaluation behind every stored scene curve; the command line calls the same two, so that
``snnlite convert --model zoo:scenes_fcn`` and ``python -m snnlite.zoo.dense_curves`` cannot
drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from snnlite import metrics
from snnlite.convert import convert
from snnlite.data import SCENE_CLASSES, load_scenes
from snnlite.detection import DetectorNetwork, SpikingDetector, convert_detector, transformed_batch
from snnlite.graph import frozen_group_norms
from snnlite.metrics import ann_map, ann_miou
from snnlite.network import SpikingNetwork
from snnlite.zoo.registry import TEST_SCENES, TRAIN_SCENES

__all__ = [
    "DENSE_TASKS",
    "NUM_CLASSES",
    "TEST_SCENES",
    "TRAIN_SCENES",
    "SceneScores",
    "convert_scene_model",
    "detection_metrics",
    "load_scenes",
    "score_scene_model",
    "segmentation_miou",
]

NUM_CLASSES = len(SCENE_CLASSES)  # background + 10
DENSE_TASKS = ("segmentation", "detection")


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


def _check_task(task: str) -> None:
    if task not in DENSE_TASKS:
        raise ValueError(f"task must be one of {DENSE_TASKS}, got {task!r}")


def convert_scene_model(
    model: nn.Module, task: str, calibration: Iterable[Any], **options: Any
) -> SpikingNetwork | SpikingDetector:
    """Convert a scene model as the zoo's curves are measured: a segmenter whole, a one-stage
    detector's network part alone (:func:`snnlite.detection.convert_detector`: torchvision's
    pipeline stays analog around it).

    A detector's GroupNorms (FCOS's head towers) are frozen on the calibration scenes, since
    a GroupNorm is not linear per time step; a detector without any (RetinaNet) is unchanged
    by it. ``options`` go to :func:`snnlite.convert` (method, iterations, max_pool,
    target_timesteps, ...), and may override that ``group_norm``.
    """
    _check_task(task)
    if task == "segmentation":
        return convert(model, calibration, **options)
    return convert_detector(model, calibration, **{"group_norm": "freeze", **options})


@dataclass
class SceneScores:
    """What :func:`score_scene_model` measured. A metric is a float (mIoU) or the dict of
    :func:`snnlite.metrics.detection_map` (``map``, ``map_50``, ``map_75``, ``mar_100``)."""

    task: str
    ann: Any  # the original ANN's metric
    clipped: Any  # the calibrated clipped ANN's (``relux``), which the SNN converges to
    curves: dict[Any, dict[int, Any]]  # {delay: {T: metric}}
    network: SpikingNetwork  # what spikes; its last_activity holds every image's events
    ann_network: nn.Module  # the ANN counterpart of ``network``, whose MACs are counted
    example: Tensor  # one input as both networks see it
    frozen_group_norm: dict[str, float] | None = None  # a detector's ANN, GroupNorms frozen


def score_scene_model(
    model: nn.Module,
    converted: SpikingNetwork | SpikingDetector,
    task: str,
    test: dict,
    timesteps: Sequence[int],
    delays: Sequence[Any],
    batch_size: int = 50,
    progress: bool = True,
) -> SceneScores:
    """The ANN, the clipped ANN and the SNN (every T and delay from one simulation per batch,
    events and SOPs recorded) on ``test`` scenes, as :func:`snnlite.data.load_scenes` returns
    them.

    Under an initialised process group the SNN curves simulate this rank's share of the
    scenes and their metrics and activity are combined over the ranks
    (:func:`snnlite.metrics.miou_curve` / :func:`~snnlite.metrics.map_curve`); the ANN
    evaluators are local, so every rank scores every scene and gets the same numbers.
    """
    _check_task(task)
    if task == "segmentation":
        assert isinstance(converted, SpikingNetwork)
        return _score_segmentation(model, converted, test, timesteps, delays, batch_size,
                                   progress)  # fmt: skip
    assert isinstance(converted, SpikingDetector)
    return _score_detection(model, converted, test, timesteps, delays, batch_size, progress)


def _score_segmentation(
    model: nn.Module,
    snn: SpikingNetwork,
    test: dict,
    timesteps: Sequence[int],
    delays: Sequence[Any],
    batch_size: int,
    progress: bool,
) -> SceneScores:
    x, masks = test["images"], test["semantic"].long()
    ann = metrics.ann_miou(model, x, masks, NUM_CLASSES, batch_size)
    clipped = metrics.ann_miou(snn.relux(), x, masks, NUM_CLASSES, batch_size)
    curves = metrics.miou_curve(snn, x, masks, NUM_CLASSES, timesteps, list(delays), batch_size,
                                progress=progress, record_spikes=True)  # fmt: skip
    return SceneScores("segmentation", ann, clipped, curves, snn, model, x[:1])


def _score_detection(
    model: nn.Module,
    detector: SpikingDetector,
    test: dict,
    timesteps: Sequence[int],
    delays: Sequence[Any],
    batch_size: int,
    progress: bool,
) -> SceneScores:
    x, targets = list(test["images"]), test["targets"]
    ann = metrics.ann_map(model, x, targets, batch_size)
    relux = [d for i in range(0, len(x), batch_size)
             for d in detector.ann(x[i : i + batch_size])]  # fmt: skip
    clipped = metrics.detection_map(relux, targets)
    frozen = None
    if frozen_group_norms(detector.snn.ann):  # what freezing GroupNorm alone costs the ANN
        prepared = [d for i in range(0, len(x), batch_size)
                    for d in detector.prepared_ann(x[i : i + batch_size])]  # fmt: skip
        frozen = metrics.detection_map(prepared, targets)
    curves = metrics.map_curve(detector, x, targets, timesteps, list(delays), batch_size,
                               progress=progress, record_spikes=True)  # fmt: skip
    example = transformed_batch(model, x[:1])  # what the network part sees
    return SceneScores("detection", ann, clipped, curves, detector.snn, DetectorNetwork(model),
                       example, frozen)  # fmt: skip
