"""Export a converted network to NIR, the Neuromorphic Intermediate Representation (nir 1.0).

NIR describes a spiking network as a graph of standard nodes (``Conv2d``, ``Affine``,
``AvgPool2d``, ``Flatten``, ``IF``, ...) that simulators and neuromorphic chips read. What the
export writes, and how snnlite's network maps onto it:

* **Thresholds are folded into the weights.** snnlite's neuron at a site with threshold
  ``theta`` (per channel or per layer) emits spikes worth ``theta``. In the graph every ``IF``
  has ``v_threshold = 1`` and emits spikes worth 1: a weighted layer between sites with
  thresholds ``theta_in`` (its input's) and ``theta_out`` (its consumer's) gets
  ``W' = W * theta_in / theta_out`` and ``b' = b / theta_out``. Readers that accept only one
  threshold per node (snnTorch, SpikingJelly, most chips) can then load per-channel
  thresholds. Silent channels (``theta = 0``) get zero weights and never fire.
* **Additions** (residual connections) are edges: NIR sums every input of a node. Where the
  two operands of an addition carry different scales (an identity shortcut between sites of
  different thresholds) a ``Scale`` node rescales one of them.
* **Pooling**: average pooling (and an adaptive one that tiles its input exactly) is
  ``AvgPool2d``; ``Flatten`` counts dimensions without the batch, as NIR's types do.
* **The neuron**: an ``IF`` node with ``r = 1`` (one step of length ``dt = 1`` adds the input
  current once), ``v_threshold = 1``, ``v_reset = 0``. NIR 1.0's ``IF`` has no field for
  two things snnlite's neuron does, so each ``IF`` node says them in its ``metadata``:
  ``reset = "subtract"`` (reset by subtraction, as snnTorch's and sinabs' importers read
  ``IF``; a reader that resets to ``v_reset`` to the letter, as SpikingJelly's does, runs a
  different network) and ``v_init`` (the initial membrane potential, 0.5 here, that is
  ``theta / 2``, plus the low-latency ``charge`` if the network was tuned for a T).
  The spike condition is ``v >= v_threshold``.
* **Input and readout**: the input is fed unchanged at every step (direct coding); the
  ``Output`` is the last layer's value at each step, and the prediction is its mean over the
  steps ``d < t <= T`` (the graph's ``metadata`` holds the delay estimate and schedule).

Refused, with an :class:`ExportError` that names the node: max pooling (NIR 1.0 has no max
pool; snnlite's gated max pool is not expressible), nodes kept analog, the low-latency
``bias`` current, burst neurons (``spikes_per_step`` > 1: NIR's IF sends one spike per
step), signed spikes (NIR's IF never takes a spike back), concatenation, upsampling and
any other operation without a NIR node.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from snnlite.graph import ANALOG, describe, is_site, node_values, site_name
from snnlite.network import SpikingNetwork
from snnlite.pooling import MAX_POOL_TYPES

try:  # nir is the optional `nir` extra: only the export needs it
    import nir
except ImportError:
    nir = None  # type: ignore[assignment]

__all__ = ["ExportError", "initial_potentials", "to_nir", "write_nir"]

_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_ADD_FUNCTIONS = {torch.add, operator.add}


class ExportError(ValueError):
    """A part of the network that NIR 1.0 cannot express; the message names the node."""


def write_nir(snn: SpikingNetwork, path: str | os.PathLike, example: Tensor | None = None) -> None:
    """:func:`to_nir` written to ``path`` (NIR's HDF5 format, read back by ``nir.read``)."""
    _require_nir()
    nir.write(path, to_nir(snn, example))


def to_nir(snn: SpikingNetwork, example: Tensor | None = None) -> Any:
    """The converted network as a ``nir.NIRGraph`` (see the module doc for what maps to what).

    ``example``: an input batch (N, ...) giving the shapes; by default zeros of the shape the
    network was calibrated on.
    """
    _require_nir()
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(f"to_nir takes a SpikingNetwork (snnlite.convert), not {type(snn)}")
    snn._check_thresholds()
    if example is None:
        if snn.sample_shape is None:
            raise ValueError("give an example input: the network has no calibration shape")
        parameter = next(snn.ann.parameters())
        example = torch.zeros(1, *snn.sample_shape, dtype=parameter.dtype,
                              device=parameter.device)  # fmt: skip
    return _Exporter(snn, example[:1]).graph()


def _require_nir() -> None:
    if nir is None:
        raise ImportError("the NIR export needs the nir package: pip install 'snnlite[nir]'")


def _numpy(t: Tensor, dtype: torch.dtype = torch.float32) -> np.ndarray:
    return t.detach().cpu().to(dtype).numpy()


class _Exporter:
    """Walks the prepared graph once, emitting NIR nodes with the thresholds folded in.

    For every fx node it keeps the NIR nodes whose *sum* is its value (``sources``) and the
    factor that turns the NIR value into snnlite's (``scale``: a scalar, or one per channel
    or feature). A weighted layer picks its output scale (``wanted``): the threshold of the
    site it feeds, or 1 for the network output.
    """

    def __init__(self, snn: SpikingNetwork, example: Tensor) -> None:
        if snn.spikes_per_step != 1:
            raise ExportError(
                f"the network sends bursts (spikes_per_step={snn.spikes_per_step}); NIR's IF "
                "neuron sends at most one spike per step: convert with spikes_per_step=1"
            )
        if snn.signed_spikes:
            raise ExportError(
                "the network sends signed spikes (signed_spikes=True); NIR's IF neuron never "
                "takes a spike back: convert with signed_spikes=False"
            )
        self.snn = snn
        self.gm = snn.ann
        self.values = node_values(self.gm, example)
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.sources: dict[fx.Node, list[str]] = {}
        self.scale: dict[fx.Node, Tensor] = {}
        self.wanted = self._wanted_scales()
        # The arrays keep the network's precision (float64 stays float64), else float32.
        self.dtype = torch.float64 if example.dtype == torch.float64 else torch.float32

    def _array(self, t: Tensor) -> np.ndarray:
        return _numpy(t, self.dtype)

    # --- scales ---------------------------------------------------------------------------

    def _module(self, node: fx.Node) -> nn.Module | None:
        return self.gm.get_submodule(str(node.target)) if node.op == "call_module" else None

    def _passes_scale(self, node: fx.Node) -> bool:
        """Nodes whose output scale is their input's (pass-throughs, adds, average pools)."""
        module = self._module(node)
        if module is not None:
            return isinstance(module, (*_PASS_MODULES, nn.AvgPool2d, nn.AdaptiveAvgPool2d))
        return node.op == "call_function" and (
            node.target in _ADD_FUNCTIONS or node.target in (F.avg_pool2d, F.adaptive_avg_pool2d)
        )

    def _wanted_scales(self) -> dict[fx.Node, Tensor | None]:
        """Backwards: the scale each node's consumers want it in (None: they take any)."""
        wanted: dict[fx.Node, Tensor | None] = {}
        for node in reversed(list(self.gm.graph.nodes)):
            wishes = []
            for user in node.users:
                if is_site(user):
                    wishes.append(self._module(user).threshold.detach().double())
                elif user.op == "output":
                    wishes.append(torch.tensor(1.0, dtype=torch.float64))
                elif self._passes_scale(user):
                    wishes.append(wanted.get(user))
            known = [w for w in wishes if w is not None]
            same = known and all(w.shape == known[0].shape and torch.equal(w, known[0])
                                 for w in known)  # fmt: skip
            wanted[node] = known[0] if same else None
        return wanted

    def _rescale(
        self, node: fx.Node, target: Tensor, shape: tuple[int, ...], tag: str
    ) -> list[str]:
        """``node``'s sources brought to scale ``target`` (a Scale node if they differ)."""
        have = self.scale[node]
        size = shape[0] if shape else 1
        h = have.expand(size) if have.dim() == 0 else have
        t = target.expand(size) if target.dim() == 0 else target
        if h.shape == t.shape and torch.equal(h, t):
            return self.sources[node]
        ratio = torch.where(t > 0, h / torch.where(t > 0, t, torch.ones_like(t)), 0.0)
        factor = ratio.view(-1, *([1] * (len(shape) - 1))).expand(shape) if shape else ratio
        name = self._name(f"{node.name}_to_{tag}")
        self.nodes[name] = nir.Scale(scale=self._array(factor.reshape(shape)))
        self.edges += [(source, name) for source in self.sources[node]]
        return [name]

    # --- emission -------------------------------------------------------------------------

    def _name(self, base: str) -> str:
        name, k = base, 1
        while name in self.nodes:
            name, k = f"{base}_{k}", k + 1
        return name

    def _emit(self, node: fx.Node, nir_node: Any, inputs: list[str], scale: Tensor) -> None:
        name = self._name(node.name)
        self.nodes[name] = nir_node
        self.edges += [(source, name) for source in inputs]
        self.sources[node], self.scale[node] = [name], scale

    def _shape(self, node: fx.Node) -> tuple[int, ...]:
        value = self.values[node]
        if not torch.is_tensor(value):
            raise ExportError(f"{describe(node)} does not produce a tensor: NIR cannot express it")
        return tuple(value.shape[1:])

    def graph(self) -> Any:
        for node in self.gm.graph.nodes:
            self._visit(node)
        metadata = {
            "producer": "snnlite",
            "reset": "subtract",
            "spike_condition": "v >= v_threshold",
            "dt": 1.0,
            "input": "direct coding: the same input at every step",
            "readout": "mean of the output over steps d < t <= T",
            "delay_estimate": float(self.snn.delay_estimate or 0.0),
        }
        for T, d in sorted((self.snn.delay_schedule or {}).items()):
            metadata[f"delay_T{T}"] = float(d)
        return nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=metadata)

    def _visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            shape = self._shape(node)
            self._emit(node, nir.Input(input_type=np.array(shape)), [],
                       torch.tensor(1.0, dtype=torch.float64))  # fmt: skip
            return
        if node.op == "output":
            (result,) = node.args
            if not isinstance(result, fx.Node) or result not in self.sources:
                raise ExportError(f"the network's output ({result}) is not one tensor")
            shape = self._shape(result)
            inputs = self._rescale(result, torch.tensor(1.0, dtype=torch.float64), shape, "out")
            self._emit(node, nir.Output(output_type=np.array(shape)), inputs, self.scale[result])
            return
        if node.meta.get(ANALOG):
            raise ExportError(f"{describe(node)} is kept analog: NIR has no such node")
        if is_site(node):
            self._neuron(node)
            return
        module = self._module(node)
        if isinstance(module, MAX_POOL_TYPES) or node.target in (F.max_pool2d, torch.max_pool2d):
            raise ExportError(
                f"{describe(node)} is a max pool: NIR 1.0 has no max pooling node and snnlite's "
                "gated max pool (or the per-step one) is not expressible; use average pooling"
            )
        if isinstance(module, (nn.Conv2d, nn.Conv1d, nn.Linear)):
            self._weighted(node, module)
        elif isinstance(module, _PASS_MODULES):
            (arg,) = node.all_input_nodes
            self.sources[node], self.scale[node] = self.sources[arg], self.scale[arg]
        elif isinstance(module, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            self._average_pool(node, module)
        elif isinstance(module, nn.Flatten) or node.target is torch.flatten:
            self._flatten(node, module)
        elif node.op == "call_function" and node.target in _ADD_FUNCTIONS:
            self._add(node)
        else:
            raise ExportError(f"{describe(node)} has no NIR 1.0 counterpart")

    def _input(self, node: fx.Node) -> fx.Node:
        tensors = [a for a in node.all_input_nodes if a in self.sources]
        if len(tensors) != 1:
            raise ExportError(f"{describe(node)}: expected one tensor input, got {len(tensors)}")
        return tensors[0]

    def _neuron(self, node: fx.Node) -> None:
        site = self._module(node)
        if site.unit:
            raise ExportError(
                f"site {site_name(node)!r} is folded (unit spikes): export the network "
                "fold_thresholds was given; the export folds thresholds itself"
            )
        theta = site.threshold.detach().double()
        if site.bias is not None:
            raise ExportError(
                f"site {site_name(node)!r} has a low-latency bias current (latency part "
                "'bias'): NIR's IF has no input bias; convert without it to export"
            )
        arg = self._input(node)
        shape = self._shape(node)
        inputs = self._rescale(arg, theta, shape, site_name(node))
        start = torch.full(shape, 0.5, dtype=torch.float64)
        if site.charge is not None:  # the low-latency charge, in units of theta
            charge = site.charge.detach().double()
            theta_b, charge_b = (t.view(-1, *([1] * (len(shape) - 1))) if t.dim() else t
                                 for t in (theta, charge))  # fmt: skip
            start = start + torch.where(theta_b > 0, charge_b / torch.where(
                theta_b > 0, theta_b, torch.ones_like(theta_b)), 0.0)  # fmt: skip
        ones = np.ones(shape, dtype=self._array(theta).dtype)
        neuron = nir.IF(r=ones, v_threshold=ones.copy(), v_reset=np.zeros_like(ones),
                        metadata={"reset": "subtract", "v_init": self._array(start),
                                  "site": site_name(node)})  # fmt: skip
        self._emit(node, neuron, inputs, theta)

    def _weighted(self, node: fx.Node, module: nn.Module) -> None:
        arg = self._input(node)
        have = self.scale[arg]
        out_features = module.weight.shape[0]
        want = self.wanted.get(node)
        if want is None:
            want = torch.tensor(1.0, dtype=torch.float64)
        weight = module.weight.detach().double()
        groups = getattr(module, "groups", 1)
        if have.dim() and groups != 1:
            raise ExportError(f"{describe(node)}: grouped convolution after per-channel thresholds")
        into = have.view(1, -1, *([1] * (weight.dim() - 2))) if have.dim() else have
        out_scale = want.expand(out_features) if want.dim() == 0 else want
        safe = torch.where(out_scale > 0, out_scale, torch.ones_like(out_scale))
        outward = torch.where(out_scale > 0, 1 / safe, 0.0)
        folded = weight * into * outward.view(-1, *([1] * (weight.dim() - 1)))
        bias = module.bias.detach().double() if module.bias is not None else torch.zeros(
            out_features, dtype=torch.float64)  # fmt: skip
        bias = bias * outward
        inputs = self.sources[arg]
        if isinstance(module, nn.Linear):
            layer = nir.Affine(weight=self._array(folded), bias=self._array(bias))
        else:
            if module.padding_mode != "zeros" or isinstance(module.padding, str):
                raise ExportError(f"{describe(node)}: only explicit zero padding maps to NIR")
            conv = nir.Conv2d if isinstance(module, nn.Conv2d) else nir.Conv1d
            spatial = self._shape(arg)[1:]
            layer = conv(
                input_shape=spatial if len(spatial) > 1 else spatial[0],
                weight=self._array(folded),
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                groups=groups,
                bias=self._array(bias),
            )
        self._emit(node, layer, inputs, want)

    def _average_pool(self, node: fx.Node, module: nn.Module) -> None:
        arg = self._input(node)
        shape_in, shape_out = self._shape(arg), self._shape(node)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            if any(i % o for i, o in zip(shape_in[1:], shape_out[1:])):
                raise ExportError(
                    f"{describe(node)}: adaptive pooling from {shape_in[1:]} to {shape_out[1:]} "
                    "does not tile the input, so no AvgPool2d equals it"
                )
            kernel = tuple(i // o for i, o in zip(shape_in[1:], shape_out[1:]))
            stride, padding = kernel, (0, 0)
        else:
            if module.ceil_mode or module.divisor_override is not None:
                raise ExportError(
                    f"{describe(node)}: ceil_mode / divisor_override have no NIR form"
                )
            kernel, stride, padding = (tuple(v) if isinstance(v, (tuple, list)) else (v, v)
                                       for v in (module.kernel_size, module.stride or
                                                 module.kernel_size, module.padding))  # fmt: skip
            if any(padding) and not module.count_include_pad:
                raise ExportError(f"{describe(node)}: count_include_pad=False has no NIR form")
        pool = nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride),
                             padding=np.array(padding))  # fmt: skip
        self._emit(node, pool, self.sources[arg], self.scale[arg])

    def _flatten(self, node: fx.Node, module: nn.Module | None) -> None:
        arg = self._input(node)
        start = module.start_dim if module is not None else _argument(node, 1, "start_dim", 0)
        end = module.end_dim if module is not None else _argument(node, 2, "end_dim", -1)
        if start != 1 or end != -1:
            raise ExportError(f"{describe(node)}: only flattening everything but the batch maps")
        shape = self._shape(arg)
        have = self.scale[arg]
        scale = have.repeat_interleave(int(np.prod(shape[1:]))) if have.dim() else have
        flatten = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1)
        self._emit(node, flatten, self.sources[arg], scale)

    def _add(self, node: fx.Node) -> None:
        operands = [a for a in node.args if isinstance(a, fx.Node)]
        if len(operands) != 2 or node.kwargs or len(node.args) != 2:
            raise ExportError(f"{describe(node)}: only the sum of two tensors maps to NIR edges")
        target = self.wanted.get(node)
        if target is None:
            target = self.scale[operands[0]]
        shape = self._shape(node)
        inputs = [s for a in operands for s in self._rescale(a, target, shape, node.name)]
        self.sources[node], self.scale[node] = inputs, target


def _argument(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def initial_potentials(graph: Any) -> Mapping[str, Any]:
    """{IF node name: its initial membrane ``v_init``}: what a reader sets before step 1."""
    return {name: node.metadata["v_init"] for name, node in graph.nodes.items()
            if type(node).__name__ == "IF" and "v_init" in node.metadata}  # fmt: skip
