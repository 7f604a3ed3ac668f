"""Synapses: where each spike goes, and what a simulation recorded of the spikes it sent.

* :func:`fanout_maps`: for every spike source (an IF neuron, or a max pool that pools spike
  trains) the number of synapses an event at each position reaches, computed exactly by
  autograd on the downstream sub-graph with every weight replaced by its nonzero indicator
  (the counting rules are in :mod:`snnlite.energy`, which turns them into energy).
* :class:`Activity`: the events and synaptic operations per source and step that
  ``SpikingNetwork.simulate(..., record_spikes=True)`` leaves in ``snn.last_activity``.

The simulator needs both and nothing else of the energy accounting, so they live here, below
the network, and :mod:`snnlite.energy` (constants, MACs, tables) sits above it.
"""

from __future__ import annotations

import copy
import inspect
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

from snnlite.graph import (
    ADAPTIVE_AVERAGE_POOLS,
    ANALOG,
    AVERAGE_POOLS,
    COPY_MODULES,
    ELEMENTWISE_MODULES,
    UPSAMPLING_MODULES,
    WEIGHTED_MODULES,
    is_site,
    node_values,
    site_name,
)
from snnlite.pooling import MAX_POOL_TYPES

__all__ = ["Activity", "fanout_maps", "source_name"]


# --- SNN cost: fan-out maps ----------------------------------------------------------------

_WEIGHTED_FUNCTIONS = {
    F.linear, F.conv1d, F.conv2d, F.conv3d,
    F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
}  # fmt: skip
_COPY_FUNCTIONS = {
    torch.cat, torch.concat, torch.stack, torch.flatten, torch.reshape, torch.permute,
    torch.transpose, torch.squeeze, torch.unsqueeze, torch.chunk, torch.split, torch.narrow,
    operator.getitem, F.pad, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.pixel_shuffle, F.pixel_unshuffle, torch.sum,
}  # fmt: skip
_COPY_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "contiguous", "squeeze",
    "unsqueeze", "chunk", "split", "narrow", "clone", "expand", "repeat", "to", "float",
    "sum", "view_as", "reshape_as", "unflatten",
}  # fmt: skip
_ADD_FUNCTIONS = {operator.add, operator.sub, torch.add, torch.sub}
_SCALE_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div, operator.neg}
_NON_TENSOR_METHODS = {"size", "dim", "numel"}


def source_name(node: fx.Node) -> str:
    """Display name of a spike source: the site name for neurons, the node name for pools
    (unique even when one pool module is called twice)."""
    return site_name(node) if is_site(node) else node.name


def fanout_maps(gm: fx.GraphModule, example: Tensor) -> dict[str, Tensor]:
    """Fan-out of every spike source for inputs shaped like ``example``: {node name: map}.

    A map has the shape of one sample of the source's output (no batch dim), float64, and
    holds at each position the number of synapses an event there reaches (module doc).
    Sources reaching nothing (for example a neuron feeding only a max pool) get a map of 0.
    """
    values = node_values(gm, example[:1])
    region: dict[fx.Node, Any] = {}  # node -> value linear in the sources (the sub-graphs)
    sources: dict[fx.Node, Tensor] = {}
    reached: list[Tensor] = []  # per terminal: synapses reached, summed (linear in sources)

    def new_source(node: fx.Node) -> None:
        leaf = torch.zeros_like(values[node], dtype=torch.float64).requires_grad_()
        sources[node] = leaf
        region[node] = leaf

    with torch.enable_grad():
        for node in gm.graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                continue
            linked = [arg for arg in node.all_input_nodes if arg in region]
            if is_site(node):
                if linked:  # arrival into a membrane without weights: one op per element
                    reached.append(_total(region[node.args[0]]))
                new_source(node)
                continue
            if not linked:
                continue
            if node.op == "output" or node.meta.get(ANALOG):
                reached.extend(_total(region[arg]) for arg in linked)
                continue
            if node.op == "call_module":
                module = gm.get_submodule(str(node.target))
                if isinstance(module, MAX_POOL_TYPES):
                    new_source(node)  # its passed outputs are the events
                    continue
                if isinstance(module, WEIGHTED_MODULES):
                    args, kwargs = _region_args(node, region, values)
                    reached.append(_total(_indicator_module(module)(*args, **kwargs)))
                    continue
            if node.op == "call_function" and node.target in _WEIGHTED_FUNCTIONS:
                reached.append(_total(_weighted_function(node, region, values)))
                continue
            if _non_tensor(node):
                continue
            region[node] = _connect(gm, node, region, values)
        if not sources:
            return {}
        leaves = list(sources.values())
        if reached:
            grads = torch.autograd.grad(torch.stack(reached).sum(), leaves, allow_unused=True)
        else:
            grads = [None] * len(leaves)
    return {
        node.name: (torch.zeros_like(leaf) if g is None else g.detach())[0]
        for (node, leaf), g in zip(sources.items(), grads)
    }


