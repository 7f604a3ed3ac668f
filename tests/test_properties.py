"""Property-based tests: random small networks, converted and simulated.

Hypothesis builds eval-mode float64 CNNs from conv / linear / batch norm (random running
statistics) / ReLU / ReLU6 / max and average pools / residual add / channel cat / upsampling
(module and functional), with random widths, kernel sizes, strides and input sizes, and
checks three properties of every one:

* conversion succeeds; with a layer that has no spiking counterpart inserted somewhere, it
  raises ``UnsupportedLayerError`` naming that node, and the ``keep_analog`` name the message
  suggests makes the conversion succeed;
* ``simulate`` (any chunking and batch tiling, both max-pool forms, any delay) equals the
  independent float64 step-by-step oracle of tests/helpers.py;
* the clipped ANN with infinite thresholds (``relux()`` with every threshold set to inf, and
  ``prepare(model)`` itself) computes exactly the model.

Derandomized and small (``max_examples`` modest), so that CI is reproducible and the file
runs in about a minute on one free core (measured: 111 s in all with 30/20/20 examples on
a 2-core machine shared with two other jobs).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

import snnlite
from snnlite.graph import SITES
from snnlite.network import _Runner
from tests.helpers import oracle, state_hash

SETTINGS = settings(
    derandomize=True,
    max_examples=30,
    deadline=None,  # conversion time varies with the machine's load, not with the example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
BATCH = 3  # samples per simulated batch
UNSUPPORTED = ("gelu", "sigmoid", "leaky_relu", "tanh", "silu")


# --- random networks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One step of a random network: what it is, and the numbers that size it."""

    kind: str  # conv | pool | add | cat | upsample | bad
    width: int = 0  # output channels (conv), added channels (cat)
    kernel: int = 1
    stride: int = 1
    batch_norm: bool = False
    activation: str = "relu"  # relu | relu6 | none
    pool: str = "max"  # max | max3 | avg
    functional: bool = False  # upsample with F.interpolate instead of nn.Upsample


@dataclass(frozen=True)
class Spec:
    channels: int
    size: int
    blocks: tuple[Block, ...]
    head: str  # flatten | average
    hidden: int  # 0: one linear layer; else linear-ReLU-linear
    classes: int
    seed: int


def _activation(name: str) -> nn.Module | None:
    return {"relu": nn.ReLU(), "relu6": nn.ReLU6(), "none": None}[name]


def _unsupported(name: str) -> nn.Module:
    return {"gelu": nn.GELU(), "sigmoid": nn.Sigmoid(), "leaky_relu": nn.LeakyReLU(0.1),
            "tanh": nn.Tanh(), "silu": nn.SiLU()}[name]  # fmt: skip


def _batch_norm(channels: int, generator: torch.Generator) -> nn.BatchNorm2d:
    """A batch norm with non-trivial statistics and affine parameters (folding is tested)."""
    bn = nn.BatchNorm2d(channels)
    bn.running_mean = torch.randn(channels, generator=generator) * 0.5
    bn.running_var = torch.rand(channels, generator=generator) * 1.5 + 0.5
    bn.weight.data = torch.rand(channels, generator=generator) + 0.5
    bn.bias.data = torch.randn(channels, generator=generator) * 0.3
    return bn


