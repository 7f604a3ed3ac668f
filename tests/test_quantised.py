"""The quantised ANN (``SpikingNetwork.quantised_ann(T)``): every activation read as its
neuron's T-step rate under a constant current, corrections included.

What it is for: a signed network read out at T with no delay computes it exactly while no
step brings a neuron more than its threshold (the net spikes so far are the input so far,
rounded). So it is the ceiling of a signed network at T, and the gap to it is lag.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import snnlite
from snnlite.fold import fold_thresholds
from snnlite.graph import activation_sites

TIMESTEPS = (1, 4, 16, 64)


def _converted(model: nn.Module, signed: bool, spikes_per_step: int = 1):
    torch.manual_seed(0)
    x = torch.randn(300, 12, dtype=torch.float64)
    snn = snnlite.convert(model.double(), list(x[:200].split(50)), signed_spikes=signed,
                          spikes_per_step=spikes_per_step, progress=False)  # fmt: skip
    return snn, x[200:]


def _with_corrections(snn) -> None:
    """Random charges and bias currents, both signs, as the low-latency tuning sets them."""
    g = torch.Generator().manual_seed(1)
    for site in activation_sites(snn.ann).values():
        theta = site.threshold
        site.charge = 0.4 * theta * (torch.rand(theta.shape, generator=g, dtype=theta.dtype) - 0.5)
        site.bias = 0.05 * theta * (torch.rand(theta.shape, generator=g, dtype=theta.dtype) - 0.5)


@pytest.mark.parametrize(("signed", "bursts"), [(False, 1), (True, 1), (False, 2)])
def test_one_hidden_layer_spikes_the_quantised_ann_exactly(signed: bool, bursts: int) -> None:
    """A hidden layer fed the image sees a constant current, which every neuron (binary,
    signed, bursts of B over T B levels) turns into psi: the readout at T with no delay is
    the quantised ANN, corrections included."""
    model = nn.Sequential(nn.Linear(12, 40), nn.ReLU(), nn.Linear(40, 5)).eval()
    snn, x = _converted(model, signed, bursts)
    _with_corrections(snn)
    with torch.no_grad():
        for T in TIMESTEPS:
            spiking = snn.simulate(x, [T], delay=0, progress=False)[T]
            torch.testing.assert_close(spiking, snn.quantised_ann(T)(x), rtol=0, atol=1e-12)


def _deep_without_lag(signed: bool):
    """Two hidden layers whose second thresholds exceed any one step's input (the sum of
    |weights| times the spikes' size, plus the bias and its correction): no step brings a
    neuron more than theta, so no backlog can build."""
    model = nn.Sequential(nn.Linear(12, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(),
                          nn.Linear(20, 5)).eval()  # fmt: skip
    snn, x = _converted(model, signed)
    _with_corrections(snn)
    first, second = activation_sites(snn.ann).values()
    weight, bias = model[2].weight.detach(), model[2].bias.detach()
    step_bound = (weight.abs() * first.threshold).sum(dim=1) + bias.abs() + second.bias.abs()
    second.threshold = 1.01 * step_bound
    second.charge = torch.zeros_like(second.threshold)  # u(0) = theta / 2: room both ways
    return snn, x


def test_a_signed_network_without_lag_spikes_its_quantised_ann_exactly() -> None:
    snn, x = _deep_without_lag(signed=True)
    with torch.no_grad():
        for T in TIMESTEPS:
            spiking = snn.simulate(x, [T], delay=0, progress=False)[T]
            torch.testing.assert_close(spiking, snn.quantised_ann(T)(x), rtol=0, atol=1e-12)


def test_a_binary_network_does_not() -> None:
    """The same network with binary neurons: the second layer's current is not constant, and
    the order its spikes come in (the unevenness error) moves the readout off the quantised
    ANN; signed neurons take those spikes back."""
    snn, x = _deep_without_lag(signed=False)
    with torch.no_grad():
        spiking = snn.simulate(x, [16], delay=0, progress=False)[16]
        assert (spiking - snn.quantised_ann(16)(x)).abs().max() > 1e-3


def test_long_runs_tend_to_the_clipped_ann() -> None:
    """Without corrections, each activation is within half a stair (theta / 2T) of the
    clipped ANN's: the quantised ANN's readout tends to :meth:`relux`'s as T grows."""
    model = nn.Sequential(nn.Linear(12, 40), nn.ReLU(), nn.Linear(40, 5)).eval()
    snn, x = _converted(model, signed=True)
    with torch.no_grad():
        gaps = [float((snn.quantised_ann(T)(x) - snn.relux()(x)).abs().max()) for T in
                (16, 256, 4096)]  # fmt: skip
    assert gaps[1] < gaps[0] / 4 and gaps[2] < gaps[1] / 4, gaps


def test_bad_input_is_refused() -> None:
    model = nn.Sequential(nn.Linear(12, 40), nn.ReLU(), nn.Linear(40, 5)).eval()
    snn, _ = _converted(model, signed=False)
    for bad in (0, -4, [4, 8], 2.5):
        with pytest.raises(ValueError):
            snn.quantised_ann(bad)
    with pytest.raises(ValueError, match="folded"):
        fold_thresholds(snn).quantised_ann(8)
