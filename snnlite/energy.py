"""Energy accounting: ANN multiply-accumulates, SNN synaptic operations, SOP90/95, FPS/W.

What is counted (book chapter 8), per image:

* **ANN cost**: multiply-accumulates (MACs) of every conv / linear layer, measured with
  ``torch.utils.flop_counter`` (FLOPs / 2; the paper calls one MAC a "FLOP").
* **SNN cost**: synaptic operations (SOPs). Every *event* (a nonzero output of a spike source
  at one step) costs the number of synapses it reaches, its **fan-out**. Spike sources are the
  IF neurons and the max pools that pool spike trains (which spikes a max pool passes depends
  on the data, so its *outputs* are the events, and the neuron feeding it reaches no synapse
  directly). From a source, the walk follows the weight-free structure downstream (add, cat,
  flatten / reshape, padding, average and adaptive-average pooling, upsampling and
  interpolation, batch norms left unfolded) up to and including the next:

  - weighted layer (conv, transposed conv, linear): an event costs every *nonzero* weight it
    touches, border, stride, groups, dilation and padding mode exact (a linear layer:
    ``out_features``; a 3x3 stride-1 padded conv away from the border: ``9 * out_channels``);
  - neuron reached without weights (a residual shortcut added into the next neuron's
    membrane), the network output or a node kept analog: one operation per element reached;
  - max pool: nothing (the pool's passed outputs are counted as events of their own).

  Through a weight-free node an event reaches everything it *connects* to: an average pool
  output it lies in (each reaching the weights of the next layer), every copy an upsampling
  makes, both operands' consumers of an add. Counting is per path: an event that reaches one
  weight along two paths (two overlapping pool windows, a skip and a main branch meeting at an
  add) costs two operations, as an event-driven chip sends it down each. The fan-out map of a
  source is computed exactly by autograd on the downstream sub-graph with every weight
  replaced by its nonzero indicator and every pooling / interpolation by its connection
  indicator (:func:`fanout_maps`).
* The first layer(s), before any neuron, receive the analog input: their MACs are reported
  separately (:func:`analog_macs`) and added to the SNN's energy only on request.

``snn.simulate(x, T, record_spikes=True)`` counts events and SOPs per step during the one
simulation and leaves an :class:`Activity` in ``snn.last_activity``; SOPs at T include all T
steps (what the hardware spent), whatever the readout window.

Energy per frame = SOPs x E_SOP (+ analog MACs x E_MAC) for the SNN, MACs x E_MAC for the
ANN; FPS/W = 1 / energy per frame in joules. Any task (here segmentation)::

    def update(outputs, batch):  # {T: readout} of one recorded simulation
        for T, out in outputs.items():
            miou[T].update(out["out"].argmax(1), batch[1])

    activity = energy.recorded_runs(snn, batches, Ts, update)
    curve = {T: float(miou[T].compute()) for T in Ts}
    row = energy.energy_row("scenes_fcn", curve, activity.sops_at(Ts), ann_miou,
                            energy.ann_macs(model, x).total,
                            energy.analog_macs(snn.ann, x).total, metric="mIoU")
    print(energy.energy_table([row]))
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from snnlite.graph import ANALOG, SITES
from snnlite.pooling import MAX_POOL_TYPES

__all__ = [
    "Activity",
    "EnergyConstants",
    "EnergyRow",
    "MacCount",
    "PRESETS",
    "analog_macs",
    "ann_macs",
    "energy_per_frame",
    "energy_row",
    "energy_table",
    "fanout_maps",
    "fps_per_watt",
    "recorded_runs",
    "sop_at_fraction",
]


# --- energy constants and arithmetic -------------------------------------------------------


@dataclass(frozen=True)
class EnergyConstants:
    """Joules per synaptic operation (an accumulate) and per multiply-accumulate."""

    joules_per_sop: float
    joules_per_mac: float
    name: str = "custom"

    def __post_init__(self) -> None:
        if not (self.joules_per_sop > 0 and self.joules_per_mac > 0):
            raise ValueError("energy constants must be positive")


PRESETS: dict[str, EnergyConstants] = {
    # The paper's figures: 77 fJ per SOP (neuromorphic hardware), 12.5 pJ per MAC ("FLOP").
    "paper": EnergyConstants(77e-15, 12.5e-12, "paper"),
    # Horowitz (ISSCC 2014), 45 nm, 32-bit float: 0.9 pJ per add, 4.6 pJ per multiply-add.
    "45nm": EnergyConstants(0.9e-12, 4.6e-12, "45nm"),
}


def constants(preset: str | EnergyConstants = "paper") -> EnergyConstants:
    """A preset by name (``"paper"``, ``"45nm"``) or the constants given."""
    if isinstance(preset, EnergyConstants):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown energy preset {preset!r}; choose from {sorted(PRESETS)}")
    return PRESETS[preset]


def energy_per_frame(
    sops: float = 0.0, macs: float = 0.0, preset: str | EnergyConstants = "paper"
) -> float:
    """Joules per frame for ``sops`` synaptic operations and ``macs`` multiply-accumulates."""
    if sops < 0 or macs < 0:
        raise ValueError("operation counts must be non-negative")
    c = constants(preset)
    return sops * c.joules_per_sop + macs * c.joules_per_mac


def fps_per_watt(
    sops: float = 0.0, macs: float = 0.0, preset: str | EnergyConstants = "paper"
) -> float:
    """Frames per second per watt = 1 / (joules per frame); inf for a frame that costs nothing."""
    joules = energy_per_frame(sops, macs, preset)
    return math.inf if joules == 0 else 1.0 / joules


def sop_at_fraction(
    curve: Mapping[int, float],
    sops: Mapping[int, float],
    ann_metric: float,
    fraction: float = 0.9,
) -> tuple[int, float] | None:
    """``(T, SOPs per image at T)`` for the smallest T whose metric reaches ``fraction`` of the
    ANN's (SOP90 for 0.9, SOP95 for 0.95); None if no T of the curve does.

    ``curve``: {T: task metric, higher is better}; ``sops``: {T: SOPs per image up to T}.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    for T in sorted(curve):
        if curve[T] >= fraction * ann_metric:
            if T not in sops:
                raise KeyError(f"no SOP count at T={T}")
            return T, float(sops[T])
    return None


