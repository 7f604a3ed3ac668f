"""Graph preparation on real torchvision structures: sites, BN folding, pool reordering."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

import snnlite
from snnlite.graph import activation_sites, prepare
from tests.conftest import with_data_statistics

STRUCTURES = {
    # name: (builder, expected activation sites)
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), 17),
    "resnet34": (lambda: torchvision.models.resnet34(weights=None), 33),
    "vgg11_bn": (lambda: torchvision.models.vgg11_bn(weights=None), 10),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None), 35),
}


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module", params=list(STRUCTURES))
def structure(request, photo_crops):
    builder, sites = STRUCTURES[request.param]
    torch.manual_seed(0)
    model = with_data_statistics(builder(), photo_crops[:32])
    return request.param, model, sites


def test_every_activation_call_site_gets_its_own_neuron(structure) -> None:
    name, model, expected = structure
    sites = activation_sites(prepare(model))
    assert len(sites) == expected
    if name.startswith("resnet"):  # BasicBlock calls self.relu twice: two sites
        assert {"layer1_0_relu", "layer1_0_relu_1"} <= set(sites)
    if name == "mobilenet_v2":  # ReLU6's cap is kept
        assert all(site.cap == 6.0 for site in sites.values())


def test_relux_with_infinite_thresholds_is_the_original_model(structure, photo_crops) -> None:
    _, model, _ = structure
    x = photo_crops[32:36]
    prepared = prepare(model, fold_batchnorm=False)  # folding is tested on its own below
    assert all(math.isinf(s.threshold) for s in activation_sites(prepared).values())
    with torch.no_grad():
        assert relative_error(prepared(x), model(x)) < 1e-5


def test_batchnorm_folding_keeps_outputs(structure, photo_crops) -> None:
    """Folding is exact up to rounding: 1e-10 in float64; in float32 it adds no error beyond
    what float32 itself makes (MobileNetV2's tiny data-estimated variances make that ~2e-5)."""
    _, model, _ = structure
    x = photo_crops[36:40]
    folded, unfolded = prepare(model), prepare(model, fold_batchnorm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in unfolded.modules())
    with torch.no_grad():
        model64 = copy.deepcopy(model).double()
        reference = prepare(model64, fold_batchnorm=False)(x.double())
        assert relative_error(prepare(model64)(x.double()), reference) < 1e-10
        folding_error = relative_error(folded(x).double(), reference)
        float32_error = relative_error(unfolded(x).double(), reference)
        assert folding_error < max(1e-5, 1.5 * float32_error)


def test_max_pool_reordering_keeps_relux_outputs_exactly(structure, photo_crops) -> None:
    _, model, _ = structure
    x = photo_crops[40:44]
    moved, kept = prepare(model), prepare(model, reorder_pools=False)
    torch.manual_seed(1)
    for site_a, site_b in zip(activation_sites(moved).values(), activation_sites(kept).values()):
        site_a.threshold = site_b.threshold = torch.rand(()) * 2 + 0.5  # finite: clipping bites
    with torch.no_grad():
        assert torch.equal(moved(x), kept(x))


def test_stem_pool_moves_before_the_neuron() -> None:
    gm = prepare(torchvision.models.resnet18(weights=None))
    order = [n.target for n in gm.graph.nodes if n.op == "call_module"][:4]
    assert order == ["conv1", "maxpool", "sites.relu", "layer1.0.conv1"]


class FunctionalNet(nn.Module):
    """Activations in every functional and in-place spelling, and a ReLU6 module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.act6 = nn.ReLU6(inplace=True)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.conv1(x), inplace=True)
        y = torch.relu(self.conv2(x))
        y = y + x
        z = self.conv3(y).relu_()
        z = self.act6(z)
        return self.fc(F.adaptive_avg_pool2d(z, 1).flatten(1).relu())


def test_functional_and_inplace_activations_are_sites_and_change_nothing() -> None:
    torch.manual_seed(0)
    model = FunctionalNet().eval()
    x = torch.randn(2, 3, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm = prepare(model)
    sites = activation_sites(gm)
    assert len(sites) == 5
    assert [s.cap for s in sites.values()].count(6.0) == 1
    with torch.no_grad():
        assert torch.allclose(gm(x), model(x), atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.act6, nn.ReLU6) and model.act6.inplace


class InplaceReuse(nn.Module):
    """An in-place ReLU whose input is read again later: the later read sees the ReLU output."""

    def forward(self, x):
        y = F.relu(x, inplace=True)
        return x + y  # x was overwritten: this is 2 * relu(x)


def test_inplace_semantics_are_kept() -> None:
    x = torch.randn(4, 5)
    gm = prepare(InplaceReuse())
    assert torch.allclose(gm(x.clone()), 2 * torch.relu(x))


def test_frozen_batchnorm_folds() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    bn = model[1]
    bn.weight.uniform_(0.5, 2)
    bn.bias.normal_()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    gm = prepare(model)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in gm.modules())
    x = torch.randn(2, 3, 6, 6)
    assert relative_error(gm(x), model(x)) < 1e-5


def test_original_model_is_never_modified(resnet18_photos, photo_crops) -> None:
    before = {k: v.clone() for k, v in resnet18_photos.state_dict().items()}
    snnlite.convert(resnet18_photos, [photo_crops[:8]], iterations=2, progress=False)
    after = resnet18_photos.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(resnet18_photos.relu, nn.ReLU)
    assert isinstance(resnet18_photos.bn1, nn.BatchNorm2d)


def test_structures_convert_and_simulate(structure, photo_crops) -> None:
    """The full path on each torchvision structure: convert, then a few finite spiking steps."""
    _, model, sites = structure
    snn = snnlite.convert(model, [photo_crops[:8]], iterations=2, progress=False)
    assert len(snn.thresholds) == sites
    out = snn.simulate(photo_crops[8:10], [2, 4], delay="auto")
    assert out[4].shape == (2, 1000) and torch.isfinite(out[4]).all()


def test_site_helpers_and_op_tables() -> None:
    """is_site / site_name name the neurons of a prepared graph; the op tables nest."""
    from snnlite.graph import (
        COPY_MODULES,
        LINEAR_MODULES,
        REARRANGING_MODULES,
        is_site,
        site_name,
        site_nodes,
    )

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 3), nn.ReLU())
    gm = prepare(model)
    names = [site_name(node) for node in site_nodes(gm)]
    assert names == list(activation_sites(gm)) and names
    others = [node for node in gm.graph.nodes if not is_site(node)]
    with pytest.raises(ValueError, match="does not call an activation site"):
        site_name(others[0])
    assert set(REARRANGING_MODULES) <= set(COPY_MODULES) <= set(LINEAR_MODULES)
