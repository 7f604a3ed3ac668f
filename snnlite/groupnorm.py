"""GroupNorm in a spiking network: statistics frozen from calibration data.

``GroupNorm`` normalises every sample by the mean and variance of its own activations in
each channel group. On spikes that is not linear per time step (the statistics of a binary
spike map at step t say nothing about the rate the ANN would see), so it has no exact
spiking counterpart. The treatment here: measure, on the calibration data, the per-sample
group statistics at each call site and average them over samples,

    m_g = E_n[mean_n,g],   s_g^2 = E_n[var_n,g],

then replace the call by the fixed per-channel affine ``y = (x - m_g) / sqrt(s_g^2 + eps) *
gamma_c + beta_c``. That is what BatchNorm does with running statistics, so after freezing the
layer is linear per step and the SNN computes it exactly. The price is paid on the ANN side,
once: samples whose statistics differ from the average are normalised slightly differently.
Measure it with ``relux()`` against the original model (chapter 8 of the book does).

Each *call* gets its own statistics: torchvision's FCOS head applies one GroupNorm module to
all five FPN levels, whose activation scales differ. Under a process group the sums are
added over the ranks when the statistics are frozen, so every rank freezes the same affine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnlite import distributed

__all__ = ["FrozenGroupNorm"]


class FrozenGroupNorm(nn.Module):
    """A GroupNorm call with statistics averaged over calibration samples (see module doc).

    While ``measuring`` it computes the exact GroupNorm and accumulates the per-sample
    statistics; afterwards it is a fixed per-channel affine (call :meth:`freeze`).
    """

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.num_groups = norm.num_groups
        self.num_channels = norm.num_channels
        self.eps = norm.eps
        weight = norm.weight.detach().clone() if norm.affine else torch.ones(norm.num_channels)
        bias = norm.bias.detach().clone() if norm.affine else torch.zeros(norm.num_channels)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("mean_sum", torch.zeros(norm.num_groups, dtype=torch.float64))
        self.register_buffer("var_sum", torch.zeros(norm.num_groups, dtype=torch.float64))
        self.register_buffer("samples", torch.zeros((), dtype=torch.float64))
        # The frozen affine, per channel: y = x * scale + shift.
        self.register_buffer("scale", torch.ones(norm.num_channels))
        self.register_buffer("shift", torch.zeros(norm.num_channels))
        self.measuring = True

    def forward(self, x: Tensor) -> Tensor:  # x: (N, C, ...)
        if self.measuring:
            grouped = x.detach().reshape(x.shape[0], self.num_groups, -1).double()
            self.mean_sum += grouped.mean(dim=2).sum(dim=0)
            self.var_sum += grouped.var(dim=2, unbiased=False).sum(dim=0)
            self.samples += x.shape[0]
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        view = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(view).to(x.dtype) + self.shift.view(view).to(x.dtype)

    @torch.no_grad()
    def freeze(self) -> None:
        """Fix the affine from the statistics measured so far (by every rank, under a
        process group: each rank must freeze its norms in the same order)."""
        if self.measuring:  # once: frozen sums are already every rank's
            for buffer in (self.mean_sum, self.var_sum, self.samples):
                buffer.copy_(distributed.all_reduce_sum(buffer))
        if self.samples == 0:
            raise ValueError("calibration data is empty: pass an iterable of input batches")
        per_group = self.num_channels // self.num_groups
        mean = (self.mean_sum / self.samples).repeat_interleave(per_group)  # (C,)
        var = (self.var_sum / self.samples).repeat_interleave(per_group)
        scale = self.weight.double() / torch.sqrt(var + self.eps)
        self.scale.copy_(scale)
        self.shift.copy_(self.bias.double() - mean * scale)
        self.measuring = False

    def extra_repr(self) -> str:
        state = "measuring" if self.measuring else f"frozen on {int(self.samples)} samples"
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, {state}"
