"""Task metrics over time steps: how good the SNN is at each T, next to its ANN.

A time-step curve comes from ONE simulation per batch (``simulate`` reads out every T), so a
curve costs what its longest T costs. One loop does this for every task,
:func:`simulate_batches`: it simulates each batch once for a list of T and delays, hands
every ``(T, delay)`` readout to the caller's ``update`` and, when asked, sums the events and
SOPs of all batches. The metrics it feeds are stateful torchmetrics ``Metric`` objects, one
per ``(T, delay)``: :class:`TopOneAccuracy`, :class:`MeanIoU`, :class:`DetectionMAP`.
Accuracy, mIoU and mAP curves here, and the energy measurements of :mod:`snnlite.energy`,
are adapters on it. One evaluator per metric for the ANN side too (:func:`ann_accuracy`,
:func:`ann_miou`, :func:`ann_map`), used by the zoo, the curves and the chapters alike.

Why stateful metrics: their states are counts (correct answers, a confusion matrix) or
lists (detections) that can be summed or gathered over processes before the ratio is
taken. Under an initialised process group (:mod:`snnlite.distributed`) the curves simulate
only this rank's contiguous share of the images, the metrics combine every rank's states
when computed (and :func:`reduce_activity` the events and SOPs), and every rank returns the
numbers of the whole set. ``predictions`` are gathered too. The ANN evaluators
(:func:`ann_accuracy`, ...) and :func:`mean_iou` / :func:`detection_map` stay local.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision
from torchmetrics.functional.classification import multiclass_confusion_matrix
from tqdm.auto import tqdm

from snnlite import distributed
from snnlite.checks import reference_of
from snnlite.network import Delay, SpikingNetwork
from snnlite.synapses import Activity

__all__ = [
    "DetectionMAP",
    "MeanIoU",
    "TopOneAccuracy",
    "accuracy_curve",
    "ann_accuracy",
    "ann_map",
    "ann_miou",
    "detection_map",
    "map_curve",
    "mean_iou",
    "miou_curve",
    "reduce_activity",
    "simulate_batches",
]


# --- stateful metrics ------------------------------------------------------------------------


class TopOneAccuracy(Metric):
    """Top-1 accuracy from two int64 counts, ``correct`` and ``total``, summed over processes.

    ``update(logits, labels)``: logits (N, classes), labels (N,). ``compute()`` is
    ``correct / total`` in float64, the same number as Python's ``int / int``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    correct: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(
                f"logits (N, classes) and labels (N,) expected, got {tuple(logits.shape)} "
                f"and {tuple(labels.shape)}"
            )
        hits = (logits.argmax(dim=1) == labels.to(logits.device)).sum()
        self.correct += hits.to(self.correct.device)
        self.total += len(labels)

    def compute(self) -> Tensor:
        if self.total == 0:
            raise ValueError("no images were scored")
        return self.correct.double() / self.total.double()

    def counts(self) -> tuple[int, int]:
        """``(correct, total)`` over every process (this one's when alone)."""
        with self.sync_context(should_sync=self.sync_on_compute):
            return int(self.correct), int(self.total)


def _iou(matrix: Tensor, num_classes: int, ignore_index: int | None) -> Tensor:
    """VOC's mean IoU from a (C, C) confusion matrix of counts (see :func:`mean_iou`)."""
    matrix = matrix.double()
    tp = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - tp  # predicted + true - both
    valid = union > 0
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        valid[ignore_index] = False
    if not valid.any():
        raise ValueError("no class occurs in preds or targets (all pixels ignored?)")
    return (tp[valid] / union[valid]).mean()


