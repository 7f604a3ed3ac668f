"""Signed spikes of theta / S (``signed_spikes=True, spikes_per_step=S, catch_up=B``): the
signed neuron with memory, sending (or taking back) up to S B spikes of theta / S in one
step, never more than S t in t steps.

Why: a signed network read out at T computes, without lag, the ANN whose every activation
is rounded to T stairs of theta / T. On a deep network that rounding itself costs accuracy
at any T (35 layers of MobileNetV2 at 256 stairs); spikes of theta / S round to S T stairs
in the same T steps, at log2(2 S B + 1) bits per step instead of log2(2 B + 1).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import snnlite
from snnlite.graph import activation_sites
from snnlite.neurons import (
    bits_per_step,
    signed_integrate_and_fire_torch,
)
from tests.helpers import signed_start


@pytest.mark.parametrize("levels", [2, 3])
def test_the_net_spikes_are_the_input_so_far_rounded_to_finer_stairs(levels: int) -> None:
    """Currents of both signs, up to 6 theta per step (multiples of theta / 768, so every
    sum is exact): with S B >= S T nothing lags, and the net spikes after t steps are the
    input so far in units of theta / S, rounded and clipped to [0, S t]; with B = 1 the
    per-step limit (S spikes, theta) binds."""
    g = torch.Generator().manual_seed(0)
    steps, n = 40, 3000
    noise = torch.randint(-4608, 4609, (steps, n), generator=g)
    drift = torch.linspace(1800, -1800, steps).round().long()[:, None]
    theta = torch.tensor(0.75, dtype=torch.float64)
    currents = (noise + drift).double() / 768 * theta
    quantum = theta / levels
    so_far = torch.cumsum(currents, 0)
    elapsed = levels * torch.arange(1, steps + 1, dtype=torch.float64)[:, None]
    rounded = torch.minimum(torch.floor(so_far / quantum + 0.5).clamp(min=0), elapsed)
    for catch_up in (steps, 1):
        membrane, sent = signed_start(theta, (n,), levels=levels)
        spikes, _ = signed_integrate_and_fire_torch(currents, membrane, theta, sent,
                                                    catch_up=catch_up, levels=levels)  # fmt: skip
        count = spikes / quantum  # whole numbers of spikes of theta / S
        net = torch.cumsum(count, 0)
        assert torch.equal(count, count.round()) and count.abs().max() <= levels * catch_up
        assert (net >= 0).all() and (net <= elapsed).all()  # never more than S t in t steps
        assert torch.equal(sent, net[-1])
        if catch_up == steps:
            assert torch.equal(net, rounded)
        else:  # S spikes of theta / S per step at most: the output lags
            assert count.abs().max() == levels and not torch.equal(net, rounded)


def _deep(levels: int):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(),
                          nn.Linear(20, 5)).eval().double()  # fmt: skip
    x = torch.randn(300, 12, dtype=torch.float64)
    snn = snnlite.convert(model, list(x[:200].split(50)), signed_spikes=True,
                          spikes_per_step=levels, progress=False)  # fmt: skip
    g = torch.Generator().manual_seed(1)
    for site in activation_sites(snn.ann).values():  # charges of both signs, as tuned
        theta = site.threshold
        site.charge = 0.4 * theta * (torch.rand(theta.shape, generator=g, dtype=theta.dtype) - 0.5)
    return snn, x[200:]


@pytest.mark.parametrize("T", [4, 16])
def test_a_network_that_catches_up_spikes_its_quantised_ann_of_s_t_stairs(T: int) -> None:
    """With B >= T no step limits a neuron: read out at T with no delay, the network is its
    quantised ANN (:meth:`SpikingNetwork.quantised_ann`, S T stairs) exactly, and closer to
    the clipped ANN than the network of theta-sized spikes."""
    fine, x = _deep(levels=2)
    coarse, _ = _deep(levels=1)
    with torch.no_grad():
        for snn in (fine, coarse):
            snn.catch_up = T
            readout = snn.simulate(x, [T], delay=0, progress=False)[T]
            torch.testing.assert_close(readout, snn.quantised_ann(T)(x), rtol=0, atol=1e-12)
        relux = fine.relux()(x)
        fine_gap = float((fine.quantised_ann(T)(x) - relux).abs().mean())
        coarse_gap = float((coarse.quantised_ann(T)(x) - relux).abs().mean())
    assert fine_gap < coarse_gap


def test_every_spike_is_an_event_and_the_bits_are_stated() -> None:
    """The runner counts n events for a step of n theta / S, of either sign; the network
    states what a step carries."""
    snn, x = _deep(levels=2)
    snn.catch_up = 3
    trains = snn.spike_trains(x, 16)  # {site: (T, N, C)}
    snn.simulate(x, [16], delay=0, progress=False, record_spikes=True)
    several = 0
    for name, spikes in trains.items():
        quantum = (snn.thresholds[name] / 2).clamp(min=1e-12)
        counts = (spikes / quantum).abs().round()
        several += int((counts > 1).sum())
        assert int(counts.sum()) == int(snn.last_activity.events[name].sum()), name
    assert several > 0
    assert snn.bits_per_step == math.log2(13)  # 2 S B + 1 = 13 values


def test_bits_per_step_of_every_neuron() -> None:
    assert bits_per_step() == 1.0  # binary
    assert bits_per_step(spikes_per_step=3) == 2.0  # bursts: 0..3
    assert bits_per_step(signed_spikes=True) == math.log2(3)
    assert bits_per_step(signed_spikes=True, catch_up=2) == math.log2(5)
    assert bits_per_step(2, signed_spikes=True, catch_up=2) == math.log2(9)
