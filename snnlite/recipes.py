"""How thresholds are chosen: recipes that stand at the activation sites during calibration.

A recipe is a small module put in place of an activation site while calibration batches run
through the network (eval mode, no gradients). It sees the site's input current ``z`` and
returns what the next layer should see; afterwards :meth:`ThresholdRecipe.threshold` gives the
site's threshold. The converter (:mod:`snnlite.convert`) is separate from the recipes, as in
SpikingJelly's ann2snn.

* :class:`LocalThresholdBalancing` (book chapter 3): ``theta <- theta + c * mean 2 (z - theta)+``
  from ``theta = 0``, once per batch, output ``clip(z, 0, theta)`` with the updated theta, so a
  layer sees inputs produced with the already-updated thresholds upstream. The expected step
  is never negative and every ``theta >= max z`` is a fixed point (a step of c = 1 from below
  can also jump past the maximum), so the number of updates K is a hidden percentile:
  ``P(z > theta_K) ~ 1 / (2K)``.
* :class:`MaxNorm` (Diehl et al. 2015): the maximum activation.
* :class:`RobustNorm` (Rueckauer et al. 2017): a percentile (99.9 by default) of the positive
  activations.

Max and robust norm observe the original ANN (ReLU, not clipped), as their authors did.
Granularity ``"layer"`` gives one scalar threshold per site, ``"channel"`` one per conv
channel or linear feature (dim 1 of the activation).

Under an initialised process group (:mod:`snnlite.distributed`) each rank runs its share of
the calibration batches and the recipes combine what the ranks saw, the way
``SyncBatchNorm`` combines batch statistics, so that every rank ends with the thresholds of
one process that saw the global batches (every rank's k-th batch, in rank order): LTB
all-reduces its excess sums and counts at every step (every rank must run the same number
of steps, which :func:`snnlite.convert.calibrate` sees to); max-norm all-reduces its
maximum once, when the threshold is read; robust norm gathers every rank's sampled values
then (the same percentile as one process's whenever no batch had more values than
``samples_per_batch``; beyond that each rank samples its own share).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from snnlite import distributed, kernels
from snnlite.neurons import broadcast_threshold

__all__ = ["LocalThresholdBalancing", "MaxNorm", "RobustNorm", "ThresholdRecipe", "make_recipe"]

Granularity = Literal["layer", "channel"]


def _reduce_dims(z: Tensor, granularity: Granularity) -> tuple[int, ...]:
    """Dims averaged over for one threshold: all but the channel dim (1) for 'channel'."""
    if granularity == "layer":
        return tuple(range(z.dim()))
    if z.dim() < 2:
        raise ValueError(f"channel thresholds need an (N, C, ...) activation, got {tuple(z.shape)}")
    return (0, *range(2, z.dim()))


def _fused(z: Tensor) -> bool:
    """Whether LTB's per-plane kernels (:mod:`snnlite.kernels`) take ``z``: a contiguous
    (N, C, ...) CPU float tensor."""
    return kernels.available(z) and z.dim() >= 2 and z.is_contiguous()


def excess_sums(z: Tensor, theta: Tensor) -> Tensor:
    """Sum of ``max(z - theta, 0)`` per threshold (float64, shape of ``theta``): () for a
    layer threshold, (C,) for channel thresholds of an (N, C, ...) activation. LTB's
    statistic; a fused kernel on contiguous CPU tensors, torch ops otherwise."""
    if _fused(z):
        return kernels.excess_sums_cpu(z, theta)
    dims = _reduce_dims(z, "channel" if theta.dim() == 1 else "layer")
    excess = (z - broadcast_threshold(theta.to(z.dtype), z.dim())).clamp_(min=0)
    return excess.sum(dim=dims, dtype=torch.float64)


def _per_channel(z: Tensor) -> Tensor:
    """(N, C, ...) -> (C, N * ...): one row of values per channel."""
    return z.transpose(0, 1).reshape(z.shape[1], -1)


class ThresholdRecipe(nn.Module):
    """Base class: observe the input current of one activation site, then give its threshold."""

    def __init__(self, granularity: Granularity = "channel", cap: float = math.inf) -> None:
        super().__init__()
        if granularity not in ("layer", "channel"):
            raise ValueError(f"granularity must be 'layer' or 'channel', got {granularity!r}")
        self.granularity = granularity
        self.cap = cap  # the original activation's cap (6 for ReLU6)

    def activation(self, z: Tensor) -> Tensor:
        """The original activation (ReLU, or ReLU6 when capped)."""
        out = torch.relu(z)
        return out.clamp(max=self.cap) if math.isfinite(self.cap) else out

    def threshold(self) -> Tensor:
        """The calibrated threshold: shape () or (C,), finite, >= 0, at most the cap."""
        theta = self._threshold()
        return theta.clamp(min=0, max=self.cap).detach().clone()

    def _threshold(self) -> Tensor:
        raise NotImplementedError


class LocalThresholdBalancing(ThresholdRecipe):
    """Greedy minimisation of ``E || clip(z, 0, theta) - ReLU(z) ||^2`` (book chapter 3)."""

    def __init__(
        self, granularity: Granularity = "channel", cap: float = math.inf, step_size: float = 1.0
    ) -> None:
        super().__init__(granularity, cap)
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        self.step_size = step_size
        self.theta: Tensor | None = None
        self.updates = 0

    def forward(self, z: Tensor) -> Tensor:
        _reduce_dims(z, self.granularity)  # refuses a channel threshold without channels
        if self.theta is None:
            shape = () if self.granularity == "layer" else (z.shape[1],)
            self.theta = torch.zeros(shape, dtype=torch.float64, device=z.device)
        # Two passes over z: the statistic (a fused kernel on CPUs), then the output.
        # Calibration is meant to cost about as much as inference, and on a CPU each
        # elementwise pass costs as much as a small conv.
        per_threshold = z.numel() // self.theta.numel()  # values averaged into each theta
        excess = excess_sums(z, self.theta)
        if distributed.world_size() > 1:  # the global batch: every rank's share of this step
            totals = torch.cat([excess.reshape(-1), excess.new_tensor([per_threshold])])
            totals = distributed.all_reduce_sum(totals)
            excess, per_threshold = totals[:-1].reshape(excess.shape), totals[-1]
        mean_excess = excess / per_threshold  # E[(z - theta)+]
        self.theta += self.step_size * 2 * mean_excess
        self.updates += 1
        # clip(z, 0, min(theta, cap)): the original activation (ReLU or ReLU6) capped at the
        # updated theta, in one pass.
        ceiling = self.theta.clamp(max=self.cap)
        if ceiling.dim() == 0:  # a scalar bound: the fast path (tensor bounds are ~5x slower)
            return z.clamp(min=0.0, max=float(ceiling))
        if _fused(z):
            return kernels.clip_cpu(z, ceiling)  # channel bounds in one pass
        ceiling = broadcast_threshold(ceiling.to(z.dtype), z.dim())
        return torch.clamp(z, min=torch.zeros_like(ceiling), max=ceiling)

    def _threshold(self) -> Tensor:
        assert self.theta is not None, "no calibration batch reached this site"
        return self.theta.float()


class MaxNorm(ThresholdRecipe):
    """Threshold at the maximum activation seen in calibration (layer or channel)."""

    def __init__(self, granularity: Granularity = "channel", cap: float = math.inf) -> None:
        super().__init__(granularity, cap)
        self.maximum: Tensor | None = None

    def forward(self, z: Tensor) -> Tensor:
        a = self.activation(z)
        batch_max = a.amax() if self.granularity == "layer" else _per_channel(a).amax(dim=1)
        self.maximum = batch_max if self.maximum is None else torch.maximum(self.maximum, batch_max)
        return a

    def _threshold(self) -> Tensor:
        assert self.maximum is not None, "no calibration batch reached this site"
        return distributed.all_reduce_max(self.maximum).float()


class RobustNorm(ThresholdRecipe):
    """Threshold at a percentile of the positive activations (nearest rank).

    Keeping every activation of a large calibration set is not possible, so each batch
    contributes a seeded random sample of at most ``samples_per_batch`` values per threshold;
    with the default (2**16) the 99.9th percentile rests on about 65 values above it per batch.
    """

    def __init__(
        self,
        granularity: Granularity = "channel",
        cap: float = math.inf,
        percentile: float = 99.9,
        samples_per_batch: int = 2**16,
        seed: int = 0,
    ) -> None:
        super().__init__(granularity, cap)
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.percentile = percentile
        self.samples_per_batch = samples_per_batch
        self.generator = torch.Generator().manual_seed(seed)
        self.samples: list[Tensor] = []  # each (rows, m): rows = 1 or C

    def forward(self, z: Tensor) -> Tensor:
        a = self.activation(z)
        rows = a.reshape(1, -1) if self.granularity == "layer" else _per_channel(a)
        if rows.shape[1] > self.samples_per_batch:
            pick = torch.randperm(rows.shape[1], generator=self.generator)
            rows = rows[:, pick[: self.samples_per_batch].to(rows.device)]
        self.samples.append(rows.detach().float().cpu())
        return a

    def _threshold(self) -> Tensor:
        assert self.samples, "no calibration batch reached this site"
        values = distributed.all_gather_cat(torch.cat(self.samples, dim=1), dim=1)  # (rows, m)
        positive = values > 0
        count = positive.sum(dim=1)
        ordered = torch.where(positive, values, torch.full_like(values, math.inf)).sort(dim=1)
        rank = torch.ceil(count * (self.percentile / 100)).long().clamp(min=1) - 1
        picked = ordered.values.gather(1, rank.clamp(max=values.shape[1] - 1)[:, None])[:, 0]
        theta = torch.where(count > 0, picked, torch.zeros_like(picked))  # never active: silent
        return theta[0] if self.granularity == "layer" else theta


def make_recipe(
    method: str,
    granularity: Granularity,
    cap: float,
    *,
    step_size: float = 1.0,
    percentile: float = 99.9,
) -> ThresholdRecipe:
    """The recipe for ``method`` ("ltb", "max" or "robust") at one site."""
    if method == "ltb":
        return LocalThresholdBalancing(granularity, cap, step_size=step_size)
    if method == "max":
        return MaxNorm(granularity, cap)
    if method == "robust":
        return RobustNorm(granularity, cap, percentile=percentile)
    raise ValueError(f"method must be 'ltb', 'max' or 'robust', got {method!r}")