# --- ANN cost: MACs ------------------------------------------------------------------------


@dataclass
class MacCount:
    """MACs per image: per layer (module name -> MACs) and in total."""

    per_layer: dict[str, int]
    total: int


@torch.no_grad()
def ann_macs(model: nn.Module, example: Tensor) -> MacCount:
    """MACs per image of ``model`` on inputs shaped like ``example`` (N, ...), by flop_counter.

    One MAC is two FLOPs of flop_counter (convolutions, matmuls); per-layer entries are the
    leaf modules that did any (conv / linear), named as in ``model.named_modules()``.
    """
    if example.dim() == 0 or example.shape[0] == 0:
        raise ValueError("example must be a non-empty batch (N, ...)")
    sample = example[:1]
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(sample)
    finally:
        model.train(was_training)
    leaves = {name for name, m in model.named_modules() if not list(m.children()) and name}
    per_layer = {}
    for key, ops in counter.get_flop_counts().items():
        name = key.split(".", 1)[1] if "." in key else ""
        if name in leaves:
            per_layer[name] = sum(ops.values()) // 2
    return MacCount(per_layer, counter.get_total_flops() // 2)


def analog_macs(gm: fx.GraphModule, example: Tensor) -> MacCount:
    """MACs per image of the layers before any neuron (they see the analog input).

    With direct coding these run on the image itself (once per frame, the input being
    constant in time); the paper appears to leave them out of the SNN's cost.
    """
    downstream = _downstream_of_sites(gm)
    static_layers = {
        str(node.target)
        for node in gm.graph.nodes
        if node.op == "call_module" and node not in downstream
    }
    macs = ann_macs(gm, example)
    per_layer = {name: n for name, n in macs.per_layer.items() if name in static_layers}
    return MacCount(per_layer, sum(per_layer.values()))


def _downstream_of_sites(gm: fx.GraphModule) -> set[fx.Node]:
    reached: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if _is_site(node) or any(arg in reached for arg in node.all_input_nodes):
            reached.add(node)
    return reached


# --- SNN cost: fan-out maps ----------------------------------------------------------------

_WEIGHTED_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear,
)  # fmt: skip
_WEIGHTED_FUNCTIONS = {
    F.linear, F.conv1d, F.conv2d, F.conv3d,
    F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d,
}  # fmt: skip
# Weight-free modules whose Jacobian is 0/1 (each output copies at most one input), so
# autograd through them counts connections exactly.
_COPY_MODULES = (
    nn.Flatten, nn.Unflatten, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
    nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
)  # fmt: skip
# Elementwise affine modules (kept unfolded): each element reaches its own output.
_ELEMENTWISE_MODULES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
)
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


