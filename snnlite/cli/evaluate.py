"""The command line's evaluation: ONE function that scores a converted classifier.

:func:`evaluate` reads batches, scores the ANN, the clipped ANN and the SNN (every T and
delay from one simulation per batch, events and SOPs recorded in the same runs) with
:class:`snnlite.metrics.TopOneAccuracy` and returns plain counts. Under ``torchrun`` each
process evaluates its own contiguous share of the images (:func:`evaluation_loader`, a
:class:`snnlite.distributed.ShardSampler`: no image twice, none left out) and the counts and
the activity are summed over the processes before :func:`evaluate` returns, so every rank
holds the whole set's numbers and rank 0's report equals one process's.
:func:`process_group` and :func:`is_writer` say whether this process runs under ``torchrun``
and whether it writes the report (rank 0 only).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from snnlite import distributed
from snnlite.cli.report import Scores
from snnlite.metrics import TopOneAccuracy, reduce_activity, simulate_batches
from snnlite.network import SpikingNetwork
from snnlite.synapses import Activity

__all__ = ["Evaluation", "evaluate", "evaluation_loader", "is_writer", "process_group"]


@dataclass
class Evaluation:
    """What :func:`evaluate` counted: correct answers per model and per (T, delay)."""

    images: int
    ann_correct: int
    clipped_correct: int
    snn_correct: dict[tuple[int, Any], int]
    activity: Activity | None

    def accuracy(self, T: int, delay: Any) -> float:
        return self.snn_correct[(T, delay)] / self.images

    def scores(self) -> Scores:
        """The counts as the report's :class:`~snnlite.cli.report.Scores` (top-1 accuracy)."""
        snn = {key: correct / self.images for key, correct in self.snn_correct.items()}
        return Scores("accuracy", "top-1 accuracy", self.images, self.ann_correct / self.images,
                      self.clipped_correct / self.images, snn)  # fmt: skip


def evaluation_loader(dataset: Dataset, batch_size: int) -> DataLoader:
    """Batches of this process's contiguous share of ``dataset`` (all of it when alone)."""
    size = len(dataset)  # type: ignore[arg-type]
    if size < distributed.world_size():
        raise ValueError(
            f"{size} evaluation images cannot be shared by {distributed.world_size()} processes"
        )
    return DataLoader(dataset, batch_size=batch_size, sampler=distributed.ShardSampler(size))


def evaluate(
    model: nn.Module,
    snn: SpikingNetwork,
    batches: Iterable[tuple[Tensor, Tensor]],
    timesteps: Sequence[int],
    delays: Sequence[Any],
    *,
    device: torch.device | str = "cpu",
    total: int | None = None,
    progress: bool = True,
) -> Evaluation:
    """Top-1 counts of the ANN, the clipped ANN and the SNN on ``batches`` of (images, labels).

    ``batches``: this process's share of the evaluation set (:func:`evaluation_loader`);
    the returned counts and activity are every process's summed. The SNN's readouts come
    from :func:`snnlite.metrics.simulate_batches` (one simulation per batch for every T and
    delay, recording events and SOPs) and every score from the metric the library's
    evaluators use, so the numbers equal the library's on the same images.
    """
    clipped = snn.relux()
    model.eval()
    ann_score, clipped_score = TopOneAccuracy().to(device), TopOneAccuracy().to(device)
    snn_scores = {(T, d): TopOneAccuracy().to(device) for T in timesteps for d in delays}

    def pairs() -> Iterable[tuple[Tensor, Tensor]]:
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            with torch.no_grad():
                ann_score.update(model(images), labels)
                clipped_score.update(clipped(images), labels)
            yield images, labels

    def update(outputs: dict[tuple[int, Any], Tensor], labels: Tensor) -> None:
        for key, logits in outputs.items():
            snn_scores[key].update(logits, labels)

    activity = simulate_batches(snn, pairs(), timesteps, update, delay=list(delays),
                                record_spikes=True, progress=progress, total=total,
                                desc="evaluate")  # fmt: skip
    ann_correct, images = ann_score.counts()  # every process's, summed
    clipped_correct, _ = clipped_score.counts()
    snn_correct = {key: score.counts()[0] for key, score in snn_scores.items()}
    if activity is not None:
        activity = snn.last_activity = reduce_activity(activity)
    return Evaluation(images, ann_correct, clipped_correct, snn_correct, activity)


def process_group(device: torch.device | str = "cpu") -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); False if alone.

    gloo when the work runs on CPUs, nccl when it runs on CUDA ``device``s (each process
    then takes the GPU of its ``LOCAL_RANK``, so that ``--device cuda`` means this
    process's own GPU). Already initialised groups are kept.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        gpus = torch.device(device).type == "cuda"
        if gpus:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if gpus else "gloo")
    return True


def is_writer() -> bool:
    """Only rank 0 writes reports and files; every process when run alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0
