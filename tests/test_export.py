"""NIR export: a round trip through an independent reader (snnTorch's NIR importer), and the
parts NIR 1.0 cannot express refused by name.

snnTorch 1.0.0 reads ``nir.IF`` with three bugs (book/deployment.md): a leak (``beta=0.9``),
a (spike, membrane) tuple where the next layer wants the spikes, and ``reset_delay=False``,
whose "avoid double reset" drops a spike when the membrane after a reset is still above
threshold. :func:`snntorch_network` sets the imported ``Leaky`` modules to what an IF neuron
with reset by subtraction is (``beta=1``, spikes only, ``reset_delay=True``), moves
``Flatten`` past the batch dimension (snnTorch and nirtorch read NIR's batch-free dims as
torch's) and starts every membrane at the graph's ``v_init``. Everything else (the layers,
the wiring, the sums at additions) is the reader's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import snnlite
from snnlite import zoo
from snnlite.data import fashion_mnist_tensors
from snnlite.export import ExportError, initial_potentials, to_nir, write_nir
from snnlite.graph import activation_sites

nir = pytest.importorskip("nir")
snntorch = pytest.importorskip("snntorch")
import_nir = pytest.importorskip("snntorch.import_nir")

T = 16


def average_pool_vgg() -> nn.Module:
    """The zoo VGG with its max pools swapped for 2x2 average pools (same shapes, same
    trained weights): a VGG that NIR can carry."""
    model = zoo.load("fmnist_vgg")
    for i, layer in enumerate(model.features):
        if isinstance(layer, nn.MaxPool2d):
            model.features[i] = nn.AvgPool2d(2, 2)
    return model.eval()


def snntorch_network(graph):
    """The graph as snnTorch reads it, repaired as the module doc says; and its neurons."""
    net = import_nir.import_from_nir(graph)
    neurons = {}
    for name, module in net.named_modules():
        if isinstance(module, snntorch.Leaky):
            module.beta = torch.tensor(1.0)
            module.init_hidden, module.reset_delay = True, True
            neurons[name] = module
        if isinstance(module, nn.Flatten) and module.start_dim >= 0:
            module.start_dim += 1
    return net, neurons


def run_snntorch(graph, x: torch.Tensor, steps: int):
    """Outputs per step (steps, N, ...) and spikes per step of every IF node."""
    net, neurons = snntorch_network(graph)
    start = initial_potentials(graph)
    counts: dict[str, list[int]] = {name: [] for name in neurons}
    for name, module in neurons.items():
        module.mem = torch.as_tensor(start[name]).expand(len(x), *start[name].shape).clone()
        module.register_forward_hook(
            lambda _m, _i, spikes, name=name: counts[name].append(int(spikes.sum()))
        )
    with torch.no_grad():
        outputs = [net(x)[0] for _ in range(steps)]
    return torch.stack(outputs), counts


@pytest.fixture(scope="module")
def data():
    train, _ = fashion_mnist_tensors("train")
    test, labels = fashion_mnist_tensors("test")
    return list(train[:400].split(50)), test[:100], labels[:100]


@pytest.mark.parametrize("build", [average_pool_vgg, lambda: zoo.load("fmnist_resnet")],
                         ids=["vgg_average_pools", "fmnist_resnet"])  # fmt: skip
def test_snntorch_reads_the_same_network(build, data) -> None:
    calibration, x, labels = data
    snn = snnlite.convert(build(), calibration, iterations=8, progress=False)
    graph = to_nir(snn)
    outputs, counts = run_snntorch(graph, x, T)
    reference = snn.simulate(x, [T], record_spikes=True, progress=False)[T]
    spikes = snn.spike_counts
    sites = {name: graph.nodes[name].metadata["site"] for name in counts}
    assert sorted(sites.values()) == sorted(snn.thresholds)
    for name, site in sites.items():  # equal up to float32 rounding at the threshold
        theirs, ours = sum(counts[name]), int(spikes[site].sum())
        assert ours > 0 and abs(theirs - ours) <= 5e-5 * ours, (site, theirs, ours)
    start = snn.skipped_steps(T, "auto")
    theirs = outputs[start:].mean(0)
    # The same predictions, except where a spike that float32 rounding moved (counted above)
    # tips a near-tie: only images whose top two outputs are closer than the two readouts
    # differ may change their answer, and few do (on one CPU none, on another 1 of 100).
    flipped = theirs.argmax(1) != reference.argmax(1)
    top_two = reference.topk(2, dim=1).values
    margin = top_two[:, 0] - top_two[:, 1]
    difference = (theirs - reference).abs().amax(1)
    assert (margin[flipped] <= 2 * difference[flipped]).all()
    assert int(flipped.sum()) <= 2
    correct = (theirs.argmax(1) == labels).sum() - (reference.argmax(1) == labels).sum()
    assert abs(int(correct)) <= int(flipped.sum())


def test_max_pools_are_refused_by_name(data) -> None:
    snn = snnlite.convert(zoo.load("fmnist_vgg"), data[0], iterations=2, progress=False)
    with pytest.raises(ExportError, match=r"node 'features_6'.*max pool"):
        to_nir(snn)


def test_the_file_keeps_the_neurons_initial_potentials(tmp_path: Path, data) -> None:
    snn = snnlite.convert(zoo.load("fmnist_resnet"), data[0], iterations=2, progress=False)
    path = tmp_path / "resnet.nir"
    write_nir(snn, path)
    graph = nir.read(path)
    neurons = {n: node for n, node in graph.nodes.items() if isinstance(node, nir.IF)}
    assert len(neurons) == len(snn.thresholds)
    for node in neurons.values():
        assert (node.v_threshold == 1).all() and (node.r == 1).all()
        assert node.metadata["reset"] == "subtract"
        assert (node.metadata["v_init"] == 0.5).all()
    # additions are fan-in edges: each block's second neuron sums two convolutions
    fan_in = {n: sum(1 for _, dst in graph.edges if dst == n) for n in neurons}
    assert sorted(fan_in.values()) == [1] * 4 + [2] * 3


def test_a_low_latency_charge_moves_the_initial_potential(data) -> None:
    snn = snnlite.convert(zoo.load("fmnist_resnet"), data[0], iterations=2, progress=False,
                          target_timesteps=8, tuning_size=50)  # fmt: skip
    graph = to_nir(snn)
    sites = {
        node.metadata["site"]: node for node in graph.nodes.values() if isinstance(node, nir.IF)
    }
    charged = [name for name, site in activation_sites(snn.ann).items()
               if site.charge is not None]  # fmt: skip
    assert charged
    for name in charged:
        site = activation_sites(snn.ann)[name]
        theta = site.threshold.view(-1, 1, 1) if site.threshold.dim() else site.threshold
        charge = site.charge.view(-1, 1, 1) if site.charge.dim() else site.charge
        expected = torch.where(theta > 0, 0.5 + charge / theta.clamp_min(1e-30), 0.5)
        got = torch.as_tensor(sites[name].metadata["v_init"])
        assert torch.allclose(got, expected.expand_as(got).float(), atol=1e-6)