def _total(value: Any) -> Tensor:
    """Sum of all tensor leaves of ``value`` (a tensor or a structure of them), float64."""
    leaves = [v for v in tree_flatten(value)[0] if torch.is_tensor(v)]
    return torch.stack([v.double().sum() for v in leaves]).sum()


def _non_tensor(node: fx.Node) -> bool:
    """Nodes that read a property of a tensor (shape, size): not part of the signal path."""
    if node.op == "call_function" and node.target is getattr:
        return True
    return node.op == "call_method" and node.target in _NON_TENSOR_METHODS


def _region_args(
    node: fx.Node, region: dict[fx.Node, Any], values: dict[fx.Node, Any]
) -> tuple[tuple, dict]:
    """The node's arguments, linear in the sources: sub-graph values, and zeros for the other
    tensors (whatever does not come from a spike source adds no synapse), constants as is."""

    def value(arg: fx.Node) -> Any:
        if arg in region:
            return region[arg]
        return tree_map(
            lambda v: torch.zeros_like(v, dtype=torch.float64) if _float_tensor(v) else v,
            values[arg],
        )

    return fx.node.map_arg(node.args, value), fx.node.map_arg(node.kwargs, value)


def _float_tensor(v: Any) -> bool:
    return torch.is_tensor(v) and v.is_floating_point()


def _indicator_module(module: nn.Module) -> nn.Module:
    """A float64 copy of a weighted layer with its weights' nonzero indicator and no bias."""
    indicator = copy.deepcopy(module).double()
    with torch.no_grad():
        indicator.weight.copy_(module.weight != 0)
        if getattr(indicator, "bias", None) is not None:
            indicator.bias.zero_()
    return indicator


def _weighted_function(
    node: fx.Node, region: dict[fx.Node, Any], values: dict[fx.Node, Any]
) -> Tensor:
    """A functional conv / linear with the weight's nonzero indicator and no bias."""
    args, kwargs = _region_args(node, region, values)
    call, call_kwargs = list(args), dict(kwargs)
    weight_arg = node.kwargs["weight"] if "weight" in node.kwargs else node.args[1]
    weight = values[weight_arg] if isinstance(weight_arg, fx.Node) else weight_arg
    indicator = (weight != 0).double()
    if "weight" in call_kwargs:
        call_kwargs["weight"] = indicator
    else:
        call[1] = indicator
    if "bias" in call_kwargs:
        call_kwargs["bias"] = None
    elif len(call) > 2:
        call[2] = None
    return node.target(*call, **call_kwargs)


