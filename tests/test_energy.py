"""Tests of snnlite.energy: the paper's arithmetic, MACs, exact fan-outs and recorded SOPs.

Fan-outs are checked against hand counts on small layers and against dense Jacobian patterns;
the SOPs recorded during simulation against an independent brute-force count on the zoo's
converted networks (indicator weights applied to the actual spike trains, layer by layer).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from snnlite import energy
from snnlite.graph import activation_sites, prepare
from snnlite.network import SpikingNetwork

# --- the paper's arithmetic and the constants ----------------------------------------------


def test_paper_arithmetic_resnet34() -> None:
    ann = energy.fps_per_watt(macs=3.66e9)  # 3.66e9 x 12.5 pJ = 45.75 mJ per frame
    snn = energy.fps_per_watt(sops=20.86e9)  # SOP90: 20.86e9 x 77 fJ = 1.606 mJ per frame
    assert ann == pytest.approx(1 / 45.75e-3) and round(ann) == 22
    assert snn == pytest.approx(1 / (20.86e9 * 77e-15)) and round(snn) == 623
    assert round(snn / ann) == 28


def test_presets_and_custom_constants() -> None:
    assert energy.energy_per_frame(sops=1e12, preset="45nm") == pytest.approx(0.9)
    assert energy.energy_per_frame(macs=1e12, preset="45nm") == pytest.approx(4.6)
    own = energy.EnergyConstants(joules_per_sop=1e-12, joules_per_mac=2e-12)
    assert energy.fps_per_watt(sops=1e9, macs=1e9, preset=own) == pytest.approx(1 / 3e-3)
    assert energy.fps_per_watt() == math.inf
    with pytest.raises(ValueError, match="unknown energy preset"):
        energy.fps_per_watt(sops=1.0, preset="7nm")
    with pytest.raises(ValueError):
        energy.EnergyConstants(0.0, 1e-12)


def test_sop_at_fraction_takes_the_first_t_reaching_the_fraction() -> None:
    curve = {8: 0.50, 16: 0.86, 32: 0.91, 64: 0.95}
    sops = {8: 1e6, 16: 2e6, 32: 4e6, 64: 8e6}
    assert energy.sop_at_fraction(curve, sops, ann_metric=0.95, fraction=0.9) == (16, 2e6)
    assert energy.sop_at_fraction(curve, sops, ann_metric=0.95, fraction=0.95) == (32, 4e6)
    assert energy.sop_at_fraction(curve, sops, ann_metric=1.2, fraction=0.95) is None
    row = energy.energy_row("m", curve, sops, 0.95, macs=1e9)
    assert row.sop90 == (16, 2e6) and row.snn_fps_per_watt(row.sop90) == pytest.approx(
        1 / (2e6 * 77e-15)
    )
    table = energy.energy_table([row])
    assert "| m |" in table and "2e+06 (16)" in table and "4e+06 (32)" in table


# --- ANN MACs ------------------------------------------------------------------------------


@pytest.mark.parametrize(("arch", "published"), [("resnet18", 1.81e9), ("resnet34", 3.66e9)])
def test_torchvision_resnet_macs_match_the_published_counts(arch: str, published: float) -> None:
    model = getattr(torchvision.models, arch)(weights=None)
    macs = energy.ann_macs(model, torch.zeros(2, 3, 224, 224))
    assert macs.total == pytest.approx(published, rel=0.02)
    assert macs.per_layer["conv1"] == 64 * 112 * 112 * 3 * 49  # the 7x7 stem
    assert macs.per_layer["fc"] == 512 * 1000
    assert sum(macs.per_layer.values()) == macs.total  # only conv / linear do MACs


# --- fan-out maps on hand-computed cases ---------------------------------------------------


def _fanouts(model: nn.Module, shape: tuple[int, ...], **options) -> dict[str, torch.Tensor]:
    return energy.fanout_maps(prepare(model.eval(), **options), torch.zeros(1, *shape))


def _per_dim(counts: list[int]) -> torch.Tensor:
    c = torch.tensor(counts, dtype=torch.float64)
    return torch.outer(c, c)


def test_fanout_of_a_padded_strided_conv_and_a_linear_layer() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 1), nn.ReLU(),  # analog first layer, then the source (2, 5, 5)
        nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(),  # 5x5 -> 3x3
        nn.Flatten(), nn.Linear(27, 7),
    )  # fmt: skip
    maps = _fanouts(model, (1, 5, 5))
    first, second = maps["sites__1"], maps["sites__3"]
    # Windows 2o-1..2o+1 over 0..4: inputs 0,2,4 are in one window, 1 and 3 in two.
    assert torch.equal(first, 3 * _per_dim([1, 2, 1, 2, 1]).expand(2, 5, 5))
    assert torch.equal(second, torch.full((3, 3, 3), 7.0, dtype=torch.float64))


def test_fanout_of_a_grouped_dilated_conv_counts_only_nonzero_weights() -> None:
    conv = nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2)  # 5x5 -> 5x5
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), conv)
    # Output o reads o-2, o, o+2: input 2 lies in three windows, the others in two.
    hand = _per_dim([2, 2, 3, 2, 2])
    assert torch.equal(_fanouts(model, (1, 5, 5))["sites__1"], 3 * hand.expand(4, 5, 5))
    with torch.no_grad():
        conv.weight[:3, 0] = 0  # input channel 0 (group 0: outputs 0-2) reaches no weight
        conv.weight[3, 0, 1, 1] = 0  # one centre tap of input channel 2 (group 1, local 0)
    maps = _fanouts(model, (1, 5, 5))["sites__1"]
    assert torch.equal(maps[0], torch.zeros(5, 5, dtype=torch.float64))
    assert torch.equal(maps[1], 3 * hand)
    assert torch.equal(maps[2], 3 * hand - 1)  # every position loses its centre tap once


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 1)
        self.conv = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(4, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.stem(x))
        b = torch.relu(self.conv(a) + a)  # a reaches conv's 4 weights and b's membrane
        return self.head(b)


def test_fanout_through_a_residual_add() -> None:
    maps = _fanouts(_Residual(), (1, 3, 3))
    first, second = maps.values()
    assert torch.equal(first, torch.full((4, 3, 3), 4.0 + 1.0, dtype=torch.float64))
    assert torch.equal(second, torch.full((4, 3, 3), 5.0, dtype=torch.float64))


def test_fanout_through_an_average_pool() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 1), nn.ReLU(),
        nn.AvgPool2d(2, stride=1),  # 3x3 -> 2x2, overlapping windows
        nn.Flatten(), nn.Linear(8, 5),
    )  # fmt: skip
    # A spike reaches the 5 weights of every pooled output it lies in: 1, 2 or 4 windows.
    expected = 5 * _per_dim([1, 2, 1]).expand(2, 3, 3)
    assert torch.equal(_fanouts(model, (1, 3, 3))["sites__1"], expected)


class _Resample(nn.Module):
    """Spikes through an adaptive average pool and a bilinear upsampling into a 1x1 conv."""

    def __init__(self, mode: str, align_corners: bool | None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 1)
        self.head = nn.Conv2d(2, 3, 1)
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem(x))  # (2, 7, 5)
        pooled = F.adaptive_avg_pool2d(s, (3, 2))  # uneven, overlapping windows
        up = F.interpolate(pooled, size=(8, 6), mode=self.mode, align_corners=self.align_corners)
        return self.head(up + F.interpolate(s, scale_factor=2, mode="nearest")[..., :8, :6])


@pytest.mark.parametrize(("mode", "align"), [("bilinear", False), ("bilinear", True),
                                             ("bicubic", False), ("nearest", None)])  # fmt: skip
def test_fanout_through_pooling_and_upsampling_matches_the_jacobian_pattern(
    mode: str, align: bool | None
) -> None:
    """Brute force: chain the dense Jacobian patterns (nonzero indicators) of the weight-free
    ops, one per op, and sum over both paths into the 1x1 conv (3 weights per element reached):
    an event counts once per path, like an event-driven chip sending it down each."""
    model = _Resample(mode, align).eval()
    (fanout,) = _fanouts(model, (1, 7, 5)).values()

    def pattern(op, x: torch.Tensor) -> torch.Tensor:  # (outputs, inputs) of one channel
        jacobian = torch.autograd.functional.jacobian(op, x)
        return (jacobian != 0).double().reshape(op(x).numel(), x.numel())

    s = torch.rand(1, 1, 7, 5, dtype=torch.float64)
    pooled = F.adaptive_avg_pool2d(s, (3, 2))
    pool = pattern(lambda v: F.adaptive_avg_pool2d(v, (3, 2)), s)
    up = pattern(lambda v: F.interpolate(v, size=(8, 6), mode=mode, align_corners=align), pooled)
    near = pattern(lambda v: F.interpolate(v, scale_factor=2, mode="nearest")[..., :8, :6], s)
    reached = ((up @ pool).sum(0) + near.sum(0)).view(7, 5)
    assert torch.equal(fanout, 3 * reached.expand(2, 7, 5))


# --- SOPs recorded during simulation ------------------------------------------------------


def _brute_force_sops(snn: SpikingNetwork, x: torch.Tensor, steps: int) -> float:
    """Count, at every weighted layer fed by spikes, the (spike, nonzero weight) pairs of its
    actual inputs, with hooks on the layers the simulation calls; the first layer's analog
    input and the average pool into the ResNet's classifier handled explicitly."""
    gm = snn.ann
    spiking_inputs = {
        str(node.target)
        for node in gm.graph.nodes
        if node.op == "call_module" and not str(node.target).startswith("sites.")
        and _from_site(gm, node.args[0])
    }  # fmt: skip
    total = [0.0]
    handles = []
    for name in spiking_inputs:
        module = gm.get_submodule(name)
        if isinstance(module, nn.Conv2d):

            def hook(m, inputs, _out) -> None:
                events = (inputs[0] != 0).double()
                w = (m.weight != 0).double()
                y = F.conv2d(events, w, None, m.stride, m.padding, m.dilation, m.groups)
                total[0] += float(y.sum())

        elif isinstance(module, nn.Linear):

            def hook(m, inputs, _out) -> None:
                total[0] += float(((inputs[0] != 0).double() @ (m.weight != 0).double().T).sum())

        elif isinstance(module, nn.AdaptiveAvgPool2d):  # global pool -> flatten -> fc
            fc = gm.get_submodule("fc")

            def hook(m, inputs, _out, fc=fc) -> None:
                per_channel = (inputs[0] != 0).double().sum(dim=(2, 3))  # (steps * N, C)
                total[0] += float((per_channel @ (fc.weight != 0).double().sum(0)).sum())

        else:
            continue
        handles.append(module.register_forward_hook(hook))
    try:
        snn.simulate(x, steps, delay=0, chunk_size=5, batch_size=len(x), progress=False)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def _from_site(gm, node) -> bool:
    """Whether ``node``'s value is spikes: a site's output, through flatten / dropout only."""
    while node.op == "call_module" and not str(node.target).startswith("sites."):
        if not isinstance(gm.get_submodule(node.target), nn.Flatten | nn.Dropout):
            return False
        node = node.args[0]
    return node.op == "call_module"


