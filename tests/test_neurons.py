"""The IF neuron, its rate function and the gated max pool: exact properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from snnlite import kernels
from snnlite.neurons import IFNeuron, integrate_and_fire, rate, relux
from snnlite.pooling import CumulativeMaxPool, GatedMaxPool


def run_constant(z: torch.Tensor, theta: torch.Tensor, steps: int) -> torch.Tensor:
    membrane = (theta / 2).expand_as(z).clone()
    spikes, _ = integrate_and_fire(z, membrane, theta, steps)
    return spikes


def test_constant_current_gives_exactly_the_rate_function() -> None:
    z = torch.linspace(-0.5, 2.5, 301, dtype=torch.float64)
    theta = torch.tensor(1.25, dtype=torch.float64)
    for steps in (1, 2, 7, 32, 100):
        spikes = run_constant(z, theta, steps)
        assert torch.allclose(spikes.mean(0), rate(z, theta, steps), atol=1e-12)


def test_spikes_are_theta_valued_and_at_most_one_per_step() -> None:
    theta = torch.tensor(0.5)
    currents = torch.rand(50, 1000) * 3  # currents up to 6 theta: the neuron saturates
    membrane = (theta / 2).expand(1000).clone()
    spikes, _ = integrate_and_fire(currents, membrane, theta)
    values = set(spikes.unique().tolist())
    assert values <= {0.0, 0.5}


def test_reset_by_subtraction_keeps_charge() -> None:
    """u(T) = u(0) + sum of inputs - sum of spikes: no information is lost at reset."""
    theta = torch.rand(10) + 0.5  # one threshold per feature of an (N, 10) activation
    currents = torch.randn(64, 2, 10, dtype=torch.float32).abs()
    u0 = (theta / 2).expand(2, 10).clone()
    spikes, u = integrate_and_fire(currents, u0.clone(), theta)
    assert torch.allclose(u, u0 + currents.sum(0) - spikes.sum(0), atol=1e-4)


def test_rate_tends_to_relux() -> None:
    z = torch.linspace(-1, 3, 401, dtype=torch.float64)
    theta = torch.tensor(2.0, dtype=torch.float64)
    errors = [(rate(z, theta, T) - relux(z, theta)).abs().max().item() for T in (4, 16, 64, 256)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert errors[-1] <= theta.item() / (2 * 256) + 1e-12  # quantisation: theta / 2T


def test_half_threshold_start_centres_the_quantisation() -> None:
    """With u(0) = theta/2 the rate rounds z to the nearest level instead of flooring it."""
    theta = torch.tensor(1.0)
    z = torch.tensor([0.49 / 8, 0.51 / 8])  # just below / above half a level at T = 8
    assert rate(z, theta, 8).tolist() == [0.0, 1 / 8]


def test_silent_neuron_never_fires_and_never_divides() -> None:
    neuron = IFNeuron(torch.tensor([0.0, 1.0]))
    out = neuron(torch.ones(3 * 2, 2), steps=3)
    assert torch.isfinite(out).all()
    assert out.view(3, 2, 2)[:, :, 0].eq(0).all()
    assert torch.isfinite(rate(torch.ones(3), torch.tensor(0.0), 8)).all()


def test_neuron_chunks_equal_one_long_run() -> None:
    torch.manual_seed(0)
    theta = torch.rand(4) + 0.5
    currents = torch.randn(12, 3, 4, 5, 5)  # (T, N, C, H, W)
    whole = IFNeuron(theta)(currents.reshape(36, 4, 5, 5), steps=12)
    split = IFNeuron(theta)
    parts = [split(currents[a:b].reshape(-1, 4, 5, 5), steps=b - a) for a, b in ((0, 5), (5, 12))]
    assert torch.equal(whole, torch.cat([p.view(-1, 3, 4, 5, 5) for p in parts]).view(36, 4, 5, 5))


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_reused_neuron_starts_every_run_as_a_new_one(channels_last: bool) -> None:
    """The initial state kept across reset() follows the batch size, the layout and an
    in-place change of the threshold: each run equals a fresh neuron's."""
    torch.manual_seed(2)
    theta = torch.rand(4) + 0.5
    reused = IFNeuron(theta.clone(), charge=torch.rand(4) * 0.1)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for batch, scale in ((3, 1.0), (2, 1.0), (2, 0.5)):
        reused.threshold.mul_(scale)  # a recalibration between runs
        fresh = IFNeuron(reused.threshold.clone(), charge=reused.charge.clone())
        x = torch.randn(6 * batch, 4, 5, 5).contiguous(memory_format=layout)
        reused.reset()
        out = reused(x, steps=6)
        assert torch.equal(out, fresh(x, steps=6))
        assert reused.membrane.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("steps, batch", [(1, 1), (1, 3), (4, 1), (4, 3)])
