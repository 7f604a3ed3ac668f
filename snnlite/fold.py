"""Threshold folding: unit spikes, so that a synaptic operation is one addition (paper §4.3).

A converted network's neurons emit theta-valued spikes: a spike of channel c carries
``theta_c`` and the next layer multiplies it by its weights. :func:`fold_thresholds` moves
every threshold into the weights instead, so that every neuron emits spikes of value 1 and a
spike meeting a synapse adds one stored weight, ``w' = w * theta_c``.

How it stays the same network. Every time-varying value gets a *scale* ``sigma`` (per
channel): the folded network computes ``value / sigma`` where the original computes
``value``. A neuron's spikes have scale ``theta`` (its silent channels, which never fire,
scale 1). The scale passes unchanged through what is positively homogeneous and acts within
a channel (max pools, gated or per step; average pools; upsampling; padding; reshapes,
flattening, concatenation; scaling by a number) and ends at the next weighted layer
(conv, transposed conv, linear), whose weights absorb it per input channel: its output has
scale 1 again, bit for bit the same current (``(w * theta) * 1`` is ``w * theta``).
A residual add must add operands of one scale: a shortcut that carries spikes of scale
``theta_A`` gets its partner, a weighted layer that feeds only the add, divided by
``theta_A`` per output channel, and the neuron after the add sees its input in units of
``theta_A``: its threshold (with the initial potential, the reset and the low-latency
corrections) becomes ``theta / theta_A``.

Exact in real arithmetic; in floating point the folded currents round differently (a
convolution kernel's fused multiply-add rounds ``w * theta`` once, ``(w * theta) * 1``
twice), about 1e-7 relative in float32, and a neuron whose membrane sits that close to its
threshold can fire one step earlier or later, as under any reordering of the sums. In
float64 (``snn.double()``) the readouts agree to 1e-9 relative at every T and delay (bit for
bit on the zoo's VGG and on a ResNet with identity shortcuts: ``tests/test_fold.py``).

What cannot be folded is refused with :class:`FoldError`, naming the node: spikes entering a
nonlinear or analog node, an add of two spike paths of different scales with no weighted
layer to absorb the difference, a weighted module called twice, a network already folded.
"""

from __future__ import annotations

import copy
import math
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from snnlite.graph import (
    ADAPTIVE_AVERAGE_POOLS,
    ANALOG,
    AVERAGE_POOLS,
    UPSAMPLING_MODULES,
    activation_sites,
    describe,
    is_site,
    node_values,
)
from snnlite.network import SpikingNetwork
from snnlite.pooling import MAX_POOL_TYPES

__all__ = ["FoldError", "fold_thresholds", "is_folded"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_PADS = (
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
)  # fmt: skip
# Within a channel and positively homogeneous: the output has its input's per-channel scale.
_PER_CHANNEL_MODULES = (
    MAX_POOL_TYPES + AVERAGE_POOLS + ADAPTIVE_AVERAGE_POOLS + UPSAMPLING_MODULES + _PADS
    + (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
)  # fmt: skip
_PER_CHANNEL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.interpolate, F.dropout, torch.mean,
}  # fmt: skip
_PER_CHANNEL_METHODS = {"mean", "contiguous", "clone", "float", "to"}
# Moves elements without mixing them: the scales move the same way (the op runs on them).
_REARRANGING_MODULES = (nn.Flatten, nn.Unflatten, nn.PixelShuffle, nn.PixelUnshuffle)
_REARRANGING_FUNCTIONS = {
    torch.flatten, torch.reshape, torch.cat, torch.concat, torch.stack, torch.permute,
    torch.transpose, torch.squeeze, torch.unsqueeze, torch.chunk, torch.split,
    operator.getitem, F.pixel_shuffle, F.pixel_unshuffle,
}  # fmt: skip
_REARRANGING_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "chunk",
    "split", "unflatten", "view_as", "reshape_as",
}  # fmt: skip
_ADDS = {operator.add, operator.sub, torch.add, torch.sub}
_BY_NUMBER = {operator.mul, operator.truediv, torch.mul, torch.div}


class FoldError(ValueError):
    """The network cannot be folded (or already is): the message names the node and why."""