def test_recorded_sops_equal_a_brute_force_count_resnet(resnet_zoo_snn, fashion) -> None:
    _check_against_brute_force(resnet_zoo_snn, fashion["test"][:6])


def test_recorded_sops_equal_a_brute_force_count_vgg(vgg_zoo_snn, fashion) -> None:
    """Both pool forms: the max pools sit before the neurons (moved there), not sources."""
    _check_against_brute_force(vgg_zoo_snn[1], fashion["test"][:6])


def _check_against_brute_force(snn: SpikingNetwork, x: torch.Tensor, steps: int = 12) -> None:
    snn.simulate(x, steps, delay=0, progress=False, record_spikes=True, batch_size=4)
    activity = snn.last_activity
    assert activity.samples == 6 and activity.steps == steps
    brute = _brute_force_sops(snn, x, steps)
    assert brute > 1e5  # the network is active: the comparison means something
    assert activity.sops_at([steps])[steps] * len(x) == pytest.approx(brute, rel=1e-12)
    for name, counts in snn.spike_counts.items():  # events of neurons are their spikes
        assert torch.equal(activity.events[name], counts)


def test_recording_is_invisible_and_independent_of_chunking(resnet_zoo_snn, fashion) -> None:
    snn, x = resnet_zoo_snn, fashion["test"][:5]
    options = {"delay": 2, "progress": False, "chunk_size": 3, "batch_size": 2}
    plain = snn.simulate(x, [4, 10], **options)
    recorded = snn.simulate(x, [4, 10], record_spikes=True, **options)
    first = snn.last_activity
    for T in plain:
        assert torch.equal(plain[T], recorded[T])
    snn.simulate(x, 10, delay=2, progress=False, record_spikes=True, chunk_size=10)
    second = snn.last_activity
    cumulative = first.sops_per_image()
    # Other chunks and tiles round the currents differently: a rare spike may flip.
    assert torch.allclose(cumulative, second.sops_per_image(), rtol=1e-3)
    assert (cumulative.diff() >= 0).all() and cumulative[-1] > 0
    # SOPs up to T count every step the hardware ran, whatever the readout window.
    assert first.sops_at([4])[4] == pytest.approx(float(cumulative[3]))
    rates = {row["source"]: row["firing_rate"] for row in first.layers(10)}
    assert set(rates) == set(snn.thresholds) and all(0 <= r <= 1 for r in rates.values())