@pytest.mark.parametrize("in_place", [False, True])
def test_spikes_keep_the_strides_of_channels_last_currents(steps, batch, in_place) -> None:
    """Also for one step or one sample: a size-1 dim merged by a reshape may take any
    stride, and a (1, C, H, W) map with a batch stride of C sent every later convolution
    down its NCHW path."""
    current = torch.randn(steps * batch, 8, 5, 6).contiguous(memory_format=torch.channels_last)
    spikes = IFNeuron(torch.rand(8) + 0.5)(current.clone(), steps, in_place=in_place)
    assert spikes.stride() == current.stride()


def test_constant_input_path_equals_repeated_input() -> None:
    torch.manual_seed(1)
    theta = torch.rand(4) + 0.2
    x = torch.randn(3, 4, 6, 6)
    repeated = IFNeuron(theta)(x.repeat(9, 1, 1, 1), steps=9)
    constant = IFNeuron(theta)(x, steps=9, constant=True)
    assert torch.equal(repeated, constant)


def test_gated_pool_on_constant_input_is_the_max_pool() -> None:
    x = torch.randn(2, 3, 8, 8)
    pool = GatedMaxPool(nn.MaxPool2d(2))
    out = pool(x.repeat(5, 1, 1, 1), steps=5).view(5, 2, 3, 4, 4)
    assert torch.equal(out, F.max_pool2d(x, 2).expand(5, -1, -1, -1, -1))


