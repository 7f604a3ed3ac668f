"""Spiking one-stage detectors: only the network spikes, torchvision does everything else.

A torchvision ``RetinaNet`` or ``FCOS`` is two things: a network (backbone + FPN + head, a
CNN that :func:`snnlite.convert` can turn into a spiking network) and a pipeline around it
(resizing and normalising images, anchors, box decoding, score thresholds, NMS, mapping boxes
back to the original image sizes) that has data-dependent control flow and is not a neural
network at all. Converting the pipeline would be wrong; copying it would drift from
torchvision. So:

* :class:`DetectorNetwork` is the network part alone: the transformed image batch in, the
  head's output dictionary out. This is what gets converted and simulated.
* :func:`postprocess` runs the detector's own ``forward`` -- torchvision's code, unchanged --
  with its backbone and head swapped, on a shallow copy, for modules that return given head
  outputs (the SNN's windowed averages) and feature maps of the right shapes (anchors depend
  only on their sizes). Everything after the head is therefore exactly torchvision's.

:class:`SpikingDetector` ties the two together: ``simulate(images, timesteps)`` returns
torchvision-format detections for every T from one simulation.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from snnlite.convert import convert
from snnlite.graph import activation_sites
from snnlite.network import Delay, SpikingNetwork

__all__ = ["DetectorNetwork", "SpikingDetector", "convert_detector", "postprocess"]

Detections = list[dict[str, Tensor]]  # torchvision's format: boxes, scores, labels per image


class DetectorNetwork(nn.Module):
    """The network part of a torchvision one-stage detector (RetinaNet, FCOS).

    ``forward(images)``: the batch as the detector's ``transform`` leaves it, (N, 3, H, W),
    to the head outputs, e.g. ``{"cls_logits": (N, HWA, K), "bbox_regression": (N, HWA, 4)}``
    (FCOS adds ``"bbox_ctrness"``). The modules are the detector's own (shared, not copied).
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        for part in ("backbone", "head", "transform", "anchor_generator"):
            if not hasattr(detector, part):
                raise TypeError(
                    f"{type(detector).__name__} has no '{part}': expected a torchvision one-stage "
                    "detector (RetinaNet or FCOS)"
                )
        self.backbone = detector.backbone
        self.head = detector.head

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.backbone(images)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        return self.head(list(features.values()))


class _Returns(nn.Module):
    """A stand-in module that returns a fixed value whatever it is called with."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.value


def transformed_batch(detector: nn.Module, images: Sequence[Tensor] | Tensor) -> Tensor:
    """The network's input: ``images`` after the detector's own transform, (N, 3, H', W')."""
    images = list(images)
    with torch.no_grad():
        batch, _ = detector.transform(images)
    return batch.tensors


def feature_shapes(detector: nn.Module, batch: Tensor) -> list[torch.Size]:
    """Shapes of the backbone's feature maps for ``batch`` (from one image: they set anchors)."""
    with torch.no_grad():
        features = detector.backbone(batch[:1])
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    return [f.shape[1:] for f in features.values()]


@torch.no_grad()
def postprocess(
    detector: nn.Module,
    images: Sequence[Tensor],
    head_outputs: dict[str, Tensor],
    shapes: Sequence[torch.Size],
) -> Detections:
    """torchvision's own detections for ``images`` given the head outputs (see module doc).

    ``shapes``: the feature-map shapes (C, h, w) per level, from :func:`feature_shapes`.
    """
    images = list(images)
    n = len(images)
    features = OrderedDict(
        (str(level), torch.zeros((), dtype=head_outputs["cls_logits"].dtype).expand(n, *shape))
        for level, shape in enumerate(shapes)
    )
    replay = copy.copy(detector)  # shallow: shares every module and buffer with `detector`
    replay._modules = dict(detector._modules)  # ...except the module table we change below
    replay.backbone = _Returns(features)
    replay.head = _Returns(dict(head_outputs))
    replay.eval()
    return replay(images)