class RandomNet(nn.Module):
    """A network built from a :class:`Spec`; its forward uses only the spec's static choices,
    so torch.fx traces it (the Python loop over blocks unrolls)."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        torch.manual_seed(spec.seed)
        generator = torch.Generator().manual_seed(spec.seed)
        self.kinds: list[str] = []
        self.layers = nn.ModuleList()
        channels, size = spec.channels, spec.size
        for block in spec.blocks:
            layer: nn.Module
            if block.kind == "conv":
                parts: list[nn.Module] = [nn.Conv2d(channels, block.width, block.kernel,
                                                    block.stride, block.kernel // 2)]  # fmt: skip
                if block.batch_norm:
                    parts.append(_batch_norm(block.width, generator))
                act = _activation(block.activation)
                parts += [act] if act is not None else []
                layer = nn.Sequential(*parts)
                channels = block.width
                size = (size + 2 * (block.kernel // 2) - block.kernel) // block.stride + 1
            elif block.kind == "pool":
                layer = {"max": nn.MaxPool2d(2), "max3": nn.MaxPool2d(3, 2, 1),
                         "avg": nn.AvgPool2d(2)}[block.pool]  # fmt: skip
                size = size // 2 if block.pool != "max3" else (size - 1) // 2 + 1
            elif block.kind == "add":  # x + branch(x), then an activation (a residual block)
                layer = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1),
                                      _batch_norm(channels, generator), nn.ReLU(),
                                      nn.Conv2d(channels, channels, 1))  # fmt: skip
            elif block.kind == "cat":  # [x, relu(conv(x))] along channels
                layer = nn.Sequential(nn.Conv2d(channels, block.width, 1), nn.ReLU())
                channels += block.width
            elif block.kind == "upsample":
                layer = nn.Upsample(scale_factor=2, mode="nearest")
                size *= 2
            else:
                layer = _unsupported(block.activation)
            self.kinds.append(f"{block.kind}:{block.activation}:{block.functional}")
            self.layers.append(layer)
        features = channels if spec.head == "average" else channels * size * size
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if spec.head == "average" else []
        head.append(nn.Flatten())
        if spec.hidden:
            head += [nn.Linear(features, spec.hidden), nn.ReLU()]
            features = spec.hidden
        head.append(nn.Linear(features, spec.classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for kind, layer in zip(self.kinds, self.layers):
            what, activation, functional = kind.split(":")
            if what == "add":
                y = x + layer(x)
                x = F.relu6(y) if activation == "relu6" else torch.relu(y)
            elif what == "cat":
                x = torch.cat([x, layer(x)], dim=1)
            elif what == "upsample" and functional == "True":
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            else:
                x = layer(x)
        return self.head(x)


@st.composite
def blocks(draw: st.DrawFn, size: int) -> tuple[tuple[Block, ...], int]:
    """A first conv + activation (so there is always a neuron), often a second one with a max
    pool after it (a pool on a time-varying input: the case the gated pool exists for; after
    the first layer alone the pool's input is constant under direct coding), then up to 4
    random blocks."""
    first = Block("conv", width=draw(st.integers(2, 4)), kernel=draw(st.sampled_from([1, 3])),
                  batch_norm=draw(st.booleans()),
                  activation=draw(st.sampled_from(["relu", "relu6"])))  # fmt: skip
    chosen = [first]
    if draw(st.booleans()):
        chosen.append(Block("conv", width=draw(st.integers(2, 4)), kernel=3,
                            batch_norm=draw(st.booleans()), activation="relu"))  # fmt: skip
        pool = draw(st.sampled_from(["max", "max3"]))
        chosen.append(Block("pool", pool=pool))
        size = size // 2 if pool != "max3" else (size - 1) // 2 + 1
    for _ in range(draw(st.integers(0, 4))):
        kinds = ["conv", "add", "cat"]
        kinds += ["pool"] if size >= 4 else []
        kinds += ["upsample"] if size <= 4 else []
        kind = draw(st.sampled_from(kinds))
        if kind == "conv":
            stride = draw(st.sampled_from([1, 2])) if size >= 4 else 1
            kernel = draw(st.sampled_from([1, 3]))
            chosen.append(
                Block(
                    "conv",
                    width=draw(st.integers(2, 4)),
                    kernel=kernel,
                    stride=stride,
                    batch_norm=draw(st.booleans()),
                    activation=draw(st.sampled_from(["relu", "relu6", "none"])),
                )
            )
            size = (size + 2 * (kernel // 2) - kernel) // stride + 1
        elif kind == "pool":
            pool = draw(st.sampled_from(["max", "max3", "avg"]))
            chosen.append(Block("pool", pool=pool))
            size = size // 2 if pool != "max3" else (size - 1) // 2 + 1
        elif kind == "add":
            chosen.append(Block("add", activation=draw(st.sampled_from(["relu", "relu6"]))))
        elif kind == "cat":
            chosen.append(Block("cat", width=draw(st.integers(1, 3))))
        else:
            chosen.append(Block("upsample", functional=draw(st.booleans())))
            size *= 2
    return tuple(chosen), size


@st.composite
def specs(draw: st.DrawFn, unsupported: bool = False) -> Spec:
    size = draw(st.sampled_from([4, 6, 8]))
    chosen, _ = draw(blocks(size))
    if unsupported:  # one layer with no spiking counterpart, anywhere after the first block
        where = draw(st.integers(1, len(chosen)))
        bad = Block("bad", activation=draw(st.sampled_from(UNSUPPORTED)))
        chosen = chosen[:where] + (bad,) + chosen[where:]
    return Spec(
        channels=draw(st.integers(1, 3)),
        size=size,
        blocks=chosen,
        head=draw(st.sampled_from(["flatten", "average"])),
        hidden=draw(st.sampled_from([0, 5])),
        classes=draw(st.integers(2, 4)),
        seed=draw(st.integers(0, 2**16)),
    )


def build(spec: Spec) -> tuple[nn.Module, list[torch.Tensor], torch.Tensor]:
    """The float64 eval-mode model, two calibration batches and a test batch."""
    model = RandomNet(spec).double().eval()
    generator = torch.Generator().manual_seed(spec.seed + 1)
    shape = (spec.channels, spec.size, spec.size)
    calibration = [torch.randn(8, *shape, generator=generator, dtype=torch.float64)
                   for _ in range(2)]  # fmt: skip
    x = torch.randn(BATCH, *shape, generator=generator, dtype=torch.float64)
    return model, calibration, x


# --- the properties -------------------------------------------------------------------------


@SETTINGS
@given(
    spec=specs(),
    method=st.sampled_from(["ltb", "max", "robust"]),
    granularity=st.sampled_from(["layer", "channel"]),
    max_pool=st.sampled_from(["gated", "cumulative", "current"]),
    timesteps=st.lists(st.integers(1, 14), min_size=1, max_size=3),
    delay=st.integers(0, 6),
    chunk_size=st.sampled_from([None, 1, 3, 5]),
    batch_size=st.sampled_from([None, 1, 2]),
)
def test_simulate_equals_the_step_by_step_oracle(
    spec: Spec, method, granularity, max_pool, timesteps, delay, chunk_size, batch_size
) -> None:
    model, calibration, x = build(spec)
    before = state_hash(model)
    snn = snnlite.convert(model, calibration, method=method, granularity=granularity,
                          max_pool=max_pool, iterations=4, progress=False)  # fmt: skip
    assert state_hash(model) == before  # convert never changes the model
    assert snn.thresholds and all(torch.isfinite(t).all() for t in snn.thresholds.values())
    ours = snn.simulate(x, timesteps, delay=delay, chunk_size=chunk_size, batch_size=batch_size)
    assert sorted(ours) == sorted(set(timesteps))
    runner = _Runner(snn.ann, max_pool, record=False)
    pools = [type(runner.temporal.get(node, module)).__name__
             for node in runner.dynamic if node.op == "call_module"
             for module in [snn.ann.get_submodule(node.target)]
             if isinstance(module, nn.MaxPool2d)]  # fmt: skip
    event(f"max pools on time-varying inputs: {sorted(set(pools)) or 'none'}")
    for T in set(timesteps):
        start = snnlite.network.readout_start(T, delay)
        reference = oracle(snn, x, T, gated=max_pool == "gated", start=start,
                           cumulative=max_pool == "cumulative")  # fmt: skip
        assert ours[T].dtype == torch.float64
        torch.testing.assert_close(ours[T], reference, rtol=1e-7, atol=1e-9)


def _with_infinite_thresholds(snn: snnlite.SpikingNetwork) -> nn.Module:
    net = snn.relux()
    for site in net.get_submodule(SITES).children():
        site.threshold = torch.full_like(site.threshold, math.inf)
    return net


@settings(SETTINGS, max_examples=20)
@given(spec=specs(), granularity=st.sampled_from(["layer", "channel"]))
def test_relux_with_infinite_thresholds_is_the_model(spec: Spec, granularity) -> None:
    """Folded batch norms, pools moved before neurons and ReLU6 caps change nothing: with
    infinite thresholds the clipped ANN is the model, up to float64 rounding."""
    model, calibration, x = build(spec)
    snn = snnlite.convert(model, calibration, granularity=granularity, iterations=2,
                          progress=False)  # fmt: skip
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(_with_infinite_thresholds(snn)(x), expected,
                                   rtol=1e-10, atol=1e-12)  # fmt: skip
        torch.testing.assert_close(snnlite.prepare(model)(x), expected, rtol=1e-10, atol=1e-12)


@settings(SETTINGS, max_examples=20)
@given(spec=specs(unsupported=True))
def test_an_unsupported_layer_is_refused_by_name_and_its_suggestion_works(spec: Spec) -> None:
    model, calibration, x = build(spec)
    before = state_hash(model)
    index = next(i for i, b in enumerate(spec.blocks) if b.kind == "bad")
    qualified = f"layers.{index}"  # the unsupported module's name in named_modules()
    with pytest.raises(snnlite.UnsupportedLayerError) as refused:
        snnlite.convert(model, calibration, iterations=2, progress=False)
    message = str(refused.value)
    assert f"node 'layers_{index}'" in message, message
    assert type(model.layers[index]).__name__ in message, message
    suggested = re.search(r"keep_analog=\['([^']+)'\]", message)
    assert suggested is not None and suggested.group(1) == qualified, message
    assert state_hash(model) == before  # the refusal changed nothing
    snn = snnlite.convert(model, calibration, keep_analog=[qualified], iterations=2,
                          progress=False)  # fmt: skip
    with torch.no_grad():  # the kept-analog layer is the model's own: relux(inf) == model
        torch.testing.assert_close(_with_infinite_thresholds(snn)(x), model(x),
                                   rtol=1e-10, atol=1e-12)  # fmt: skip
    assert state_hash(model) == before