def is_folded(snn: SpikingNetwork) -> bool:
    """Whether ``snn``'s neurons emit unit spikes (it came out of :func:`fold_thresholds`)."""
    return any(site.unit for site in activation_sites(snn.ann).values())


@torch.no_grad()
def fold_thresholds(snn: SpikingNetwork, example: Tensor | None = None) -> SpikingNetwork:
    """A copy of ``snn`` whose neurons emit spikes of value 1, thresholds folded into weights.

    The copy simulates the same network: at every T and delay its readouts equal the
    original's up to float rounding (to 1e-9 relative in float64; in float32 rounding can
    move a spike that sits on its threshold, see the module doc), it fires the same events
    and costs the same synaptic operations (the fan-outs count nonzero weights, and folding
    rescales weights by positive factors). Its ``thresholds`` are then in units of each
    neuron's input: 1-valued spikes reset the membrane by that threshold, and each weight a
    spike reaches is ``w * theta``. ``snn`` itself is not modified.

    Args:
        snn: a converted network (:func:`snnlite.convert`), not folded yet.
        example: one input batch, for the shapes of the graph; by default zeros of the
            calibration sample's shape recorded at conversion.

    Raises:
        FoldError: the network is already folded, a threshold is not finite, or spikes meet
            a node the threshold cannot pass (the message names it).
    """
    if not isinstance(snn, SpikingNetwork):
        raise TypeError(f"fold_thresholds takes a SpikingNetwork, got {type(snn).__name__}")
    if is_folded(snn):
        raise FoldError("this network is already folded: its spikes are 1 already")
    if snn.spikes_per_step != 1:
        raise FoldError(
            f"this network sends bursts (spikes_per_step={snn.spikes_per_step}): folding makes "
            "binary unit spikes; convert with spikes_per_step=1"
        )
    if snn.signed_spikes:
        raise FoldError(
            "this network sends signed spikes (signed_spikes=True): folding makes binary unit "
            "spikes; convert with signed_spikes=False"
        )
    for name, site in activation_sites(snn.ann).items():
        if not torch.isfinite(site.threshold).all():
            raise FoldError(f"threshold of site {name!r} is not finite: calibrate first")
    folded = copy.deepcopy(snn)
    _Folder(folded.ann, _sample(folded, example)).run()
    return folded


def _sample(snn: SpikingNetwork, example: Tensor | None) -> Tensor:
    reference = next(iter(snn.ann.parameters()), None)
    if reference is None:
        reference = next(iter(snn.ann.buffers()))
    if example is not None:
        return example[:1].to(device=reference.device, dtype=reference.dtype)
    if snn.sample_shape is None:
        raise FoldError("pass an example input: this network does not record its input shape")
    return torch.zeros(1, *snn.sample_shape, dtype=reference.dtype, device=reference.device)


