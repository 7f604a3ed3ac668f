"""Signed spikes with memory (``signed_spikes=True``): a neuron may take back a spike it sent.

Its defining property: as long as no step asks for more than one spike (|current| < theta),
the net spikes a neuron has sent after t steps are its input so far, rounded and clipped at
zero, ``max(0, floor(A(t) / theta + 1/2))``, at *every* t, whatever the order the input came
in. A binary neuron only has that in the mean over the whole run, for a constant current.
Under a constant current the two neurons are the same.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import snnlite
from snnlite.export import ExportError, to_nir
from snnlite.fold import FoldError, fold_thresholds
from snnlite.neurons import (
    integrate_and_fire,
    signed_integrate_and_fire,
    signed_integrate_and_fire_torch,
)
from tests.helpers import per_step_layout, signed_start


@pytest.mark.parametrize("theta_value", [1.0, 0.5])
def test_the_net_spikes_round_the_input_so_far_at_every_step(theta_value: float) -> None:
    g = torch.Generator().manual_seed(0)
    # Random currents, |z| < theta, drifting from up to down, so that binary neurons
    # overshoot and signed ones take spikes back. All are multiples of theta / 256, so every
    # sum is exact and the membrane and the running sum agree even on a stair's edge.
    steps, n = 64, 2000
    noise = torch.randint(-180, 181, (steps, n), generator=g)
    drift = torch.linspace(64, -64, steps).round().long()[:, None]
    currents = (noise + drift).double() / 256 * theta_value
    theta = torch.tensor(theta_value, dtype=torch.float64)
    membrane, sent = signed_start(theta, (n,))
    spikes, _ = signed_integrate_and_fire_torch(currents, membrane, theta, sent)
    net = torch.cumsum(spikes / theta, 0)  # (steps, n), whole numbers
    so_far = torch.cumsum(currents, 0)
    assert torch.equal(net, torch.clamp(torch.floor(so_far / theta + 0.5), min=0))
    assert torch.equal(sent, net[-1])
    assert (spikes < 0).any() and (spikes > 0).any()
    # The binary neuron keeps every spike: it ends above its input so far, rounded.
    binary, _ = integrate_and_fire(currents, (theta / 2).expand(n).clone(), theta, backend="torch")
    assert (torch.cumsum(binary / theta, 0)[-1] > net[-1]).any()


@pytest.mark.parametrize("T", [1, 7, 16])
def test_a_constant_current_is_the_binary_neuron(T: int) -> None:
    theta = torch.tensor([1.25, 0.55, 0.0], dtype=torch.float64).view(3, 1)  # one silent row
    z = (torch.linspace(-0.5, 2.5, 401, dtype=torch.float64) + 7e-4).expand(3, -1)[None]
    membrane, sent = signed_start(theta, (1, 3, 401))
    signed, u_signed = signed_integrate_and_fire_torch(z, membrane, theta, sent, steps=T)
    binary, u_binary = integrate_and_fire(z, (theta / 2).expand(1, 3, 401).clone(), theta,
                                          steps=T, backend="torch")  # fmt: skip
    assert torch.equal(signed, binary) and torch.equal(u_signed, u_binary)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("constant", [False, True])
def test_the_fused_kernel_is_the_torch_loop_bit_for_bit(dtype, channels_last, constant) -> None:
    pytest.importorskip("numba")
    g = torch.Generator().manual_seed(1)
    currents = torch.randn(20, 3, 5, 7, 6, generator=g, dtype=dtype) * 0.5
    currents = per_step_layout(currents, channels_last)
    if constant:
        currents = currents[0]
    theta = torch.rand(5, generator=g, dtype=dtype).view(5, 1, 1)
    theta[1] = 0  # a silent channel
    results = []
    for backend in ("torch", "fused"):
        membrane, sent = signed_start(theta, (3, 5, 7, 6), channels_last)
        spikes, _ = signed_integrate_and_fire(currents, membrane, theta, sent,
                                             steps=20, backend=backend)  # fmt: skip
        results.append((spikes, membrane, sent))
    for torch_value, fused_value in zip(*results, strict=True):
        assert torch.equal(torch_value, fused_value)
    assert bool((results[0][0] < 0).any()) != constant  # a constant current takes nothing back


def _deep() -> nn.Module:
    """Six spiking layers with He-initialised weights of both signs, so that every layer's
    currents are sums of positive and negative inputs that arrive at different steps."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = 64
    for _ in range(6):
        linear = nn.Linear(fan_in, 64)
        nn.init.normal_(linear.weight, std=(2 / fan_in) ** 0.5)
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
        fan_in = 64
    layers.append(nn.Linear(fan_in, 10))
    return nn.Sequential(*layers).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(2))


def test_a_deep_signed_network_settles_in_fewer_steps(images) -> None:
    """At every T the signed network is closer to its clipped ANN than the binary one (same
    thresholds), and every spike of either sign is an event that costs its SOPs."""
    calibration, x = [images[:64]], images[64:]
    binary = snnlite.convert(_deep(), calibration, iterations=8, progress=False)
    signed = snnlite.convert(_deep(), calibration, iterations=8, progress=False,
                             signed_spikes=True)  # fmt: skip
    for name, theta in signed.thresholds.items():  # the same calibration
        assert torch.equal(theta, binary.thresholds[name])
    with torch.no_grad():
        target = signed.relux()(x)
    errors = {}
    for net in (binary, signed):
        out = net.simulate(x, [8, 16, 32], delay=0, progress=False)
        errors[net.signed_spikes] = [float((out[T] - target).abs().mean()) for T in (8, 16, 32)]
    assert all(s < b for s, b in zip(errors[True], errors[False], strict=True)), errors

    trains = signed.spike_trains(x, 8)  # {site: (T, N, 64)}
    signed.simulate(x, [8], delay=0, progress=False, record_spikes=True)
    negative = sum(int((s < 0).sum()) for s in trains.values())
    assert negative > 0
    for name, spikes in trains.items():
        assert int((spikes != 0).sum()) == int(signed.last_activity.events[name].sum()), name
        assert (spikes.cumsum(0) >= 0).all(), name  # nothing taken back that was not sent
    # A second run starts from nothing sent: the same readouts.
    again = signed.simulate(x, [8], delay=0, progress=False)[8]
    assert torch.equal(again, signed.simulate(x, [8], delay=0, progress=False)[8])


def test_tuning_for_a_target_t_runs_with_signed_spikes(images) -> None:
    snn = snnlite.convert(_deep(), [images[:64]], iterations=8, progress=False,
                          target_timesteps=8, signed_spikes=True)  # fmt: skip
    assert snn.signed_spikes and snn.delay_schedule
    out = snn.simulate(images[64:], [8, 16], progress=False)
    assert out[8].shape == (32, 10) and torch.isfinite(out[16]).all()


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_signed_spikes_must_be_a_bool(images, bad) -> None:
    with pytest.raises(ValueError, match="signed_spikes"):
        snnlite.convert(_deep(), [images], iterations=1, progress=False, signed_spikes=bad)


def test_folding_and_export_refuse_signed_spikes(images) -> None:
    snn = snnlite.convert(_deep(), [images], iterations=4, progress=False, signed_spikes=True)
    before = {name: theta.clone() for name, theta in snn.thresholds.items()}
    with pytest.raises(FoldError, match="signed"):
        fold_thresholds(snn)
    with pytest.raises(ExportError, match="signed"):
        to_nir(snn, images[:1])
    for name, theta in snn.thresholds.items():
        assert torch.equal(theta, before[name])