def _connect(
    gm: fx.GraphModule, node: fx.Node, region: dict[fx.Node, Any], values: dict[fx.Node, Any]
) -> Any:
    """A weight-free node of the sub-graph as its connection indicator (a linear map whose
    entries are 1 where an input element reaches an output element, else 0)."""
    args, kwargs = _region_args(node, region, values)
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        if isinstance(module, COPY_MODULES):
            return module(*args, **kwargs)
        if isinstance(module, ELEMENTWISE_MODULES):
            return args[0]
        if isinstance(module, AVERAGE_POOLS):
            return _sum_pool(args[0], module.kernel_size, module.stride, module.padding,
                             module.ceil_mode)  # fmt: skip
        if isinstance(module, ADAPTIVE_AVERAGE_POOLS):
            return _adaptive_sum_pool(args[0], values[node].shape)
        if isinstance(module, UPSAMPLING_MODULES):
            return _interpolation(args[0], values[node].shape, module.mode, module.align_corners,
                                  scale_factor=module.scale_factor, size=module.size,
                                  recompute_scale_factor=module.recompute_scale_factor)  # fmt: skip
    elif node.op == "call_function":
        target = node.target
        if target in _COPY_FUNCTIONS:
            return target(*args, **kwargs)
        if target in _ADD_FUNCTIONS:  # each operand reaches the sum (sign and alpha aside)
            tensors = [a for a in args[:2] if torch.is_tensor(a)]
            return tensors[0] + tensors[1] if len(tensors) == 2 else tensors[0]
        if target in _SCALE_FUNCTIONS:
            return _scaled(node, args)
        if target in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d):
            b = _bind(("input", "kernel_size", "stride", "padding", "ceil_mode"), args, kwargs)
            return _sum_pool(b["input"], b["kernel_size"], b.get("stride"),
                             b.get("padding", 0), b.get("ceil_mode", False))  # fmt: skip
        if target in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d):
            return _adaptive_sum_pool(args[0], values[node].shape)
        if target in (F.interpolate, F.upsample):
            b = inspect.signature(F.interpolate).bind(*args, **kwargs)
            b.apply_defaults()
            a = b.arguments
            return _interpolation(a["input"], values[node].shape, a["mode"], a["align_corners"],
                                  scale_factor=a["scale_factor"], size=a["size"],
                                  recompute_scale_factor=a["recompute_scale_factor"],
                                  antialias=a["antialias"])  # fmt: skip
        if target is torch.mean:
            return torch.sum(*args, **kwargs)
    elif node.op == "call_method":
        if node.target in _COPY_METHODS:
            obj, *rest = args
            return getattr(obj, str(node.target))(*rest, **kwargs)
        if node.target in ("add", "sub"):
            return args[0] + args[1] if torch.is_tensor(args[1]) else args[0]
        if node.target in ("mul", "div"):
            return _scaled(node, args)
        if node.target == "mean":
            obj, *rest = args
            return obj.sum(*rest, **kwargs)
    raise NotImplementedError(
        f"energy: cannot count synapses through node '{node.name}' ({node.op} "
        f"{getattr(node.target, '__name__', node.target)}) on a spike path; supported between "
        "spikes and weights: add, cat, flatten/reshape, padding, avg/adaptive-avg pooling, "
        "upsampling/interpolation, unfolded batch norm, scaling by a constant"
    )


def _scaled(node: fx.Node, args: tuple) -> Tensor:
    """Scaling a spike path by a constant keeps its connections; by a tensor it does not."""
    tensors = [a for a in args if torch.is_tensor(a) and a.requires_grad]
    others = [a for a in args if torch.is_tensor(a) and not a.requires_grad and a.dim() > 0]
    if len(tensors) != 1 or others:
        raise NotImplementedError(
            f"energy: node '{node.name}' multiplies a spike path by a tensor: the connections "
            "it makes depend on the data and are not counted"
        )
    return tensors[0]


def _bind(names: tuple[str, ...], args: tuple, kwargs: dict) -> dict[str, Any]:
    return dict(zip(names, args)) | dict(kwargs)


def _sum_pool(x: Tensor, kernel: Any, stride: Any, padding: Any, ceil_mode: bool) -> Tensor:
    """Average pooling's connection indicator: the same windows, summed (divisor 1)."""
    spatial = x.dim() - 2
    if spatial == 1:  # no divisor_override in 1-D: a 2-D pool of height 1
        k, s, p = (_as_tuple(v, 1)[0] for v in (kernel, stride or kernel, padding))
        return F.avg_pool2d(x.unsqueeze(2), (1, k), (1, s), (0, p), ceil_mode,
                            divisor_override=1).squeeze(2)  # fmt: skip
    pool = F.avg_pool2d if spatial == 2 else F.avg_pool3d
    return pool(x, kernel, stride or kernel, padding, ceil_mode, divisor_override=1)


def _as_tuple(value: Any, n: int) -> tuple:
    return tuple(value) if isinstance(value, tuple | list) else (value,) * n