class _Folder:
    """One walk over the graph in execution order: each node's scale, weights rescaled."""

    def __init__(self, gm: fx.GraphModule, sample: Tensor) -> None:
        self.gm = gm
        self.values = node_values(gm, sample)  # batch of 1: shapes and constants
        self.scale: dict[fx.Node, Any] = {}  # None: scale 1 (unchanged); else like the value
        self.calls: dict[str, int] = {}
        for node in gm.graph.nodes:
            if node.op == "call_module":
                self.calls[str(node.target)] = self.calls.get(str(node.target), 0) + 1

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self.scale[node] = self._visit(node)

    # --- the rules -------------------------------------------------------------------------

    def _visit(self, node: fx.Node) -> Any:
        if is_site(node):
            return self._site(node)
        scaled = [a for a in node.all_input_nodes if self.scale.get(a) is not None]
        if not scaled:
            return None
        if node.op == "output":
            raise self._error(node, "the network's output is spikes, not a readout layer")
        if node.meta.get(ANALOG):
            raise self._error(node, "it is kept analog (a nonlinear function of the spikes)")
        module = self.gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, (*_CONVS, *_TRANSPOSED, nn.Linear)):
            self._absorb(node, module)
            return None
        if isinstance(module, _PER_CHANNEL_MODULES) or (
            isinstance(module, nn.ConstantPad1d | nn.ConstantPad2d | nn.ConstantPad3d)
            and module.value == 0
        ):
            return self._per_channel(node)
        if isinstance(module, _REARRANGING_MODULES):
            return self._rearranged(node)
        if node.op == "call_function":
            if node.target in _ADDS:
                return self._add(node)
            if node.target in _BY_NUMBER and self._by_number(node):
                return self.scale[node.args[0]]
            if node.target in _PER_CHANNEL_FUNCTIONS:
                return self._per_channel(node)
            if node.target in _REARRANGING_FUNCTIONS:
                return self._rearranged(node)
        if node.op == "call_method":
            if node.target in ("add", "sub"):
                return self._add(node)
            if node.target in ("mul", "div") and self._by_number(node):
                return self.scale[node.args[0]]
            if node.target in _PER_CHANNEL_METHODS:
                return self._per_channel(node)
            if node.target in _REARRANGING_METHODS:
                return self._rearranged(node)
            if not torch.is_tensor(self.values[node]):  # x.size(), x.dim(): no values
                return None
        raise self._error(node, "the threshold cannot pass this operation")

    def _site(self, node: fx.Node) -> Tensor:
        """The neuron sees its input in units of the input's scale; it emits scale theta."""
        site = self.gm.get_submodule(str(node.target))
        value = self.values[node]
        incoming = self.scale.get(node.args[0])
        theta_out = site.threshold  # what a spike carried: the scale of the unit spikes
        if incoming is not None:
            sigma = self._channel_scale(node, incoming)  # (C,) or ()
            site.threshold = _divide(site.threshold, sigma)
            if site.bias is not None:
                site.bias = _divide(site.bias, sigma)
            if site.charge is not None:
                site.charge = _divide(site.charge, sigma)
        site.unit = True
        site.cap = math.inf  # theta never exceeds the cap; the unit reading ignores it
        theta = torch.where(theta_out > 0, theta_out, torch.ones_like(theta_out))
        return _expand(theta.to(value.dtype), value)

    def _absorb(self, node: fx.Node, module: nn.Module) -> None:
        """The weighted layer takes its input's scale into its weights, per input channel."""
        if self.calls[str(node.target)] > 1:
            raise self._error(node, "its module is called more than once")
        incoming = self.scale[node.args[0]]
        weight = module.weight
        if isinstance(module, nn.Linear):
            sigma = self._feature_scale(node, incoming)
            weight.mul_(sigma.to(weight.dtype))
            return
        sigma = self._channel_scale(node, incoming).to(weight.dtype)
        if sigma.dim() == 0:
            weight.mul_(sigma)
            return
        trailing = [1] * (weight.dim() - 2)
        if isinstance(module, _TRANSPOSED):  # weight (C_in, C_out / groups, *kernel)
            weight.mul_(sigma.view(-1, 1, *trailing))
            return
        groups = module.groups  # weight (C_out, C_in / groups, *kernel)
        per_group = sigma.view(groups, -1).repeat_interleave(weight.shape[0] // groups, dim=0)
        weight.mul_(per_group.view(weight.shape[0], weight.shape[1], *trailing))

    def _add(self, node: fx.Node) -> Any:
        """Both operands must carry one scale: a weighted partner is rescaled to match."""
        operands = list(node.args[:2])
        if node.kwargs or len(operands) != 2 or not all(
            isinstance(a, fx.Node) and torch.is_tensor(self.values[a]) for a in operands
        ):  # fmt: skip
            raise self._error(node, "spikes plus a constant is not a scaled copy of spikes")
        a, b = (self.scale.get(x) for x in operands)
        if a is not None and b is not None:
            if torch.equal(a, b):
                return a
            raise self._error(node, "it adds spike paths of different thresholds")
        fixed, free = (a, operands[1]) if a is not None else (b, operands[0])
        self._rescale_output(node, free, fixed)
        return fixed

    def _rescale_output(self, add: fx.Node, free: fx.Node, sigma: Tensor) -> None:
        module = self.gm.get_submodule(str(free.target)) if free.op == "call_module" else None
        if (
            not isinstance(module, (*_CONVS, nn.Linear))
            or len(free.users) != 1
            or self.calls[str(free.target)] > 1
        ):
            raise self._error(
                add,
                f"it adds spikes to '{free.name}', which is not a conv or linear layer "
                "feeding only this add (one that could absorb the spikes' threshold)",
            )
        if isinstance(module, nn.Linear):
            per_out = self._feature_scale(add, sigma)
        else:
            per_out = self._channel_scale(add, sigma)
            if per_out.dim() == 0:
                per_out = per_out.expand(module.weight.shape[0])
        per_out = per_out.to(module.weight.dtype)
        module.weight.div_(per_out.view(-1, *([1] * (module.weight.dim() - 1))))
        if module.bias is not None:
            module.bias.div_(per_out)

    def _per_channel(self, node: fx.Node) -> Any:
        """Max / average pooling, upsampling, padding, a mean over space: per-channel scale."""
        source = next(a for a in node.all_input_nodes if self.scale.get(a) is not None)
        sigma = self._channel_scale(node, self.scale[source])
        value = self.values[node]
        if not torch.is_tensor(value) or (sigma.dim() == 1 and (
            value.dim() < 2 or value.shape[1] != sigma.shape[0]
        )):  # fmt: skip
            raise self._error(node, "it does not keep the channels of its input")
        return _expand(sigma, value)

    def _rearranged(self, node: fx.Node) -> Any:
        """Reshapes, flattening, concatenation, indexing: the op moves the scales along."""

        def scale_of(arg: fx.Node) -> Any:
            value = self.values[arg]
            if self.scale.get(arg) is not None:
                return self.scale[arg]
            return torch.ones_like(value) if torch.is_tensor(value) else value

        args = fx.node.map_arg(node.args, scale_of)
        kwargs = fx.node.map_arg(node.kwargs, scale_of)
        if node.op == "call_module":
            return self.gm.get_submodule(str(node.target))(*args, **kwargs)
        if node.op == "call_method":
            obj, *rest = args
            return getattr(obj, str(node.target))(*rest, **kwargs)
        return node.target(*args, **kwargs)

    def _by_number(self, node: fx.Node) -> bool:
        """``spikes * c`` or ``spikes / c`` with a positive number: the scale passes."""
        first, *rest = node.args
        return (
            isinstance(first, fx.Node)
            and len(rest) == 1
            and isinstance(rest[0], int | float)
            and rest[0] > 0
            and not node.kwargs
        )

    # --- scales as per-channel vectors -----------------------------------------------------

    def _channel_scale(self, node: fx.Node, full: Any) -> Tensor:
        """The per-channel scale (C,) of a (1, C, ...) scale tensor; () when all equal."""
        if not torch.is_tensor(full) or full.dim() < 1:
            raise self._error(node, "its input's scale is not one tensor")
        if full.dim() == 1 or full.numel() == 0:
            flat = full.reshape(1, -1)
        else:
            flat = full[0].reshape(full.shape[1], -1)
        first = flat[:, :1]
        if not torch.equal(flat, first.expand_as(flat)):
            raise self._error(node, "its input mixes thresholds within a channel")
        sigma = first[:, 0]
        return sigma[0] if torch.equal(sigma, sigma[:1].expand_as(sigma)) else sigma

    def _feature_scale(self, node: fx.Node, full: Any) -> Tensor:
        """The per-feature scale of a linear layer's input (its last dim)."""
        if not torch.is_tensor(full) or full.dim() < 1:
            raise self._error(node, "its input's scale is not one tensor")
        flat = full.reshape(-1, full.shape[-1])
        if not torch.equal(flat, flat[:1].expand_as(flat)):
            raise self._error(node, "its input mixes thresholds within a feature")
        return flat[0]

    def _error(self, node: fx.Node, why: str) -> FoldError:
        return FoldError(f"cannot fold thresholds through {describe(node)}: {why}")


def _divide(value: Tensor, sigma: Tensor) -> Tensor:
    """``value / sigma`` for a () or (C,) value and a () or (C,) scale."""
    return value / sigma.to(value.dtype).to(value.device)


def _expand(per_channel: Tensor, value: Tensor) -> Tensor:
    """A () or (C,) scale as a tensor of ``value``'s shape (channel = dim 1)."""
    if per_channel.dim() == 0:
        return per_channel.expand(value.shape).clone()
    view = per_channel.view(1, -1, *([1] * (value.dim() - 2)))
    return view.expand(value.shape).clone()