class SpikingDetector:
    """A detector whose network runs as a spiking network (see module doc).

    Attributes:
        detector: the original torchvision model (its transform and post-processing are used).
        snn: the converted :class:`DetectorNetwork`, a :class:`~snnlite.SpikingNetwork`.
    """

    def __init__(self, detector: nn.Module, snn: SpikingNetwork) -> None:
        self.detector = detector.eval()
        self.snn = snn

    def ann(self, images: Sequence[Tensor], clipped: bool = True) -> Detections:
        """Detections of the ANN side: the calibrated clipped ANN (``relux``), or the original."""
        batch = transformed_batch(self.detector, images)
        network = self.snn.ann if clipped else DetectorNetwork(self.detector)
        with torch.no_grad():
            outputs = network(batch)
        return postprocess(self.detector, images, outputs, feature_shapes(self.detector, batch))

    def prepared_ann(self, images: Sequence[Tensor]) -> Detections:
        """Detections of the converted network with every threshold infinite: the ANN after
        graph preparation alone (BN folded, GroupNorm frozen), i.e. what preparation costs."""
        network = self.snn.relux()  # a copy: the SNN's thresholds stay as they are
        for site in activation_sites(network).values():
            site.threshold = torch.full_like(site.threshold, float("inf"))
        batch = transformed_batch(self.detector, images)
        with torch.no_grad():
            outputs = network(batch)
        return postprocess(self.detector, images, outputs, feature_shapes(self.detector, batch))

    def simulate(
        self,
        images: Sequence[Tensor],
        timesteps: int | Iterable[int],
        delay: Delay | float | Sequence[Delay | float] = "auto",
        **options: Any,
    ) -> dict[Any, Detections]:
        """One simulation of the network; torchvision's detections for every requested T
        (``{(T, delay): ...}`` for a list of delays, as :meth:`SpikingNetwork.simulate`).

        ``options`` go to :meth:`SpikingNetwork.simulate` (chunk_size, batch_size, ...).
        """
        batch = transformed_batch(self.detector, images)
        readouts = self.snn.simulate(batch, timesteps, delay=delay, **options)
        shapes = feature_shapes(self.detector, batch)
        return {key: postprocess(self.detector, images, out, shapes)
                for key, out in readouts.items()}  # fmt: skip


def convert_detector(
    detector: nn.Module, calibration: Iterable[Any], **convert_options: Any
) -> SpikingDetector:
    """Convert a torchvision RetinaNet / FCOS: its network spikes, its pipeline stays torchvision's.

    Args:
        detector: an eval-mode ``RetinaNet`` or ``FCOS`` (copied by the converter, not changed).
        calibration: batches of images as the detector takes them: lists of (3, H, W) tensors,
            4-D tensors, or ``(images, targets)`` pairs (as from
            :func:`snnlite.data.collate_detection`). Each goes through the detector's transform.
        convert_options: passed to :func:`snnlite.convert` (method, granularity, group_norm,
            ...).
    """
    detector = detector.eval()
    network = DetectorNetwork(detector)
    batches = _TransformedBatches(detector, calibration)
    return SpikingDetector(detector, convert(network, batches, **convert_options))


class _TransformedBatches:
    """Calibration batches mapped through the detector's transform (re-iterable if the
    source is)."""

    def __init__(self, detector: nn.Module, calibration: Iterable[Any]) -> None:
        self.detector = detector
        self.calibration = calibration

    def __len__(self) -> int:
        return len(self.calibration)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Tensor]:
        for index, batch in enumerate(self.calibration):
            yield transformed_batch(self.detector, _images_of(batch, index))


def _images_of(batch: Any, index: int) -> Sequence[Tensor]:
    pair = isinstance(batch, list | tuple) and len(batch) == 2 and _are_targets(batch[1])
    if pair:
        images = batch[0]  # (images, targets)
    elif torch.is_tensor(batch):
        images = batch
    elif isinstance(batch, list | tuple) and batch and all(torch.is_tensor(b) for b in batch):
        images = batch  # a list of images
    else:
        raise TypeError(
            f"calibration batch {index} is a {type(batch).__name__}: expected a list of images, a "
            "4-D tensor, or an (images, targets) pair"
        )
    if len(images) == 0:
        raise ValueError(f"calibration batch {index} is empty")
    for image in images:
        if not torch.isfinite(image).all():
            raise ValueError(f"calibration batch {index} contains NaN or inf values")
    return images


def _are_targets(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(t, dict) for t in value)