def _is_site(node: fx.Node) -> bool:
    return node.op == "call_module" and str(node.target).startswith(SITES + ".")


def source_name(node: fx.Node) -> str:
    """Display name of a spike source: the site name for neurons, the node name for pools
    (unique even when one pool module is called twice)."""
    if _is_site(node):
        return str(node.target).split(".", 1)[1]
    return node.name


@torch.no_grad()
def _node_values(gm: fx.GraphModule, sample: Tensor) -> dict[fx.Node, Any]:
    """The value of every node of ``gm`` on one sample (an ANN pass: shapes and constants)."""
    values: dict[fx.Node, Any] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            values[n] = super().run_node(n)
            return values[n]

    _Recorder(gm).run(sample)
    return values


def fanout_maps(gm: fx.GraphModule, example: Tensor) -> dict[str, Tensor]:
    """Fan-out of every spike source for inputs shaped like ``example``: {node name: map}.

    A map has the shape of one sample of the source's output (no batch dim), float64, and
    holds at each position the number of synapses an event there reaches (module doc).
    Sources reaching nothing (for example a neuron feeding only a max pool) get a map of 0.
    """
    values = _node_values(gm, example[:1])
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
            if _is_site(node):
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
                if isinstance(module, _WEIGHTED_MODULES):
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
        if isinstance(module, _COPY_MODULES):
            return module(*args, **kwargs)
        if isinstance(module, _ELEMENTWISE_MODULES):
            return args[0]
        if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
            return _sum_pool(args[0], module.kernel_size, module.stride, module.padding,
                             module.ceil_mode)  # fmt: skip
        if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
            return _adaptive_sum_pool(args[0], values[node].shape)
        if isinstance(module, nn.Upsample):
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


def _sum_pool(
    x: Tensor, kernel: Any, stride: Any, padding: Any, ceil_mode: bool
) -> Tensor:
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


# --- tables --------------------------------------------------------------------------------


@dataclass
class EnergyRow:
    """One model's energy comparison (per image)."""

    model: str
    metric: str
    ann_metric: float
    macs: float
    analog_macs: float
    sop90: tuple[int, float] | None
    sop95: tuple[int, float] | None
    preset: EnergyConstants
    include_analog: bool = False

    def snn_fps_per_watt(self, sop: tuple[int, float] | None) -> float | None:
        if sop is None:
            return None
        extra = self.analog_macs if self.include_analog else 0.0
        return fps_per_watt(sop[1], extra, self.preset)

    @property
    def ann_fps_per_watt(self) -> float:
        return fps_per_watt(0.0, self.macs, self.preset)


def energy_row(
    model: str,
    curve: Mapping[int, float],
    sops: Mapping[int, float],
    ann_metric: float,
    macs: float,
    analog: float = 0.0,
    *,
    metric: str = "accuracy",
    preset: str | EnergyConstants = "paper",
    include_analog: bool = False,
) -> EnergyRow:
    """Any task: ``curve`` {T: metric of the SNN}, ``sops`` {T: SOPs per image} from the same
    run, ``ann_metric``, ANN ``macs`` and ``analog`` (first-layer) MACs per image."""
    return EnergyRow(
        model, metric, ann_metric, macs, analog,
        sop_at_fraction(curve, sops, ann_metric, 0.9),
        sop_at_fraction(curve, sops, ann_metric, 0.95),
        constants(preset), include_analog,
    )  # fmt: skip