class MeanIoU(Metric):
    """Dataset-level mean IoU of label maps (PASCAL VOC's rule, see :func:`mean_iou`) from
    one int64 confusion matrix, summed over processes.

    ``update(preds, targets)``: integer label maps of one shape, e.g. (N, H, W); pixels
    whose target is ``ignore_index`` (VOC: 255) count nowhere.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confmat: Tensor

    def __init__(self, num_classes: int, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        zeros = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.add_state("confmat", zeros, dist_reduce_fx="sum")

    def update(self, preds: Tensor, targets: Tensor) -> None:
        if preds.shape != targets.shape:
            raise ValueError(
                f"preds {tuple(preds.shape)} and targets {tuple(targets.shape)} differ"
            )
        if preds.is_floating_point() or targets.is_floating_point():
            raise ValueError("mean_iou takes integer label maps; use logits.argmax(1) for preds")
        if preds.numel() == 0:
            raise ValueError("no pixels to score")
        device = self.confmat.device
        matrix = multiclass_confusion_matrix(
            preds.flatten().long().to(device), targets.flatten().long().to(device),
            self.num_classes, ignore_index=self.ignore_index, validate_args=True,
        )  # fmt: skip
        self.confmat += matrix

    def compute(self) -> Tensor:
        return _iou(self.confmat, self.num_classes, self.ignore_index)


class DetectionMAP(Metric):
    """COCO box mAP (torchmetrics' ``MeanAveragePrecision``, pycocotools backend, as
    :func:`detection_map`) of per-image detections collected over processes.

    ``update(preds, targets)``: one dict per image each (``boxes``, ``scores``, ``labels``;
    ``boxes``, ``labels``), kept on the CPU. The whole lists are gathered before scoring:
    torchmetrics' own synchronisation gathers list states element by element, which needs
    the same number of images on every rank; one ``all_gather_object`` of each rank's list
    does not, and keeps the images in rank order (the original order under contiguous
    shards: COCO's evaluation breaks score ties by image order). ``sync_on_compute=False``
    scores this process's images alone.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    KEYS = ("pred_boxes", "pred_scores", "pred_labels", "target_boxes", "target_labels")

    def __init__(self, **kwargs: Any) -> None:
        gather = kwargs.pop("sync_on_compute", True)
        super().__init__(sync_on_compute=False, **kwargs)  # gathered in compute, see above
        self.gather = gather
        for key in self.KEYS:
            self.add_state(key, [], dist_reduce_fx=None)

    def update(
        self, preds: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]]
    ) -> None:
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions but {len(targets)} targets")
        for pred, target in zip(preds, targets):
            values = (pred["boxes"], pred["scores"], pred["labels"], target["boxes"],
                      target["labels"])  # fmt: skip
            for key, value in zip(self.KEYS, values):
                getattr(self, key).append(value.detach().cpu())

    def detections(self) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        """``(preds, targets)``: every image's, over every process when gathering."""
        lists = [getattr(self, key) for key in self.KEYS]
        if self.gather:
            ranks = distributed.all_gather_object(lists)
            lists = [[item for rank in ranks for item in rank[i]] for i in range(len(lists))]
        boxes, scores, labels, true_boxes, true_labels = lists
        preds = [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]
        targets = [{"boxes": b, "labels": c} for b, c in zip(true_boxes, true_labels)]
        return preds, targets

    def compute(self) -> dict[str, float]:
        preds, targets = self.detections()
        return detection_map(preds, targets)


def reduce_activity(activity: Activity) -> Activity:
    """Every process's events and SOPs summed (the same record on every rank; ``activity``
    itself when alone). Every rank must have simulated the same network to the same T."""
    if distributed.world_size() == 1:
        return activity
    names = list(activity.events)
    if distributed.all_gather_object(names) != [names] * distributed.world_size():
        raise ValueError("the processes recorded different spike sources")
    events = distributed.all_reduce_sum(torch.stack([activity.events[n] for n in names]))
    sops = distributed.all_reduce_sum(torch.stack([activity.sops[n] for n in names]))
    samples = distributed.all_reduce_sum(torch.tensor([activity.samples], dtype=torch.int64))
    return Activity(
        int(samples), dict(zip(names, events)), dict(zip(names, sops)),
        dict(activity.neurons), dict(activity.fanout),
    )  # fmt: skip


def _share(length: int, *sequences: Any) -> list[Any]:
    """This rank's contiguous share of each sequence (all of it when alone): every rank
    sees the same ``length``, so a refusal is raised on all of them alike."""
    world = distributed.world_size()
    if world > 1 and length < world:
        raise ValueError(f"{length} images cannot be shared by {world} processes")
    part = distributed.shard(length)
    return [sequence[part.start : part.stop] for sequence in sequences]


def _per_key(keys: Iterable[Any], make: Callable[[], Metric], device: Any) -> dict[Any, Metric]:
    return {key: make().to(device) for key in keys}


