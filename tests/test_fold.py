"""Threshold folding (paper §4.3): unit spikes, the same network.

Compared in float64, where the folded and unfolded currents round alike: the readouts agree
to ``RTOL`` of their largest value (in practice bit for bit) at every T and delay. In float32
the convolution kernels round ``(w * theta) * 1`` and ``w * theta`` differently (fused
multiply-adds), about 1e-7 relative, which moves the rare neuron sitting that close to its
threshold by a step; float64 removes that, so the comparison tests the folding, not rounding.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import snnlite
from snnlite import zoo
from snnlite.fold import FoldError, is_folded
from snnlite.zoo.models import FashionResNet

from .helpers import state_hash

RTOL = 1e-9
TIMESTEPS = [1, 4, 16, 32]
DELAYS = ["auto", 0, 3, "half"]


def _calibration(fashion):
    return list(fashion["train"][:100].split(20))


def _vgg(fashion, max_pool="gated"):
    return snnlite.convert(zoo.load("fmnist_vgg"), _calibration(fashion), iterations=40,
                           max_pool=max_pool, progress=False).double()  # fmt: skip


def _resnet(fashion):
    """A small ResNet whose blocks keep their identity shortcut (spikes added to a conv)."""
    torch.manual_seed(0)
    model = FashionResNet(widths=(16, 16, 32), blocks=(2, 1, 1), strides=(1, 1, 2))
    for m in model.modules():  # undo the zero init of the blocks' last BN: a real residual
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.1, 0.1)
    model.train()
    with torch.no_grad():  # BN statistics of the data
        for batch in _calibration(fashion):
            model(batch)
    model.eval()
    return snnlite.convert(model, _calibration(fashion), iterations=40, progress=False).double()


class _SpikePool(nn.Module):
    """A max pool that stays after its neurons (dropout in between): it pools spike trains."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.drop = nn.Dropout(0.1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        x = self.pool(self.drop(torch.relu(self.conv1(x))))
        return self.fc(torch.relu(self.conv2(x)).flatten(1))


def _spike_pool(fashion, max_pool):
    torch.manual_seed(1)
    model = _SpikePool().eval()
    return snnlite.convert(model, _calibration(fashion), iterations=40, max_pool=max_pool,
                           progress=False).double()  # fmt: skip


@pytest.fixture(scope="module")
def networks(fashion):
    return {
        "vgg": _vgg(fashion),
        "resnet": _resnet(fashion),
        "spike_pool_gated": _spike_pool(fashion, "gated"),
        "spike_pool_current": _spike_pool(fashion, "current"),
    }


@pytest.fixture(scope="module")
def images(fashion):
    return fashion["test"][:12].double()


@pytest.mark.parametrize("name", ["vgg", "resnet", "spike_pool_gated", "spike_pool_current"])
def test_folded_outputs_equal_at_every_T_and_delay(networks, images, name):
    snn = networks[name]
    folded = snnlite.fold_thresholds(snn)
    a = snn.simulate(images, TIMESTEPS, delay=DELAYS, progress=False)
    b = folded.simulate(images, TIMESTEPS, delay=DELAYS, progress=False)
    assert a.keys() == b.keys()
    for key in a:
        scale = float(a[key].abs().max())
        assert float((a[key] - b[key]).abs().max()) <= RTOL * scale, (name, key)
    ann, folded_ann = snn.relux(), folded.relux()  # the ANN reading is the same network
    torch.testing.assert_close(folded_ann(images), ann(images), rtol=1e-9, atol=1e-9)


def test_the_residual_neurons_see_their_input_in_units_of_the_shortcut(networks):
    snn = networks["resnet"]
    folded = snnlite.fold_thresholds(snn)
    before, after = snn.thresholds, folded.thresholds
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    moved = [n for n in before if n not in unchanged]
    assert moved and unchanged  # neurons after an identity add, and all others
    assert all(n.endswith("relu_1") for n in moved)


@pytest.mark.parametrize("name", ["vgg", "resnet", "spike_pool_gated"])
def test_spikes_are_unit_and_fire_where_the_originals_fire(networks, images, name):
    snn = networks[name]
    folded = snnlite.fold_thresholds(snn)
    original, unit = snn.spike_trains(images[:4], 12), folded.spike_trains(images[:4], 12)
    assert original.keys() == unit.keys()
    for site, spikes in unit.items():
        assert set(spikes.unique().tolist()) <= {0.0, 1.0}, site
        assert torch.equal(spikes != 0, original[site] != 0), site
        assert spikes.any(), site
    theta_valued = [s for s in original.values() if set(s.unique().tolist()) - {0.0, 1.0}]
    assert theta_valued  # the unfolded network's spikes carry theta


@pytest.mark.parametrize("name", ["vgg", "resnet", "spike_pool_gated"])
def test_synaptic_operations_unchanged(networks, images, name):
    snn = networks[name]
    folded = snnlite.fold_thresholds(snn)
    snn.simulate(images, 16, record_spikes=True, progress=False)
    folded.simulate(images, 16, record_spikes=True, progress=False)
    sops, folded_sops = snn.last_activity.sops_at([4, 16]), folded.last_activity.sops_at([4, 16])
    assert sops == folded_sops and sops[16] > 0
    assert snn.last_activity.fanout == folded.last_activity.fanout


def test_the_original_is_left_unchanged(networks, images):
    snn = networks["resnet"]
    before = state_hash(snn)
    out = snn.simulate(images, 8, progress=False)[8]
    folded = snnlite.fold_thresholds(snn)
    assert state_hash(snn) == before and not is_folded(snn) and is_folded(folded)
    assert torch.equal(snn.simulate(images, 8, progress=False)[8], out)


def test_folding_twice_is_refused(networks):
    folded = snnlite.fold_thresholds(networks["vgg"])
    with pytest.raises(FoldError, match="already folded"):
        snnlite.fold_thresholds(folded)


class _TwoSpikePaths(nn.Module):
    """Spikes of two layers added with no weight between: no one scale fits both."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x):
        return self.fc((torch.relu(self.a(x)) + torch.relu(2 * self.b(x))).flatten(1))


def test_unsupported_structure_is_refused_by_name(fashion):
    torch.manual_seed(2)
    snn = snnlite.convert(_TwoSpikePaths().eval(), _calibration(fashion), iterations=10,
                          granularity="layer", progress=False)  # fmt: skip
    with pytest.raises(FoldError, match="different thresholds") as error:
        snnlite.fold_thresholds(snn)
    assert "node 'add'" in str(error.value)


def test_not_a_spiking_network():
    with pytest.raises(TypeError, match="SpikingNetwork"):
        snnlite.fold_thresholds(nn.Linear(2, 2))
