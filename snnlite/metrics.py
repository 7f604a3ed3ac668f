"""Task metrics over time steps: how good the SNN is at each T, next to its ANN.

A time-step curve comes from ONE simulation per batch (``simulate`` reads out every T), so a
curve costs what its longest T costs. One loop does this for every task,
:func:`simulate_batches`: it simulates each batch once for a list of T and delays, hands
every ``(T, delay)`` readout to the caller's ``update`` (a stateful metric) and, when asked,
sums the events and SOPs of all batches. Accuracy, mIoU and mAP curves here, and the energy
measurements of :mod:`snnlite.energy`, are adapters on it. One evaluator per metric for the
ANN side too (:func:`ann_accuracy`, :func:`ann_miou`, :func:`ann_map`), used by the zoo, the
curves and the chapters alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from snnlite.network import Delay, SpikingNetwork
from snnlite.synapses import Activity

__all__ = [
    "accuracy_curve",
    "ann_accuracy",
    "ann_map",
    "ann_miou",
    "detection_map",
    "map_curve",
    "mean_iou",
    "miou_curve",
    "simulate_batches",
]


def _batches(images: Tensor, labels: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError("no images to evaluate")
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size], labels[start : start + batch_size]


def simulate_batches(
    snn: SpikingNetwork,
    batches: Iterable[tuple[Any, Any]],
    timesteps: Iterable[int],
    update: Callable[[dict[Any, Any], Any], None],
    *,
    delay: Delay | float | Sequence[Delay | float] = "auto",
    simulate: Callable[..., dict[Any, Any]] | None = None,
    record_spikes: bool = False,
    progress: bool = False,
    total: int | None = None,
    desc: str = "evaluate",
    **options: Any,
) -> Activity | None:
    """The evaluation loop: ONE simulation per batch, every readout fed to ``update``.

    ``batches`` yields ``(inputs, targets)``; for each, ``simulate(inputs, timesteps,
    delay=delay, ...)`` (default ``snn.simulate``; a spiking detector's ``simulate``, with its
    ``.snn`` as ``snn``, gives detections) returns ``{T: output}`` (``{(T, delay): output}``
    for a list of delays), and ``update(outputs, targets)`` updates the caller's metric.
    ``options`` go to ``simulate`` (chunk_size, batch_size, ...); ``total`` is the number of
    batches, for the progress bar.

    With ``record_spikes`` the same simulations count events and SOPs: their sum over all
    batches is returned and left in ``snn.last_activity`` (otherwise None is returned).
    """
    run = simulate or snn.simulate
    timesteps = sorted(set(timesteps))
    activity: Activity | None = None
    for inputs, targets in tqdm(batches, total=total, desc=desc, disable=not progress,
                                leave=False):  # fmt: skip
        outputs = run(inputs, timesteps, delay=delay, progress=False,
                      record_spikes=record_spikes, **options)  # fmt: skip
        update(outputs, targets)
        if record_spikes:
            batch = snn.last_activity
            activity = batch if activity is None else activity.merge(batch)
    if record_spikes:
        if activity is None:
            raise ValueError("no batches to simulate")
        snn.last_activity = activity
    return activity


@torch.no_grad()
def ann_accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of an ANN (the original or ``snn.relux()``)."""
    model.eval()
    correct = 0
    for x, y in _batches(images, labels, batch_size):
        correct += int((model(x).argmax(dim=1) == y).sum())
    return correct / len(images)