def energy_table(rows: Iterable[EnergyRow], compact: bool = False) -> str:
    """A markdown table: MACs, SOP90 / SOP95 (with T), FPS/W of ANN and SNN, SNN/ANN ratio;
    the last column adds the analog first layer's MACs to the SNN at SOP90.

    ``compact``: only the model, its metric, MACs, SOP90 and the three ratios (a width that
    fits a book page; the FPS/W themselves follow from MACs and SOPs).
    """
    header = ["model", "metric (ANN)", "MACs", "first-layer MACs", "SOP90 (T)", "SOP95 (T)",
              "ANN FPS/W", "SNN FPS/W @90", "ratio @90", "SNN FPS/W @95", "ratio @95",
              "ratio @90 + first layer"]  # fmt: skip
    shown = ["model", "metric (ANN)", "MACs", "SOP90 (T)", "ratio @90", "ratio @95",
             "ratio @90 + first layer"] if compact else header  # fmt: skip
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for r in rows:
        ann = r.ann_fps_per_watt
        fps = [r.snn_fps_per_watt(sop) for sop in (r.sop90, r.sop95)]
        with_first = dataclasses.replace(r, include_analog=True).snn_fps_per_watt(r.sop90)
        sops = ["not reached" if s is None else f"{s[1]:.4g} ({s[0]})" for s in (r.sop90, r.sop95)]
        values = [r.model, f"{r.metric} {r.ann_metric:.4g}", f"{r.macs:.4g}",
                  f"{r.analog_macs:.4g}", sops[0], sops[1], f"{ann:.4g}",
                  _or_na(fps[0], "{:.4g}"), _or_na(fps[0], "{:.3g}x", ann),
                  _or_na(fps[1], "{:.4g}"), _or_na(fps[1], "{:.3g}x", ann),
                  _or_na(with_first, "{:.3g}x", ann)]  # fmt: skip
        cells = dict(zip(header, values))
        lines.append("| " + " | ".join(cells[name] for name in shown) + " |")
    return "\n".join(lines)


def _or_na(value: float | None, form: str, per: float = 1.0) -> str:
    return "n/a" if value is None else form.format(value / per)


