"""Burst neurons (``spikes_per_step`` = B > 1): up to B spikes of theta / B per step.

Their defining property: under a constant current, T steps of the burst neuron fire as
many spikes of theta / B as B T steps of the binary neuron fire spikes of theta, so a
network whose spiking layer sees a constant current reads out the same at T as the binary
network at B T, and sends the same number of spikes, hence the same synaptic operations.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import snnlite
from snnlite.export import ExportError, to_nir
from snnlite.fold import FoldError, fold_thresholds
from snnlite.graph import activation_sites
from snnlite.neurons import burst_integrate_and_fire, integrate_and_fire, rate
from tests.helpers import per_step_layout


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize("T", [1, 5, 16])
def test_a_constant_current_gives_the_binary_rate_over_b_t_steps(levels: int, T: int) -> None:
    theta = torch.tensor([1.25, 0.55, 0.0], dtype=torch.float64).view(3, 1)  # one silent row
    # Currents off the stairs' edges (at an edge the running sum may round either way).
    z = torch.linspace(-0.5, 2.5, 401, dtype=torch.float64) + 7e-4
    z = z.expand(3, -1)[None]  # (1, 3, 401): a constant current, one sample
    membrane = (theta / (2 * levels)).expand(1, 3, 401).clone()
    spikes, _ = burst_integrate_and_fire(z, membrane, theta, levels, steps=T)
    assert spikes.shape == (T, 1, 3, 401)
    counts = spikes / torch.where(theta > 0, theta / levels, 1.0)
    assert torch.equal(counts, counts.round()) and counts.max() <= levels
    assert torch.allclose(spikes.mean(0)[0], rate(z[0], theta, levels * T), atol=1e-12)


def test_one_spike_per_step_is_the_binary_neuron() -> None:
    g = torch.Generator().manual_seed(0)
    currents = torch.randn(12, 4, 6, 5, 5, generator=g)  # (steps, N, C, H, W)
    theta = (torch.rand(6, generator=g) + 0.2).view(6, 1, 1)
    start = (theta / 2).expand(4, 6, 5, 5)
    burst, u_burst = burst_integrate_and_fire(currents, start.clone(), theta, 1)
    binary, u_binary = integrate_and_fire(currents, start.clone(), theta, backend="torch")
    assert torch.equal(burst, binary) and torch.equal(u_burst, u_binary)


def _one_layer() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 5)).eval()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(64, 20, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("levels", [2, 4])
def test_a_burst_network_at_t_is_the_binary_network_at_b_t(inputs, levels: int) -> None:
    """One spiking layer driven by the constant image current: the burst network at T reads
    out what the binary one reads at B T (delay 0), and sends as many spikes, so the same
    synaptic operations; and its events are spike counts, not positions that fired."""
    calibration = list(inputs.double().split(16))
    model = _one_layer().double()
    binary = snnlite.convert(model, calibration, iterations=8, progress=False)
    burst = snnlite.convert(model, calibration, iterations=8, progress=False,
                            spikes_per_step=levels)  # fmt: skip
    assert burst.spikes_per_step == levels and binary.spikes_per_step == 1
    for name, theta in burst.thresholds.items():
        assert torch.equal(theta, binary.thresholds[name])
    T = 6
    x = inputs.double()
    fast = burst.simulate(x, [T], delay=0, progress=False, record_spikes=True)[T]
    burst_sops = burst.last_activity.sops_at([T])[T]
    burst_events = sum(float(e.sum()) for e in burst.last_activity.events.values())
    slow = binary.simulate(x, [levels * T], delay=0, progress=False, record_spikes=True)
    assert torch.allclose(fast, slow[levels * T], atol=1e-9)
    assert burst_sops == pytest.approx(binary.last_activity.sops_at([levels * T])[levels * T])
    binary_events = sum(float(e.sum()) for e in binary.last_activity.events.values())
    assert burst_events == binary_events > 0
    # A burst of n spikes at one position is n events: more events than positions that fired.
    spikes = burst.site_rates(x, 1)  # step 1 alone: n theta / B per position
    theta = next(iter(burst.thresholds.values()))
    assert (spikes[next(iter(spikes))] / (theta / levels)).round().max() > 1


def test_tuning_for_t_with_bursts_uses_the_stairs_of_b_t(inputs) -> None:
    """T-aware thresholds for T steps of B spikes are those for B T binary steps."""
    calibration = list(inputs.split(16))
    parts = ("thresholds",)
    burst = snnlite.convert(_one_layer(), calibration, iterations=8, progress=False,
                            target_timesteps=4, latency_parts=parts, spikes_per_step=2)  # fmt: skip
    binary = snnlite.convert(_one_layer(), calibration, iterations=8, progress=False,
                             target_timesteps=8, latency_parts=parts)  # fmt: skip
    for name, theta in burst.thresholds.items():
        assert torch.equal(theta, binary.thresholds[name]), name


def test_the_default_pipeline_with_bursts_runs_every_part(inputs) -> None:
    snn = snnlite.convert(_one_layer(), list(inputs.split(16)), iterations=8, progress=False,
                          target_timesteps=4, spikes_per_step=2)  # fmt: skip
    assert snn.delay_schedule and snn.spikes_per_step == 2
    out = snn.simulate(inputs, [4, 8], progress=False)
    assert out[4].shape == (64, 5) and torch.isfinite(out[8]).all()


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_spikes_per_step_must_be_a_positive_int(inputs, bad) -> None:
    with pytest.raises(ValueError, match="spikes_per_step"):
        snnlite.convert(_one_layer(), [inputs], iterations=1, progress=False,
                        spikes_per_step=bad)  # fmt: skip


def test_folding_and_export_refuse_bursts(inputs) -> None:
    snn = snnlite.convert(_one_layer(), [inputs], iterations=4, progress=False,
                          spikes_per_step=2)  # fmt: skip
    before = {name: theta.clone() for name, theta in snn.thresholds.items()}
    with pytest.raises(FoldError, match="bursts"):
        fold_thresholds(snn)
    with pytest.raises(ExportError, match="bursts"):
        to_nir(snn, inputs[:1])
    assert not any(site.unit for site in activation_sites(snn.ann).values())
    for name, theta in snn.thresholds.items():
        assert torch.equal(theta, before[name])


class _PoolAfterSpikes(nn.Module):
    """A max pool that stays after its neuron (the neuron has a second user), so it pools
    spike trains and is a spike source of its own; both branches read out analog."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.mean = nn.AvgPool2d(2)
        self.head = nn.Linear(4 * 4 * 4, 3)
        self.side = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spikes = self.relu(self.conv(x))
        return self.head(self.pool(spikes).flatten(1)) + self.side(self.mean(spikes).flatten(1))


