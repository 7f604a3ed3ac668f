"""Max pooling in time: the window winner chosen by accumulated input (book chapter 4).

Pooling the per-step currents of a time-varying input is biased: ``mean_t max_i z_i(t) >=
max_i mean_t z_i(t)``, and the gap grows with T. Gating each window by accumulated input
removes the bias in the limit: at every step the window passes the current of the position
whose input summed so far is largest. That winner settles on the position with the largest
mean, so the pooled average tends to ``max_i mean_t z_i``, what the ANN computes.

Gating is still off at finite T on currents. When the leader changes at step t, the pool
has passed the old leader's sum and now passes the new leader's current: it has passed
``S_old(t - 1) + z_new(t)``, not the new leader's sum ``S_new(t)``, and the difference stays in
every later readout. (On spike trains of one threshold the sums move in whole spikes, a new
leader takes over exactly at the old sum, and the gated pool passes the largest count.) The
error matters where the graph has moved a max pool before its neuron (Theorem 2): the pool
then sees the currents of a layer whose input spikes, which change leader often.
:class:`CumulativeMaxPool` is exact there too: at every step it passes the increment of the
window's largest accumulated input, so what it has passed after any t steps is
``max_i sum_{s<=t} z_i(s)``, the ANN's max of the means at every T, not only in the limit.

The running sum over a chunk is a cumulative sum, so the whole chunk is pooled in one call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnlite import kernels

__all__ = ["CumulativeMaxPool", "GatedMaxPool", "pool_with_indices"]

_MAX_POOLS = {
    nn.MaxPool1d: F.max_pool1d,
    nn.MaxPool2d: F.max_pool2d,
    nn.MaxPool3d: F.max_pool3d,
}
_ADAPTIVE_MAX_POOLS = {
    nn.AdaptiveMaxPool1d: F.adaptive_max_pool1d,
    nn.AdaptiveMaxPool2d: F.adaptive_max_pool2d,
    nn.AdaptiveMaxPool3d: F.adaptive_max_pool3d,
}
MAX_POOL_TYPES = tuple(_MAX_POOLS) + tuple(_ADAPTIVE_MAX_POOLS)


def pool_with_indices(pool: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Apply a max-pool module to ``x`` and also return the flat index of each window's winner."""
    if type(pool) in _MAX_POOLS:
        return _MAX_POOLS[type(pool)](
            x,
            pool.kernel_size,
            pool.stride,
            pool.padding,
            pool.dilation,
            ceil_mode=pool.ceil_mode,
            return_indices=True,
        )
    if type(pool) in _ADAPTIVE_MAX_POOLS:
        return _ADAPTIVE_MAX_POOLS[type(pool)](x, pool.output_size, return_indices=True)
    raise TypeError(f"not a max pool: {type(pool).__name__}")


def gather_windows(x: Tensor, indices: Tensor) -> Tensor:
    """Pick ``x`` at pooling ``indices`` (flat over the spatial dims, per sample and channel)."""
    flat = x.flatten(2)  # (B, C, H*W)
    picked = flat.gather(2, indices.flatten(2))  # (B, C, h*w)
    return picked.view(indices.shape)


class _PoolInTime(nn.Module):
    """A max-pool module with a running sum of its input per position, kept across chunks."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        if not isinstance(pool, MAX_POOL_TYPES):
            raise TypeError(f"{type(self).__name__} wraps a max pool, got {type(pool).__name__}")
        self.pool = pool
        self.running_sum: Tensor | None = None  # (N, C, ...): the input so far

    def reset(self) -> None:
        self.running_sum = None


class GatedMaxPool(_PoolInTime):
    """A max pool for inputs that vary in time: each window passes its accumulated-input winner.

    Input is time-folded, (steps * N, C, ...). ``running_sum`` (N, C, ...) persists across
    chunks until :meth:`reset`. On spike trains the pool is a spike source of its own (which
    spikes pass depends on the data); like the IF neuron it records nothing: the network's
    runner counts its nonzero outputs.
    """

    def forward(self, x: Tensor, steps: int, backend: str = "auto") -> Tensor:
        """x: (steps * N, C, ...); returns the pooled chunk, (steps * N, C, ...)."""
        batch = x.shape[0] // steps
        if backend != "torch" and kernels.gated_pool_supported(self.pool, x):
            if self.running_sum is None:
                self.running_sum = x.new_zeros((batch, *x.shape[1:]))
            return kernels.gated_max_pool_cpu(self.pool, x, self.running_sum, steps)
        per_step = x.reshape(steps, batch, *x.shape[1:])
        if self.running_sum is not None:
            # Sum in the same order as a step-by-step run (running sum first), so equal sums
            # round equally and ties between positions break the same way for any chunking.
            per_step = torch.cat([self.running_sum.unsqueeze(0), per_step])
        sums = torch.cumsum(per_step, dim=0)[-steps:]  # (steps, N, C, ...): input so far
        self.running_sum = sums[-1].clone()
        _, winners = pool_with_indices(self.pool, sums.reshape(x.shape))
        return gather_windows(x, winners)


class CumulativeMaxPool(_PoolInTime):
    """A max pool for inputs that vary in time, exact at every step: it passes the increment
    of each window's largest accumulated input.

    With ``S_i(t)`` the input position ``i`` has received up to step ``t`` and
    ``M(t) = max_i S_i(t)`` (``M(0) = 0``), the output at step ``t`` is ``M(t) - M(t - 1)``.
    The outputs of steps ``1..t`` sum to ``M(t)``: the window's largest input so far, so the
    pooled mean over any window starting at 0 is the ANN's ``max_i mean z_i``, where the
    gated pool (:class:`GatedMaxPool`) is off by the gap between the old and the new
    leader's sums at each change of leader. An
    increment can be negative (a leader's current turns negative): a current for the neuron
    after the pool. On spike trains whose window shares one threshold (a channel-wise or
    layer-wise site) every increment is 0 or ``theta`` (up to float rounding of the sums):
    a spike train again, which the runner counts like the gated pool's.

    Input is time-folded, (steps * N, C, ...); ``running_sum`` (N, C, ...) persists across
    chunks until :meth:`reset`, so any chunking gives the same sums.
    """

    def forward(self, x: Tensor, steps: int) -> Tensor:
        """x: (steps * N, C, ...); returns the pooled chunk, (steps * N, C, ...)."""
        batch = x.shape[0] // steps
        per_step = x.reshape(steps, batch, *x.shape[1:])
        if self.running_sum is None:
            self.running_sum = x.new_zeros(per_step[0].shape)
        # Summed one step after another, as a step-by-step run does (torch.cumsum may
        # associate differently), so that any chunking gives the same sums bit for bit.
        sums = [self.running_sum]
        for value in per_step:
            sums.append(sums[-1] + value)
        sums = torch.stack(sums)  # (steps + 1, N, C, ...): input so far, from the step before
        self.running_sum = sums[-1].clone()
        largest = self.pool(sums.flatten(0, 1))  # M(t - 1), M(t), ...: ((steps + 1) * N, C, ...)
        largest = largest.view(steps + 1, batch, *largest.shape[1:])
        return (largest[1:] - largest[:-1]).flatten(0, 1)