def test_a_metric_curve_records_the_activity_of_all_its_batches(resnet_zoo_snn, fashion) -> None:
    """accuracy_curve / miou_curve / map_curve with record_spikes=True: the SOPs of the very
    simulations that gave the metric, summed over their batches (dense_curves' energy)."""
    from snnlite import metrics

    snn, x, y = resnet_zoo_snn, fashion["test"][:12], fashion["labels"][:12]
    options = {"delay": 2, "progress": False}
    plain = metrics.accuracy_curve(snn, x, y, [4, 8], batch_size=5, **options)
    curve = metrics.accuracy_curve(snn, x, y, [4, 8], batch_size=5, record_spikes=True, **options)
    batched = snn.last_activity  # three batches: 5 + 5 + 2 images
    assert curve == plain  # recording changes nothing
    snn.simulate(x, 8, record_spikes=True, **options)
    whole = snn.last_activity  # all 12 images in one simulation
    assert batched.samples == whole.samples == 12
    assert batched.steps == whole.steps == 8
    # Other batch sizes round the currents differently: a rare spike may flip.
    assert torch.allclose(batched.sops_per_image(), whole.sops_per_image(), rtol=1e-3)


def test_a_max_pool_on_spike_trains_is_a_source_of_its_own(photo_crops) -> None:
    """Without pool reordering the gated pool passes spikes: its outputs are the events and
    the neuron before it reaches no synapse."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=1)).eval()  # fmt: skip
    gm = prepare(model, reorder_pools=False)
    for site in activation_sites(gm).values():
        site.threshold = torch.tensor(0.5)
    snn = SpikingNetwork(gm, progress=False)
    x = photo_crops[:3]
    maps = energy.fanout_maps(gm, x)
    assert list(maps) == ["sites__1", "_2"]  # the neuron, then the pool
    assert not maps["sites__1"].any() and maps["_2"].max() == 9 * 6
    passed = [0.0]

    def hook(m, inputs, _out) -> None:
        events = (inputs[0] != 0).double()
        passed[0] += float(F.conv2d(events, (m.weight != 0).double(), None, 1, 1).sum())

    snn.simulate(x, 16, delay=0, record_spikes=True, chunk_size=4, batch_size=3)
    activity = snn.last_activity
    handle = gm.get_submodule("3").register_forward_hook(hook)
    try:  # the same (deterministic) run again, counted at the conv it feeds
        snn.simulate(x, 16, delay=0, chunk_size=8, batch_size=2)
    finally:
        handle.remove()
    assert float(activity.sops["_1"].sum()) == 0 and activity.events["_1"].sum() > 0
    assert activity.sops_at([16])[16] * len(x) == pytest.approx(passed[0], rel=1e-12)


def test_analog_first_layer_macs_and_an_energy_row(resnet_zoo_snn, fashion) -> None:
    from snnlite import zoo

    model = zoo.load("fmnist_resnet")
    x, y = fashion["test"][:40], fashion["labels"][:40]
    analog = energy.analog_macs(resnet_zoo_snn.ann, x)
    assert analog.per_layer == {"stem.0": 32 * 28 * 28 * 9}  # only the stem sees the image
    row, activity, curve = energy.classification_energy(
        "fmnist_resnet", model, resnet_zoo_snn, x, y, [4, 8, 16, 32], batch_size=20,
        progress=False,
    )  # fmt: skip
    assert activity.samples == 40 and row.analog_macs == analog.total
    assert row.macs == energy.ann_macs(model, x).total
    reached = [T for T in curve if curve[T] >= 0.9 * row.ann_metric]
    assert row.sop90 == ((reached[0], activity.sops_at(reached)[reached[0]]) if reached else None)
    with_analog = energy.EnergyRow(**{**row.__dict__, "include_analog": True})
    if row.sop90:
        assert with_analog.snn_fps_per_watt(row.sop90) < row.snn_fps_per_watt(row.sop90)


def test_unsupported_spike_paths_are_refused_by_name() -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = torch.relu(self.a(x))
            return self.b(s * self.a(x))  # data-dependent gating of spikes

    with pytest.raises(NotImplementedError, match="mul"):
        _fanouts(Gate(), (1, 4, 4))