def accuracy_curve(
    snn: SpikingNetwork,
    images: Tensor,
    labels: Tensor,
    timesteps: Iterable[int],
    delay: Delay | float | Sequence[Delay | float] = "auto",
    batch_size: int = 500,
    progress: bool = True,
    record_spikes: bool = False,
) -> dict:
    """Top-1 accuracy of the SNN at every T in ``timesteps``: ``{T: accuracy}``.

    Several delays (a list) are read from the same simulation: ``{delay: {T: accuracy}}``.
    ``record_spikes=True`` also counts events and SOPs in the same simulations and leaves
    their total over all images in ``snn.last_activity`` (:mod:`snnlite.energy`).
    """
    timesteps = sorted(set(timesteps))
    delays = _delays(delay)
    correct = dict.fromkeys(((T, d) for T in timesteps for d in delays), 0)

    def update(outputs: dict[tuple, Tensor], y: Tensor) -> None:
        for key, logits in outputs.items():
            correct[key] += int((logits.argmax(dim=1) == y).sum())

    simulate_batches(snn, _batches(images, labels, batch_size), timesteps, update,
                     delay=delays, record_spikes=record_spikes, progress=progress,
                     total=-(-len(images) // batch_size))  # fmt: skip
    return _by_delay({key: hits / len(images) for key, hits in correct.items()}, delay)


def _delays(delay: Delay | float | Sequence[Delay | float]) -> list:
    return list(delay) if isinstance(delay, list | tuple) else [delay]


def _by_delay(values: dict[tuple[int, Any], Any], delay: Any) -> dict:
    """{(T, d): v} -> {T: v} for one delay, {d: {T: v}} for a list of delays."""
    if not isinstance(delay, list | tuple):
        return {T: v for (T, _), v in values.items()}
    return {d: {T: v for (T, dd), v in values.items() if dd == d} for d in delay}


def mean_iou(
    preds: Tensor, targets: Tensor, num_classes: int, ignore_index: int | None = None
) -> float:
    """Dataset-level mean IoU of semantic label maps, as PASCAL VOC scores it.

    ``preds`` and ``targets`` are integer label maps of one shape, e.g. (N, H, W); take
    ``logits.argmax(1)`` first. One confusion matrix is accumulated over all pixels
    (torchmetrics' ``MulticlassConfusionMatrix``), then ``IoU_c = TP / (TP + FP + FN)`` per
    class and the mean over the classes that occur in the predictions or the targets (a
    class absent from both has no defined IoU and is left out, not counted as 0 or 1).
    Background is an ordinary class (index 0 in FashionScenes), as in VOC. Pixels whose
    target equals ``ignore_index`` (VOC: 255 on object borders) count nowhere; if
    ``ignore_index`` is a valid class index, that class is dropped from the mean too.
    """
    from torchmetrics.classification import MulticlassConfusionMatrix

    if preds.shape != targets.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and targets {tuple(targets.shape)} differ")
    if preds.is_floating_point() or targets.is_floating_point():
        raise ValueError("mean_iou takes integer label maps; use logits.argmax(1) for preds")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if preds.numel() == 0:
        raise ValueError("no pixels to score")
    confmat = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=True)
    matrix = confmat(preds.flatten().long(), targets.flatten().long()).double()  # (C, C)
    tp = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - tp  # predicted + true - both
    valid = union > 0
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        valid[ignore_index] = False
    if not valid.any():
        raise ValueError("no class occurs in preds or targets (all pixels ignored?)")
    return float((tp[valid] / union[valid]).mean())


def detection_map(
    preds: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]]
) -> dict[str, float]:
    """COCO box mAP of detections, through torchmetrics with the pycocotools backend.

    ``preds``: one dict per image with ``boxes`` (K, 4) xyxy pixels, ``scores`` (K,),
    ``labels`` (K,) - what a torchvision detector returns in eval mode. ``targets``: one
    dict per image with ``boxes`` and ``labels`` (extra keys such as FashionScenes'
    ``masks`` are ignored). Returns ``map`` (mean over IoU 0.50:0.05:0.95 and classes),
    ``map_50``, ``map_75`` and ``mar_100`` (recall with up to 100 detections per image) as
    floats; pycocotools reports -1 for a quantity with no ground truth at all.
    """
    from torchmetrics.detection import MeanAveragePrecision

    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions but {len(targets)} targets")
    if len(preds) == 0:
        raise ValueError("no images to score")
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    keep_pred = ("boxes", "scores", "labels")
    keep_target = ("boxes", "labels")
    metric.update(
        [{k: p[k].detach().cpu() for k in keep_pred} for p in preds],
        [{k: t[k].detach().cpu() for k in keep_target} for t in targets],
    )
    result = metric.compute()
    return {k: float(result[k]) for k in ("map", "map_50", "map_75", "mar_100")}


def _segmentation_logits(output: Tensor | dict) -> Tensor:
    """torchvision segmentation models return ``{"out": logits}``; plain nets return logits."""
    return output["out"] if isinstance(output, dict) else output


@torch.no_grad()
def ann_miou(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    num_classes: int,
    batch_size: int = 50,
    ignore_index: int | None = None,
) -> float:
    """mIoU of a segmentation ANN (the original or ``snn.relux()``) on (N, 3, H, W) images."""
    model.eval()
    preds = [_segmentation_logits(model(x)).argmax(dim=1)
             for x, _ in _batches(images, masks, batch_size)]  # fmt: skip
    return mean_iou(torch.cat(preds), masks, num_classes, ignore_index)