def layer_table(activity: Activity, T: int) -> str:
    """A markdown table of per-source firing rates and SOPs at T."""
    lines = ["| source | neurons | firing rate | events / image | SOPs / image |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row in activity.layers(T):
        lines.append(
            f"| {row['source']} | {row['neurons']} | {row['firing_rate']:.4f} "
            f"| {row['events_per_image']:.4g} | {row['sops_per_image']:.4g} |"
        )
    return "\n".join(lines)


# --- measuring a task ---------------------------------------------------------------------


def recorded_runs(
    snn: Any,
    batches: Iterable[Any],
    timesteps: Iterable[int],
    update: Callable[[dict[int, Any], Any], None],
    *,
    simulate: Callable[..., dict[int, Any]] | None = None,
    **options: Any,
) -> Activity:
    """Simulate every batch once, recording; the task metric is fed from the same runs.

    ``batches`` yields inputs or ``(inputs, targets)``; ``update({T: output}, batch)`` updates
    the caller's metric (top-1, mIoU, mAP: any task). ``simulate`` defaults to
    ``snn.simulate``; pass e.g. a :class:`~snnlite.detection.SpikingDetector`'s ``simulate``
    (its ``.snn`` as ``snn``) so that the outputs are detections. Returns the merged activity.
    """
    run = simulate or snn.simulate
    timesteps = sorted(set(timesteps))
    activity: Activity | None = None
    for batch in batches:
        inputs = batch[0] if isinstance(batch, tuple | list) else batch
        outputs = run(inputs, timesteps, record_spikes=True, progress=False, **options)
        update(outputs, batch)
        current = snn.last_activity
        activity = current if activity is None else activity.merge(current)
    if activity is None:
        raise ValueError("no batches to simulate")
    return activity


# --- measuring a classifier ----------------------------------------------------------------


def classification_energy(
    name: str,
    model: nn.Module,
    snn: Any,
    images: Tensor,
    labels: Tensor,
    timesteps: Iterable[int],
    *,
    delay: Any = "auto",
    batch_size: int = 250,
    preset: str | EnergyConstants = "paper",
    progress: bool = True,
    metric: str = "accuracy",
) -> tuple[EnergyRow, Activity, dict[int, float]]:
    """Top-1 accuracy over T and the SOPs of the same simulations, then the energy row.

    With the ANN's own top-1 as ``labels`` the metric is the SNN's agreement with the ANN
    (the ANN's is 1 by construction): name it with ``metric``.
    """
    from snnlite.metrics import ann_accuracy  # here: metrics imports network imports energy

    timesteps = sorted(set(timesteps))
    correct = dict.fromkeys(timesteps, 0)

    def update(outputs: dict[int, Tensor], batch: tuple[Tensor, Tensor]) -> None:
        for T, logits in outputs.items():
            correct[T] += int((logits.argmax(1) == batch[1]).sum())

    batches = [(images[i : i + batch_size], labels[i : i + batch_size])
               for i in range(0, len(images), batch_size)]  # fmt: skip
    bar = tqdm(batches, desc=name, disable=not progress)
    activity = recorded_runs(snn, bar, timesteps, update, delay=delay)
    curve = {T: correct[T] / len(images) for T in timesteps}
    row = energy_row(
        name, curve, activity.sops_at(timesteps), ann_accuracy(model, images, labels),
        ann_macs(model, images[:1]).total, analog_macs(snn.ann, images[:1]).total,
        metric=metric, preset=preset,
    )  # fmt: skip
    return row, activity, curve


def _main(argv: list[str] | None = None) -> None:
    """Energy tables of zoo classifiers (LTB channel-wise, delay auto)::

        python -m snnlite.energy --models fmnist_vgg fmnist_resnet --images 500
        python -m snnlite.energy --models mobilenet_v2_imagenet --images 64 --photo-size 96

    Fashion-MNIST models: top-1 accuracy on the first test images, calibrated on 3000
    training images. MobileNetV2 (ImageNet): no labelled ImageNet is at hand offline, so the
    metric is the SNN's top-1 agreement with the ANN on augmented crops of the scikit-image
    photos (calibration: other crops of them, batches of 16).
    """
    import snnlite
    from snnlite import zoo
    from snnlite.data import augmented_crops, fashion_mnist_tensors

    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("--models", nargs="+", default=["fmnist_vgg", "fmnist_resnet"])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[4, 8, 12, 16, 24, 32, 48,
                                                                     64, 96, 128, 256])
    parser.add_argument("--photo-size", type=int, default=96, help="ImageNet models' crops")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if any(name.startswith("fmnist") for name in args.models):  # loaded once for all of them
        test, test_labels = fashion_mnist_tensors("test")
        fashion_calibration = list(fashion_mnist_tensors("train")[0][:3000].split(50))
    rows = []
    for name in args.models:
        model = zoo.load(name)
        if name.startswith("fmnist"):
            calibration, metric, batch = fashion_calibration, "accuracy", 250
            images, labels = test[: args.images], test_labels[: args.images]
        else:  # an ImageNet model: agreement with the ANN on photo crops
            calibration = list(augmented_crops(320, seed=1, size=args.photo_size).split(16))
            images = augmented_crops(args.images, seed=2, size=args.photo_size)
            with torch.no_grad():
                labels = model(images).argmax(dim=1)
            metric, batch = "agreement", 32  # larger images than Fashion-MNIST: smaller batches
        snn = snnlite.convert(model, calibration, progress=False)
        row, activity, curve = classification_energy(
            name, model, snn, images, labels, args.timesteps, batch_size=batch, metric=metric
        )
        rows.append(row)
        print(f"\n## {name}\n{metric} over T: "
              + ", ".join(f"T={T}: {100 * a:.1f}%" for T, a in curve.items()))  # fmt: skip
        sops = activity.sops_at(args.timesteps)
        print("SOPs per image over T: " + ", ".join(f"T={T}: {s:.4g}" for T, s in sops.items()))
        T = row.sop90[0] if row.sop90 else max(args.timesteps)
        print(f"\nper source at T={T}:\n" + layer_table(activity, T), flush=True)
    for preset in PRESETS.values():
        print(f"\n### constants '{preset.name}': {preset.joules_per_sop * 1e15:g} fJ per SOP, "
              f"{preset.joules_per_mac * 1e12:g} pJ per MAC\n")  # fmt: skip
        print(energy_table(dataclasses.replace(row, preset=preset) for row in rows))


if __name__ == "__main__":
    _main()