def _adaptive_sum_pool(x: Tensor, out_shape: torch.Size) -> Tensor:
    """Adaptive average pooling's connection indicator: the mean times each window's size.

    Window ``i`` of an ``In -> Out`` dim spans ``[floor(i In / Out), ceil((i+1) In / Out))``.
    """
    spatial = x.dim() - 2
    sizes = out_shape[2:]
    pool = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[spatial - 1]
    area = torch.ones((), dtype=x.dtype)
    for d, (n_in, n_out) in enumerate(zip(x.shape[2:], sizes)):
        i = torch.arange(n_out)
        length = (torch.div((i + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
                  - torch.div(i * n_in, n_out, rounding_mode="floor"))  # fmt: skip
        shape = [1] * spatial
        shape[d] = n_out
        area = area * length.to(x.dtype).view(shape)
    return pool(x, tuple(sizes)) * area


def _interpolation(
    x: Tensor, out_shape: torch.Size, mode: str, align_corners: bool | None, **options: Any
) -> Tensor:
    """Interpolation's connection indicator.

    Nearest modes copy (a 0/1 Jacobian: used as is); linear / bilinear / bicubic / trilinear
    are separable, so their pattern is the product of one 1-D pattern per spatial dim, read off
    by interpolating one-hot probes with the very same call.
    """
    if mode in ("nearest", "nearest-exact"):
        return F.interpolate(x, mode=mode, **options)
    if mode == "area":
        return _adaptive_sum_pool(x, out_shape)
    spatial = x.dim() - 2
    letters_in, letters_out = "ijk"[:spatial], "uvw"[:spatial]
    operands, terms = [x], []
    for d in range(spatial):
        n_in = x.shape[2 + d]
        probe_shape = [n_in, 1, *[1] * spatial]
        probe_shape[2 + d] = n_in
        probe = torch.eye(n_in, dtype=torch.float64).view(probe_shape)
        probe = probe.expand(n_in, 1, *x.shape[2:]).contiguous()
        out = F.interpolate(probe, mode=mode, align_corners=align_corners, **options)
        index = [slice(None), 0] + [0] * spatial
        index[2 + d] = slice(None)
        pattern = (out[tuple(index)] != 0).double().T  # (out_d, in_d)
        operands.append(pattern)
        terms.append(letters_out[d] + letters_in[d])
    equation = f"nc{letters_in}," + ",".join(terms) + f"->nc{letters_out}"
    return torch.einsum(equation, *operands)


# --- SNN cost: what a simulation recorded --------------------------------------------------


@dataclass
class Activity:
    """Events and synaptic operations of one or more simulations, per source and step.

    ``events[name]`` and ``sops[name]``: (T,) totals over all ``samples`` at each step;
    ``neurons[name]``: positions per sample; ``fanout[name]``: synapses per sample if every
    position fired once (the fan-out map's sum).
    """

    samples: int
    events: dict[str, Tensor]
    sops: dict[str, Tensor]
    neurons: dict[str, int] = field(default_factory=dict)
    fanout: dict[str, float] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return max((len(v) for v in self.events.values()), default=0)

    def merge(self, other: Activity) -> Activity:
        """The activity of both runs together (same network, same T)."""
        if other.steps != self.steps or set(other.sops) != set(self.sops):
            raise ValueError("activities of different runs (steps or sources differ)")
        return Activity(
            self.samples + other.samples,
            {k: v + other.events[k] for k, v in self.events.items()},
            {k: v + other.sops[k] for k, v in self.sops.items()},
            dict(self.neurons),
            dict(self.fanout),
        )

    def sops_per_image(self) -> Tensor:
        """(T,) float64: SOPs per image over steps 1..T, for every T of the run."""
        total = torch.stack(list(self.sops.values())).sum(0)
        return torch.cumsum(total, 0) / self.samples

    def sops_at(self, timesteps: Iterable[int]) -> dict[int, float]:
        """{T: SOPs per image up to T}."""
        cumulative = self.sops_per_image()
        out = {}
        for T in timesteps:
            if not 1 <= T <= len(cumulative):
                raise ValueError(f"T={T} outside the recorded 1..{len(cumulative)} steps")
            out[T] = float(cumulative[T - 1])
        return out

    def layers(self, T: int) -> list[dict[str, Any]]:
        """Per source over steps 1..T: firing rate (events per position per step) and SOPs."""
        rows = []
        for name, events in self.events.items():
            count = float(events[:T].sum())
            positions = self.neurons.get(name, 0) * self.samples
            rows.append({
                "source": name,
                "neurons": self.neurons.get(name, 0),
                "firing_rate": count / (positions * T) if positions else float("nan"),
                "events_per_image": count / self.samples,
                "sops_per_image": float(self.sops[name][:T].sum()) / self.samples,
            })  # fmt: skip
        return rows