def test_gated_pool_average_tends_to_max_of_means_while_per_step_pool_is_biased() -> None:
    """Two positions firing alternately: mean of per-step max is 1, the true max mean 0.5."""
    steps = 200
    a = torch.tensor([1.0, 0.0]).repeat(steps // 2)  # position a: 1, 0, 1, 0, ...
    b = 1 - a  # position b: 0, 1, 0, 1, ...
    x = torch.stack([a, b], dim=-1).view(steps, 1, 1, 1, 2)  # (T, N, C, H, W)
    pool = nn.MaxPool2d((1, 2))
    gated = GatedMaxPool(pool)(x.reshape(steps, 1, 1, 2), steps=steps)
    per_step = pool(x.reshape(steps, 1, 1, 2))
    assert abs(gated.mean().item() - 0.5) < 0.01
    assert per_step.mean().item() == 1.0


@pytest.mark.parametrize("kind", [GatedMaxPool, CumulativeMaxPool])
def test_pools_in_time_chunks_equal_one_run(kind: type) -> None:
    torch.manual_seed(2)
    x = torch.rand(20, 2, 3, 6, 6)
    whole = kind(nn.MaxPool2d(3, 2, 1))(x.reshape(40, 3, 6, 6), steps=20)
    pool = kind(nn.MaxPool2d(3, 2, 1))
    first = pool(x[:7].reshape(14, 3, 6, 6), steps=7)
    second = pool(x[7:].reshape(26, 3, 6, 6), steps=13)
    assert torch.equal(whole, torch.cat([first, second]))


def test_cumulative_pool_passes_the_largest_accumulated_input_at_every_step() -> None:
    """What it has passed after t steps is max_i sum_{s<=t} x_i(s), for any sign of input."""
    torch.manual_seed(3)
    steps = 30
    x = torch.randn(steps, 2, 3, 6, 6, dtype=torch.float64)  # (T, N, C, H, W)
    out = CumulativeMaxPool(nn.MaxPool2d(3, 2, 1))(x.flatten(0, 1), steps=steps)
    passed = out.view(steps, 2, 3, 3, 3).cumsum(dim=0)
    largest = F.max_pool2d(x.cumsum(dim=0).flatten(0, 1), 3, 2, 1).view_as(passed)
    assert torch.allclose(passed, largest, rtol=0, atol=1e-12)


def test_cumulative_pool_is_exact_when_the_leader_changes() -> None:
    """Currents: a leads with 2, b overtakes with 1.5 + 1.5. The gated pool has passed a's 2
    and then b's 1.5 (3.5); the cumulative pool passes b's sum, 3, the ANN's max."""
    a = torch.tensor([2.0, 0.0, 0.0])
    b = torch.tensor([0.0, 1.5, 1.5])
    x = torch.stack([a, b], dim=-1).view(3, 1, 1, 2)  # (T * N, C, H, W)
    cumulative = CumulativeMaxPool(nn.MaxPool2d((1, 2)))(x, steps=3)
    gated = GatedMaxPool(nn.MaxPool2d((1, 2)))(x, steps=3, backend="torch")
    assert cumulative.sum().item() == 3.0
    assert gated.sum().item() == 3.5


def test_cumulative_pool_passes_spikes_of_one_threshold_as_spikes() -> None:
    torch.manual_seed(4)
    theta = 0.37
    x = (torch.rand(64, 1, 2, 4, 4) < 0.3).float() * theta  # (T, N, C, H, W) spike trains
    out = CumulativeMaxPool(nn.MaxPool2d(2))(x.flatten(0, 1), steps=64)
    fired = out != 0
    assert torch.allclose(out[fired], torch.full_like(out[fired], theta), rtol=1e-5)
    counts = (x > 0).sum(dim=0).float()  # (N, C, H, W): spikes per position
    assert torch.equal(fired.view(64, 1, 2, 2, 2).sum(dim=0).float(), F.max_pool2d(counts, 2))


def test_cumulative_pool_on_constant_input_is_the_max_pool() -> None:
    constant = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    out = CumulativeMaxPool(nn.MaxPool2d(2))(constant.repeat(5, 1, 1, 1), steps=5)
    expected = F.max_pool2d(constant, 2).expand(5, -1, -1, -1, -1)
    assert torch.allclose(out.view(5, 2, 3, 4, 4), expected, rtol=1e-12, atol=0)


# --- the fused CPU kernels compute exactly what the torch reference computes ---------------

kernels_available = pytest.mark.skipif(
    not kernels.available(torch.zeros(1)), reason="numba not installed"
)


@kernels_available
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("thresholds", ["per channel", "scalar", "per element"])
def test_fused_neuron_kernel_is_bit_identical(channels_last: bool, thresholds: str) -> None:
    """Against the torch loop, for every way a threshold reaches the kernel (its C values,
    one value, a whole sample's map), in both memory formats, with planes (13 x 17) that
    the kernel's blocks of 512 neurons cut in the middle."""
    torch.manual_seed(0)
    theta = torch.cat([torch.zeros(1), torch.rand(3) + 0.3]).view(4, 1, 1)  # one silent
    if thresholds == "scalar":
        theta = torch.tensor(0.7)
    elif thresholds == "per element":
        theta = torch.rand(4, 13, 17) + 0.2
    currents = torch.randn(9, 3, 4, 13, 17)
    membrane = (theta / 2).expand(3, 4, 13, 17).clone()
    if channels_last:
        currents = currents.reshape(27, 4, 13, 17).contiguous(memory_format=torch.channels_last)
        currents = currents.view(9, 3, 4, 13, 17)
        membrane = membrane.contiguous(memory_format=torch.channels_last)
    for constant in (False, True):
        source = currents[0] if constant else currents
        steps = 9 if constant else None
        a, ua = integrate_and_fire(source, membrane.clone(), theta, steps, backend="torch")
        b, ub = integrate_and_fire(source, membrane.clone(), theta, steps, backend="fused")
        assert torch.equal(a, b) and torch.equal(ua, ub)
        assert a.any()
    for backend in ("torch", "fused"):  # spikes written over the currents: the same
        a, ua = integrate_and_fire(currents, membrane.clone(), theta, backend=backend)
        overwritten = currents.clone(memory_format=torch.preserve_format)
        b, ub = integrate_and_fire(overwritten, membrane.clone(), theta, backend=backend,
                                   in_place=True)  # fmt: skip
        assert b.data_ptr() == overwritten.data_ptr()
        assert torch.equal(a, b) and torch.equal(ua, ub) and torch.equal(b, overwritten)


@kernels_available
def test_fused_neuron_kernel_on_features_is_bit_identical() -> None:
    """A linear layer's neurons: (steps, N, F) currents, one threshold per feature."""
    torch.manual_seed(1)
    theta = torch.rand(700) + 0.2  # more features than a block holds
    currents = torch.randn(5, 3, 700)
    membrane = (theta / 2).expand(3, 700).clone()
    a, ua = integrate_and_fire(currents, membrane.clone(), theta, backend="torch")
    b, ub = integrate_and_fire(currents, membrane.clone(), theta, backend="fused")
    assert torch.equal(a, b) and torch.equal(ua, ub)


@kernels_available
@pytest.mark.parametrize(
    "pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.MaxPool2d((2, 3), (1, 2), dilation=1)]
)
@pytest.mark.parametrize("ties", [True, False])
def test_fused_gated_pool_kernel_is_bit_identical(pool: nn.MaxPool2d, ties: bool) -> None:
    """The fused kernels (a general one, and one for 2 x 2 pools of stride 2) pass what the
    torch path passes, on odd-sized maps, across chunks."""
    torch.manual_seed(0)
    x = torch.randn(20, 2, 3, 9, 11)
    if ties:
        x = x.gt(0).float()  # 0/1 inputs: many ties to break identically
    fused, reference = GatedMaxPool(pool), GatedMaxPool(pool)
    for a, b in ((0, 7), (7, 20)):
        chunk = x[a:b].reshape(-1, 3, 9, 11)
        assert torch.equal(fused(chunk, b - a), reference(chunk, b - a, backend="torch"))