def _device_of(module: nn.Module) -> torch.device:
    reference = reference_of(module)
    return torch.device("cpu") if reference is None else reference[1]


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
    score = TopOneAccuracy(sync_on_compute=False).to(_device_of(model))
    for x, y in _batches(images, labels, batch_size):
        score.update(model(x), y)
    return float(score.compute())


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
    _check_pairs(images, labels, "labels")
    images, labels = _share(len(images), images, labels)
    keys = [(T, d) for T in timesteps for d in delays]
    scores = _per_key(keys, TopOneAccuracy, _device_of(snn.ann))

    def update(outputs: dict[tuple, Tensor], y: Tensor) -> None:
        for key, logits in outputs.items():
            scores[key].update(logits, y)

    activity = simulate_batches(snn, _batches(images, labels, batch_size), timesteps, update,
                                delay=delays, record_spikes=record_spikes, progress=progress,
                                total=-(-len(images) // batch_size))  # fmt: skip
    if activity is not None:
        snn.last_activity = reduce_activity(activity)
    return _by_delay({key: float(score.compute()) for key, score in scores.items()}, delay)


def _check_pairs(images: Sequence[Any], targets: Sequence[Any], what: str) -> None:
    """Inputs and targets agree in number, and there are some (checked before sharing)."""
    if len(images) != len(targets):
        raise ValueError(f"{len(images)} images but {len(targets)} {what}")
    if len(images) == 0:
        raise ValueError("no images to evaluate")


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
    (torchmetrics' ``multiclass_confusion_matrix``, in :class:`MeanIoU`), then
    ``IoU_c = TP / (TP + FP + FN)`` per class and the mean over the classes that occur in
    the predictions or the targets (a class absent from both has no defined IoU and is left
    out, not counted as 0 or 1).
    Background is an ordinary class (index 0 in FashionScenes), as in VOC. Pixels whose
    target equals ``ignore_index`` (VOC: 255 on object borders) count nowhere; if
    ``ignore_index`` is a valid class index, that class is dropped from the mean too.
    """
    score = MeanIoU(num_classes, ignore_index, sync_on_compute=False).to(preds.device)
    score.update(preds, targets)
    return float(score.compute())


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
    _check_pairs(images, masks, "masks")
    images, masks = _share(len(images), images, masks)
    keys = [(T, d) for T in timesteps for d in delays]
    scores = _per_key(keys, lambda: MeanIoU(num_classes, ignore_index), _device_of(snn.ann))
    kept: dict[tuple, list[Tensor]] = {key: [] for key in keys}

    def update(outputs: dict[tuple, Any], batch_masks: Tensor) -> None:
        for key, output in outputs.items():
            labels = _segmentation_logits(output).argmax(dim=1)
            scores[key].update(labels, batch_masks)
            if predictions is not None:
                kept[key].append(labels)

    activity = simulate_batches(snn, _batches(images, masks, batch_size), timesteps, update,
                                delay=delays, record_spikes=record_spikes, progress=progress,
                                total=-(-len(images) // batch_size))  # fmt: skip
    if activity is not None:
        snn.last_activity = reduce_activity(activity)
    if predictions is not None:
        gathered = {key: distributed.all_gather_cat(torch.cat(p)) for key, p in kept.items()}
        predictions.update(gathered)
    return _by_delay({key: float(score.compute()) for key, score in scores.items()}, delay)


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
    _check_pairs(images, targets, "targets")
    timesteps = sorted(set(timesteps))
    delays = _delays(delay)
    images, targets = _share(len(images), images, targets)
    keys = [(T, d) for T in timesteps for d in delays]
    scores = _per_key(keys, DetectionMAP, "cpu")  # detections are kept on the CPU
    kept: dict[tuple, list[dict[str, Tensor]]] = {key: [] for key in keys}

    def update(found: dict[tuple, list[dict[str, Tensor]]], truth: list[dict]) -> None:
        for key, detections in found.items():
            scores[key].update(detections, truth)
            if predictions is not None:
                kept[key].extend(detections)

    batches = zip(_image_batches(images, batch_size), _image_batches(targets, batch_size))
    snn = spiking_detector.snn
    activity = simulate_batches(snn, batches, timesteps, update, delay=delays,
                                simulate=spiking_detector.simulate, record_spikes=record_spikes,
                                progress=progress, total=-(-len(images) // batch_size))  # fmt: skip
    if activity is not None:
        snn.last_activity = reduce_activity(activity)
    if predictions is not None:
        predictions.update({key: _gather_list(found) for key, found in kept.items()})
    return _by_delay({key: score.compute() for key, score in scores.items()}, delay)


def _gather_list(items: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Every process's items in rank order (``items`` itself when alone), on the CPU."""
    if distributed.world_size() == 1:
        return items
    local = [{k: v.detach().cpu() for k, v in item.items()} for item in items]
    return [item for rank in distributed.all_gather_object(local) for item in rank]