@pytest.mark.parametrize("max_pool", ["cumulative"])
def test_a_pool_of_burst_spikes_counts_every_spike_it_passes(max_pool: str) -> None:
    """The cumulative pool passes the increments of each window's largest spike count, so T
    burst steps pass as many spikes, counted as events, as B T binary steps, and the
    readouts agree. (The gated pool follows a leader by the spikes received so far, and a
    burst neuron's spikes come at other steps than the binary one's: the leaders can
    differ while they are close, so it has no such equality.)"""
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model = _PoolAfterSpikes().double().eval()
    nets = {B: snnlite.convert(model, [x], iterations=4, progress=False, max_pool=max_pool,
                               spikes_per_step=B) for B in (1, 2)}  # fmt: skip
    T = 5
    fast = nets[2].simulate(x, [T], delay=0, progress=False, record_spikes=True)[T]
    slow = nets[1].simulate(x, [2 * T], delay=0, progress=False, record_spikes=True)[2 * T]
    assert torch.allclose(fast, slow, atol=1e-9)
    burst, binary = nets[2].last_activity, nets[1].last_activity
    pools = [name for name in burst.events if name.startswith("pool")]
    assert pools, list(burst.events)
    for name in burst.events:
        assert float(burst.events[name].sum()) == float(binary.events[name].sum()) > 0, name
    assert burst.sops_at([T])[T] == pytest.approx(binary.sops_at([2 * T])[2 * T])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("constant", [False, True])
def test_the_fused_kernel_is_the_torch_loop_bit_for_bit(dtype, channels_last, constant) -> None:
    """Over two chunks, with currents of up to several spikes per step and a silent channel."""
    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(2)
    currents = torch.randn(20, 3, 5, 7, 6, generator=g, dtype=dtype) * 1.5
    currents = per_step_layout(currents, channels_last)
    theta = torch.rand(5, generator=g, dtype=dtype).view(5, 1, 1)
    theta[1] = 0  # a silent channel
    layout = torch.channels_last if channels_last else torch.contiguous_format
    results = []
    for backend in ("torch", "fused"):
        membrane = (theta / 6).expand(3, 5, 7, 6).contiguous(memory_format=layout)
        chunks = []
        for chunk in (currents[:8], currents[8:]):
            current = chunk[0] if constant else chunk
            spikes, _ = burst_integrate_and_fire(current, membrane, theta, 3, chunk.shape[0],
                                                 backend=backend)  # fmt: skip
            chunks.append(spikes)
        results.append((torch.cat(chunks), membrane))
    for torch_value, fused_value in zip(*results, strict=True):
        assert torch.equal(torch_value, fused_value)
    counts = results[0][0] / (theta / 3).clamp(min=1e-9)
    assert counts.round().max() == 3  # full bursts did happen
    assert not results[0][0][:, :, 1].any()  # the silent channel never fires
