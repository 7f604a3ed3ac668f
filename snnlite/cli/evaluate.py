"""The command line's evaluation: ONE function that scores a converted classifier.

:func:`evaluate` is the seam for running on several processes: it reads batches, scores the
ANN, the clipped ANN and the SNN (every T and delay from one simulation per batch, events and
SOPs recorded in the same runs) and returns plain counts. Counts, not ratios, so that shards
of the evaluation set can be summed across processes before anything is divided.
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

from snnlite.metrics import ann_accuracy, simulate_batches
from snnlite.network import SpikingNetwork
from snnlite.synapses import Activity

__all__ = ["Evaluation", "evaluate", "is_writer", "process_group"]


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

    The ANN scores come from :func:`snnlite.metrics.ann_accuracy`, the SNN's from
    :func:`snnlite.metrics.simulate_batches` (one simulation per batch for every T and delay,
    recording events and SOPs), so the numbers equal the library's on the same images.
    """
    clipped = snn.relux()
    counts = {"images": 0, "ann": 0, "clipped": 0}
    snn_correct = {(T, d): 0 for T in timesteps for d in delays}

    def pairs() -> Iterable[tuple[Tensor, Tensor]]:
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            n = len(labels)
            counts["images"] += n
            counts["ann"] += round(ann_accuracy(model, images, labels, batch_size=n) * n)
            counts["clipped"] += round(ann_accuracy(clipped, images, labels, batch_size=n) * n)
            yield images, labels

    def update(outputs: dict[tuple[int, Any], Tensor], labels: Tensor) -> None:
        for key, logits in outputs.items():
            snn_correct[key] += int((logits.argmax(dim=1) == labels).sum())

    activity = simulate_batches(snn, pairs(), timesteps, update, delay=list(delays),
                                record_spikes=True, progress=progress, total=total,
                                desc="evaluate")  # fmt: skip
    return Evaluation(counts["images"], counts["ann"], counts["clipped"], snn_correct, activity)


def process_group() -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); False if alone.

    gloo on CPUs, nccl when CUDA is available. Already initialised groups are kept.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def is_writer() -> bool:
    """Only rank 0 writes reports and files; every process when run alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0