def miou_curve(
    snn: SpikingNetwork,
    images: Tensor,
    masks: Tensor,
    num_classes: int,
    timesteps: Iterable[int],
    delay: Delay | float | Sequence[Delay | float] = "auto",
    batch_size: int = 50,
    ignore_index: int | None = None,
    progress: bool = True,
    record_spikes: bool = False,
    predictions: dict | None = None,
) -> dict:
    """mIoU of the SNN at every T in ``timesteps`` (one simulation per batch): ``{T: miou}``.

    Several delays (a list) are read from the same simulation: ``{delay: {T: miou}}``.
    ``record_spikes``: as in :func:`accuracy_curve`. ``predictions``: a dict that receives
    the label maps scored, ``{(T, delay): (N, H, W)}``, so that a viewer (the chapter's
    widget) shows any image at any of these T without simulating it again.
    """
    timesteps = sorted(set(timesteps))
    delays = _delays(delay)
    preds: dict[tuple, list[Tensor]] = {(T, d): [] for T in timesteps for d in delays}

    def update(outputs: dict[tuple, Any], _masks: Tensor) -> None:
        for key, output in outputs.items():
            preds[key].append(_segmentation_logits(output).argmax(dim=1))

    simulate_batches(snn, _batches(images, masks, batch_size), timesteps, update,
                     delay=delays, record_spikes=record_spikes, progress=progress,
                     total=-(-len(images) // batch_size))  # fmt: skip
    labels = {key: torch.cat(p) for key, p in preds.items()}
    if predictions is not None:
        predictions.update(labels)
    scores = {key: mean_iou(p, masks, num_classes, ignore_index) for key, p in labels.items()}
    return _by_delay(scores, delay)


def _image_batches(images: Sequence[Tensor], batch_size: int) -> Iterator[list[Tensor]]:
    if len(images) == 0:
        raise ValueError("no images to evaluate")
    for start in range(0, len(images), batch_size):
        yield list(images[start : start + batch_size])


@torch.no_grad()
def ann_map(
    detector: nn.Module,
    images: Sequence[Tensor],
    targets: Sequence[dict[str, Tensor]],
    batch_size: int = 50,
) -> dict[str, float]:
    """COCO mAP of a torchvision detector in eval mode (its own forward, end to end)."""
    detector.eval()
    preds = [d for batch in _image_batches(images, batch_size) for d in detector(batch)]
    return detection_map(preds, targets)


def map_curve(
    spiking_detector,  # snnlite.detection.SpikingDetector (not imported: no cycle)
    images: Sequence[Tensor],
    targets: Sequence[dict[str, Tensor]],
    timesteps: Iterable[int],
    delay: Delay | float | Sequence[Delay | float] = "auto",
    batch_size: int = 50,
    progress: bool = True,
    record_spikes: bool = False,
    predictions: dict | None = None,
) -> dict:
    """COCO mAP of a spiking detector at every T (one simulation per batch): ``{T: metrics}``.

    Several delays (a list) are read from the same simulation: ``{delay: {T: metrics}}``.
    ``record_spikes``: as in :func:`accuracy_curve`; the activity is left in
    ``spiking_detector.snn.last_activity``. ``predictions``: a dict that receives the
    detections scored, ``{(T, delay): [one dict per image]}`` (for a viewer, as in
    :func:`miou_curve`).
    """
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} targets")
    timesteps = sorted(set(timesteps))
    delays = _delays(delay)
    preds: dict[tuple, list[dict[str, Tensor]]] = {(T, d): [] for T in timesteps for d in delays}

    def update(found: dict[tuple, list[dict[str, Tensor]]], _targets: None) -> None:
        for key, detections in found.items():
            preds[key].extend(detections)

    batches = ((batch, None) for batch in _image_batches(images, batch_size))
    simulate_batches(spiking_detector.snn, batches, timesteps, update, delay=delays,
                     simulate=spiking_detector.simulate, record_spikes=record_spikes,
                     progress=progress, total=-(-len(images) // batch_size))  # fmt: skip
    if predictions is not None:
        predictions.update(preds)
    return _by_delay({key: detection_map(p, targets) for key, p in preds.items()}, delay)
