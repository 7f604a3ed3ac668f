"""Signed neurons that catch up (``signed_spikes=True, catch_up=B``): up to B spikes of
either sign in one step, never more than t spikes in t steps.

Why: a signed neuron that sends one spike per step lags whenever a step brings it more than
theta (in a deep network, spikes arrive through large weights), and what is still in its
membrane at the end of the run is lost. With B >= T no step limits it: the net spikes after
t steps are its input so far, rounded and clipped to [0, t], at every t, and a network
without max pools read out at T with no delay computes its quantised ANN exactly.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import snnlite
from snnlite.graph import activation_sites
from snnlite.neurons import IFNeuron, signed_integrate_and_fire, signed_integrate_and_fire_torch
from tests.helpers import per_step_layout, signed_start


def test_the_net_spikes_are_the_input_so_far_rounded_and_clipped_at_every_step() -> None:
    """Currents up to 6 theta per step of both signs (multiples of theta / 256, so every sum
    is exact): with B = T nothing lags; with B = 2 the per-step limit binds."""
    g = torch.Generator().manual_seed(0)
    steps, n = 48, 3000
    noise = torch.randint(-1536, 1537, (steps, n), generator=g)
    drift = torch.linspace(600, -600, steps).round().long()[:, None]
    theta = torch.tensor(0.75, dtype=torch.float64)
    currents = (noise + drift).double() / 256 * theta
    so_far = torch.cumsum(currents, 0)
    elapsed = torch.arange(1, steps + 1, dtype=torch.float64)[:, None]
    rounded = torch.minimum(torch.floor(so_far / theta + 0.5).clamp(min=0), elapsed)
    for limit in (steps, 2):
        membrane, sent = signed_start(theta, (n,))
        spikes, _ = signed_integrate_and_fire_torch(currents, membrane, theta, sent,
                                                    catch_up=limit)  # fmt: skip
        count = spikes / theta  # whole numbers
        net = torch.cumsum(count, 0)
        assert torch.equal(count, count.round()) and count.abs().max() <= limit
        assert (net >= 0).all() and (net <= elapsed).all()  # never more than t in t steps
        assert torch.equal(sent, net[-1])
        if limit == steps:
            assert torch.equal(net, rounded)
        else:  # the limit binds: the output lags
            assert count.abs().max() == limit and not torch.equal(net, rounded)


def test_one_spike_per_step_is_the_signed_neuron() -> None:
    g = torch.Generator().manual_seed(3)
    theta = torch.rand(4, 1, generator=g, dtype=torch.float64) + 0.2
    currents = torch.randn(30, 2, 4, 9, generator=g, dtype=torch.float64) * 0.6
    runs = []
    for limit in (1, None):
        membrane, sent = signed_start(theta, (2, 4, 9))
        args = {} if limit is None else {"catch_up": limit, "done": 5}
        runs.append(signed_integrate_and_fire_torch(currents, membrane, theta, sent, **args))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("constant", [False, True])
@pytest.mark.parametrize("levels", [1, 2])
def test_the_fused_kernel_is_the_torch_loop_bit_for_bit(
    dtype, channels_last, constant, levels
) -> None:
    """Chunk by chunk (the steps before a chunk cap its spikes), silent channel included;
    spikes of theta and of theta / 2 (``levels``, tests/test_signed_bursts.py)."""
    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(1)
    currents = torch.randn(24, 3, 5, 7, 6, generator=g, dtype=dtype) * 1.5
    currents = per_step_layout(currents, channels_last)
    theta = torch.rand(5, generator=g, dtype=dtype).view(5, 1, 1)
    theta[1] = 0  # a silent channel
    results = []
    for backend in ("torch", "fused"):
        membrane, sent = signed_start(theta, (3, 5, 7, 6), channels_last, levels)
        chunks = []
        for done, chunk in ((0, currents[:10]), (10, currents[10:])):
            steps = chunk.shape[0]
            spikes, _ = signed_integrate_and_fire(
                chunk[0] if constant else chunk, membrane, theta, sent, steps=steps,
                backend=backend, catch_up=3, done=done, levels=levels,
            )  # fmt: skip
            chunks.append(spikes)
        results.append((torch.cat(chunks), membrane, sent))
    for torch_value, fused_value in zip(*results, strict=True):
        assert torch.equal(torch_value, fused_value)
    counts = (results[0][0] / (theta / levels).clamp(min=1e-9)).abs()
    assert counts.round().max() == 3 * levels  # several spikes in one step did happen
    assert not results[0][0][:, :, 1].any()  # the silent channel never fires


def _deep_with_lag():
    """Two hidden layers whose second thresholds are a fifth of a step's largest input: one
    spike per step cannot keep up."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(),
                          nn.Linear(20, 5)).eval().double()  # fmt: skip
    x = torch.randn(300, 12, dtype=torch.float64)
    snn = snnlite.convert(model, list(x[:200].split(50)), signed_spikes=True, progress=False)
    first, second = activation_sites(snn.ann).values()
    weight, bias = model[2].weight.detach(), model[2].bias.detach()
    step_bound = (weight.abs() * first.threshold).sum(dim=1) + bias.abs()
    second.threshold = 0.2 * step_bound
    g = torch.Generator().manual_seed(1)
    for site in (first, second):  # charges of both signs, as the tuning sets them
        theta = site.threshold
        site.charge = 0.4 * theta * (torch.rand(theta.shape, generator=g, dtype=theta.dtype) - 0.5)
    return snn, x[200:]


@pytest.mark.parametrize("T", [4, 16, 32])
def test_catching_up_spikes_the_quantised_ann_where_one_spike_per_step_lags(T: int) -> None:
    snn, x = _deep_with_lag()
    with torch.no_grad():
        quantised = snn.quantised_ann(T)(x)
        lagging = snn.simulate(x, [T], delay=0, progress=False)[T]
        snn.catch_up = T
        caught_up = snn.simulate(x, [T], delay=0, progress=False)[T]
    assert (lagging - quantised).abs().max() > 1e-3
    torch.testing.assert_close(caught_up, quantised, rtol=0, atol=1e-12)


def test_every_spike_of_a_step_is_an_event() -> None:
    """The events the runner counts are the spikes sent or taken back, n per step for a step
    of n theta, and their SOPs follow: B = 4 sends more in the first steps, not in all."""
    snn, x = _deep_with_lag()
    snn.catch_up = 4
    trains = snn.spike_trains(x, 16)  # {site: (T, N, C)}
    snn.simulate(x, [16], delay=0, progress=False, record_spikes=True)
    thresholds = snn.thresholds
    several = 0
    for name, spikes in trains.items():
        theta = thresholds[name].clamp(min=1e-12)
        counts = (spikes / theta).abs().round()
        several += int((counts > 1).sum())
        assert int(counts.sum()) == int(snn.last_activity.events[name].sum()), name
        assert (spikes.cumsum(0) >= -1e-9).all(), name  # nothing taken back that was not sent
    assert several > 0


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "2"])
def test_catch_up_must_be_a_positive_int(bad) -> None:
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with pytest.raises(ValueError, match="catch_up"):
        snnlite.convert(model, [torch.randn(16, 12)], signed_spikes=True, catch_up=bad,
                        progress=False)  # fmt: skip


def test_catching_up_needs_signed_spikes() -> None:
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with pytest.raises(ValueError, match="signed_spikes=True"):
        snnlite.convert(model, [torch.randn(16, 12)], catch_up=2, progress=False)
    with pytest.raises(ValueError, match="signed_spikes=True"):
        IFNeuron(torch.tensor(1.0), catch_up=3)
