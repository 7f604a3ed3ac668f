"""Task metrics over time steps: how good the SNN is at each T, next to its ANN.

A time-step curve comes from ONE simulation per batch (``simulate`` reads out every T), so a
curve costs what its longest T costs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from snnlite.network import Delay, SpikingNetwork

__all__ = ["accuracy_curve", "ann_accuracy"]


def _batches(images: Tensor, labels: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise ValueError("no images to evaluate")
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size], labels[start : start + batch_size]


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
    delay: Delay | float = "auto",
    batch_size: int = 500,
    progress: bool = True,
) -> dict[int, float]:
    """Top-1 accuracy of the SNN at every T in ``timesteps``: ``{T: accuracy}``."""
    timesteps = sorted(set(timesteps))
    correct = dict.fromkeys(timesteps, 0)
    batches = _batches(images, labels, batch_size)
    total = -(-len(images) // batch_size)
    for x, y in tqdm(batches, total=total, desc="evaluate", disable=not progress, leave=False):
        outputs = snn.simulate(x, timesteps, delay=delay, progress=False)
        for T, logits in outputs.items():
            correct[T] += int((logits.argmax(dim=1) == y).sum())
    return {T: correct[T] / len(images) for T in timesteps}
