"""Several processes, one result: the few ``torch.distributed`` calls the package makes.

Under ``torchrun`` (or any initialised default process group) calibration and evaluation
are split over the processes, and what each process measured is combined before anything
is reported: threshold statistics are all-reduced per calibration step
(:mod:`snnlite.recipes`), metric states are summed or gathered (:mod:`snnlite.metrics`).
This module is the one place that talks to ``torch.distributed``; every helper is a no-op
(or the identity) when no process group is initialised, so the single-process code paths
stay exactly as they were.

Sharding is contiguous and never pads: rank r takes the r-th of ``world_size`` near-equal
consecutive slices (:func:`shard`), so the counts of all ranks sum to the single-process
count, and concatenating what the ranks gathered, in rank order, restores the original
order (which the COCO mAP, sensitive to the order of tied scores, needs).
:class:`BatchShardSampler` splits every *batch* instead, for calibration, where a step is
the global batch made of every rank's share.

Collectives run on the backend's device (CUDA under nccl, CPU under gloo); the helpers move
tensors there and back, so callers need not care. Under nccl each process must have chosen
its GPU first (``torch.cuda.set_device``; :func:`snnlite.cli.evaluate.process_group` does).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sized
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Sampler

__all__ = [
    "BatchShardSampler",
    "ShardSampler",
    "all_gather_cat",
    "all_gather_object",
    "all_reduce_max",
    "all_reduce_sum",
    "broadcast_object",
    "count_ranks",
    "is_distributed",
    "rank",
    "shard",
    "world_size",
]

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether a default process group is initialised (with any number of processes)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group; 0 when alone."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Processes in the default group; 1 when alone."""
    return dist.get_world_size() if is_distributed() else 1


def _device() -> torch.device:
    """Where the backend's collectives run: the current GPU for nccl, the CPU otherwise."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce(tensor: Tensor, op: dist.ReduceOp) -> Tensor:
    if world_size() == 1:
        return tensor
    buffer = tensor.detach().to(_device(), copy=True)
    dist.all_reduce(buffer, op=op)
    return buffer.to(tensor.device)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The elementwise sum of ``tensor`` over all ranks (a new tensor; ``tensor`` itself
    when alone). Every rank gets the same values, bit for bit."""
    return _reduce(tensor, dist.ReduceOp.SUM)


def all_reduce_max(tensor: Tensor) -> Tensor:
    """The elementwise maximum of ``tensor`` over all ranks (``tensor`` itself when alone)."""
    return _reduce(tensor, dist.ReduceOp.MAX)


def count_ranks(flag: bool) -> int:
    """How many ranks pass ``flag=True``: e.g. whether every rank still has a batch."""
    if world_size() == 1:
        return int(flag)
    return int(all_reduce_sum(torch.tensor([int(flag)], dtype=torch.int64)).item())


def all_gather_cat(tensor: Tensor, dim: int = 0) -> Tensor:
    """Every rank's ``tensor`` concatenated along ``dim`` in rank order; lengths along
    ``dim`` may differ between ranks (the other dims and the dtype may not).

    ``torch.distributed.all_gather`` needs equal shapes, so the lengths are exchanged first
    and every piece is padded to the longest, gathered, and cut back.
    """
    world = world_size()
    if world == 1:
        return tensor
    device = _device()
    moved = tensor.detach().movedim(dim, 0).contiguous().to(device)
    lengths = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(lengths, torch.tensor([len(moved)], dtype=torch.int64, device=device))
    sizes = [int(n.item()) for n in lengths]
    padded = moved.new_zeros((max(sizes), *moved.shape[1:]))
    padded[: len(moved)] = moved
    pieces = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded)
    joined = torch.cat([piece[:n] for piece, n in zip(pieces, sizes)])
    return joined.movedim(0, dim).to(tensor.device)


def all_gather_object(obj: T) -> list[T]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` when alone). Tensors inside
    should be on the CPU: they are unpickled on the device they were sent from."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s picklable ``obj`` on every rank (``obj`` itself when alone)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shard(length: int, part: int | None = None, parts: int | None = None) -> range:
    """Rank ``part``'s contiguous share of ``range(length)`` among ``parts`` ranks (default:
    this rank of the default group). Shares differ in size by at most one and never overlap
    or pad, so they add up to ``length`` exactly; the first ``length % parts`` are longer."""
    part = rank() if part is None else part
    parts = world_size() if parts is None else parts
    if parts < 1 or not 0 <= part < parts:
        raise ValueError(f"shard {part} of {parts} does not exist")
    return range(part * length // parts, (part + 1) * length // parts)


class ShardSampler(Sampler[int]):
    """This rank's contiguous share of a data set's indices (:func:`shard`), in order.

    Unlike ``torch.utils.data.DistributedSampler`` it neither pads the shards to equal
    lengths (a padded image would be scored twice) nor strides them: the ranks' counts sum
    to the data set's size and their shares, concatenated in rank order, are the data set
    in its own order. For evaluation, where each rank runs its share at its own pace.
    """

    def __init__(self, data: Sized | int, part: int | None = None, parts: int | None = None):
        self.indices = shard(data if isinstance(data, int) else len(data), part, parts)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class BatchShardSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` consecutive indices, each split over the ranks: rank r
    gets the r-th contiguous share of every batch (a ``batch_sampler`` for a DataLoader).

    For calibration, where step k is the *global* batch made of every rank's k-th batch:
    the global batches are then exactly the batches one process would read with
    ``DataLoader(data, batch_size)``, so the thresholds equal that process's. Every rank
    needs a share of every step, so a last batch with fewer samples than ranks is dropped
    (with a warning); alone, nothing is ever dropped.
    """

    def __init__(
        self,
        data: Sized | int,
        batch_size: int,
        part: int | None = None,
        parts: int | None = None,
    ) -> None:
        length = data if isinstance(data, int) else len(data)
        parts = world_size() if parts is None else parts
        part = rank() if part is None else part
        if isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if batch_size < parts:
            raise ValueError(
                f"a batch of {batch_size} cannot be split over {parts} processes: "
                "choose a batch size of at least the number of processes"
            )
        starts = range(0, length, batch_size)
        self.batches = []
        for start in starts:
            stop = min(start + batch_size, length)
            if stop - start < parts:
                if part == 0:
                    warnings.warn(
                        f"the last batch ({stop - start} samples) is dropped: each of the "
                        f"{parts} processes needs a share of every batch",
                        stacklevel=2,
                    )
                continue
            share = shard(stop - start, part, parts)
            self.batches.append([start + i for i in share])

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(batch) for batch in self.batches])

    def __len__(self) -> int:
        return len(self.batches)
