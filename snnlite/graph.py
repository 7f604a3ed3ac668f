"""Graph preparation with torch.fx: from a pretrained CNN to a network of activation sites.

What happens to a copy of the model, in order:

1. trace it with torch.fx (``FrozenBatchNorm2d`` kept as one leaf so it can be folded);
2. mark the parts the user keeps analog;
3. rewrite in-place operations out of place (a traced in-place ReLU would mutate its input);
4. refuse what cannot be converted, naming the node and its source line;
5. give every activation *call site* its own :class:`~snnlite.neurons.ActivationSite`
   (``nn.ReLU`` modules called twice, functional ``F.relu``/``torch.relu``/``x.relu()``, and
   ``ReLU6``, whose cap the site remembers);
6. fold batch norms (``BatchNorm*d`` and ``FrozenBatchNorm2d``) into the preceding conv/linear;
7. move a max pool that directly follows an activation before it (Theorem 2: exact in the ANN,
   since clip is monotone).

The result is a ``torch.fx.GraphModule`` that computes the same function as the model (with
infinite thresholds) and in which every neuron is a named submodule ``sites.<name>``.
"""

from __future__ import annotations

import copy
import math
import operator
import os
import re
from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights
from torchvision.ops.misc import FrozenBatchNorm2d

from snnlite.groupnorm import FrozenGroupNorm
from snnlite.neurons import ActivationSite
from snnlite.pooling import MAX_POOL_TYPES

__all__ = [
    "ADAPTIVE_AVERAGE_POOLS",
    "ANALOG",
    "AVERAGE_POOLS",
    "COPY_MODULES",
    "ELEMENTWISE_MODULES",
    "LINEAR_MODULES",
    "REARRANGING_MODULES",
    "UPSAMPLING_MODULES",
    "WEIGHTED_MODULES",
    "UnsupportedLayerError",
    "activation_sites",
    "is_site",
    "node_values",
    "prepare",
    "site_name",
    "site_nodes",
    "trace",
]

_TORCH_DIR = os.path.dirname(torch.__file__)
SITES = "sites"  # the submodule that holds every ActivationSite
NORMS = "norms"  # the submodule that holds every FrozenGroupNorm (one per call)
GROUP_NORM_MODES = ("refuse", "freeze")
ANALOG = "snnlite_analog"  # node.meta flag: the user keeps this node analog

# Activation call sites, with the cap of the original activation.
_ACTIVATION_MODULES: dict[type, float] = {nn.ReLU: math.inf, nn.ReLU6: 6.0}
_ACTIVATION_FUNCTIONS: dict[object, float] = {
    F.relu: math.inf,
    F.relu_: math.inf,
    torch.relu: math.inf,
    torch.relu_: math.inf,
    F.relu6: 6.0,
}
_ACTIVATION_METHODS: dict[str, float] = {"relu": math.inf, "relu_": math.inf}

# --- op tables: one per fact, used by the passes here, by synapses (fan-outs) and theory ---

# Linear per step with weights: an event costs the synapses (nonzero weights) it reaches.
WEIGHTED_MODULES: tuple[type, ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear,
)  # fmt: skip
# A fixed affine map per channel (batch norms left unfolded, frozen GroupNorm): each element
# reaches only its own output.
ELEMENTWISE_MODULES: tuple[type, ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, FrozenBatchNorm2d, FrozenGroupNorm,
)  # fmt: skip
# Copies that move elements without sending one input to two outputs (reshapes, padding with
# a constant, shuffles, dropout in eval): they never increase a norm (1-Lipschitz).
REARRANGING_MODULES: tuple[type, ...] = (
    nn.Flatten, nn.Unflatten, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
)  # fmt: skip
# Copies: each output copies at most one input (a 0/1 Jacobian), so autograd through them
# counts connections exactly; reflection and replication padding copy an input twice.
COPY_MODULES: tuple[type, ...] = REARRANGING_MODULES + (
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
)  # fmt: skip
AVERAGE_POOLS: tuple[type, ...] = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
ADAPTIVE_AVERAGE_POOLS: tuple[type, ...] = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)  # fmt: skip
UPSAMPLING_MODULES: tuple[type, ...] = (nn.Upsample,)  # with UpsamplingNearest2d, ...
# Modules that act linearly (affinely) on each time step, so they run unchanged on spikes.
LINEAR_MODULES: tuple[type, ...] = (
    WEIGHTED_MODULES + ELEMENTWISE_MODULES + COPY_MODULES + AVERAGE_POOLS
    + ADAPTIVE_AVERAGE_POOLS + UPSAMPLING_MODULES
)  # fmt: skip
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, FrozenBatchNorm2d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d)  # fmt: skip

# Known nonlinear functions and methods that have no exact spiking counterpart.
_NONLINEAR_FUNCTIONS = {
    F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.sigmoid, torch.sigmoid, F.tanh, torch.tanh,
    F.layer_norm, F.group_norm, F.instance_norm, F.softmax, torch.softmax, F.log_softmax,
    F.elu, F.selu, F.celu, F.leaky_relu, F.mish, F.softplus, F.hardtanh, F.normalize,
    torch.exp, torch.log, torch.sqrt, torch.rsqrt, torch.abs, torch.pow, torch.matmul,
    torch.bmm, torch.einsum, operator.matmul, torch.erf, torch.sin, torch.cos, torch.max,
    torch.min, torch.maximum, torch.minimum, torch.clamp, torch.clip,
}  # fmt: skip
_NONLINEAR_METHODS = {
    "sigmoid", "tanh", "softmax", "log_softmax", "exp", "log", "sqrt", "rsqrt", "abs", "pow",
    "matmul", "clamp", "clip", "max", "min", "gelu", "norm",
}  # fmt: skip
_INPLACE_FUNCTIONS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}
_INPLACE_METHODS = {"add_": "add", "sub_": "sub", "mul_": "mul", "div_": "div"}


class UnsupportedLayerError(TypeError):
    """A node of the model has no exact spiking counterpart (or cannot be traced)."""


class _Tracer(fx.Tracer):
    """A tracer that records source lines and keeps FrozenBatchNorm2d whole (to fold it)."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, FrozenBatchNorm2d) or super().is_leaf_module(
            module, qualified_name
        )


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` (not copied) into a GraphModule, with a clear failure."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as error:  # fx raises many types; all mean "not traceable"
        raise UnsupportedLayerError(
            f"torch.fx could not trace {type(model).__name__}: {error}. Data-dependent control "
            "flow (for example detection post-processing) cannot be traced: convert the "
            "network part (e.g. model.backbone) and run the rest in the analog domain."
        ) from error
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def describe(node: fx.Node) -> str:
    """``node 'name' (target) at file:line``, for error messages."""
    target = (
        node.target
        if isinstance(node.target, str)
        else getattr(node.target, "__name__", str(node.target))
    )
    where = ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', node.stack_trace or "")
    frames = [f for f in frames if not f[0].startswith(_TORCH_DIR)]  # the user's code
    if frames:
        file, line = frames[-1]
        where = f" at {file}:{line}"
    return f"node '{node.name}' ({node.op} {target}){where}"


def prepare(
    model: nn.Module,
    *,
    keep_analog: Iterable[str] = (),
    fold_batchnorm: bool = True,
    reorder_pools: bool = True,
    group_norm: str = "refuse",
) -> fx.GraphModule:
    """Trace a copy of ``model`` and turn it into a network of activation sites (see module doc).

    Args:
        model: an eval-mode CNN; it is deep-copied and never modified.
        keep_analog: qualified module names (as in ``named_modules()``) or fx node names whose
            nodes stay analog: they are not refused and their activations get no neuron; in
            the SNN they act on the running average of their inputs.
        fold_batchnorm: fold batch norms into the preceding conv/linear layer.
        reorder_pools: move a max pool that follows an activation before it.
        group_norm: ``"refuse"`` (GroupNorm is not linear per step: an error names it) or
            ``"freeze"``: each GroupNorm call becomes a :class:`~snnlite.groupnorm.FrozenGroupNorm`
            whose statistics the caller measures on calibration data, then freezes (``convert``
            does both).
    """
    if group_norm not in GROUP_NORM_MODES:
        raise ValueError(f"group_norm must be one of {GROUP_NORM_MODES}, got {group_norm!r}")
    model = copy.deepcopy(model).eval()
    gm = trace(model)
    _mark_analog(gm, list(keep_analog))
    _rewrite_inplace(gm)
    if group_norm == "freeze":
        _install_frozen_group_norms(gm)
    _mark_output_activations(gm)
    _check_convertible(gm)
    _install_sites(gm)
    _functional_pools_to_modules(gm)
    if fold_batchnorm:
        _fold_batchnorms(gm)
    if reorder_pools:
        _move_pools_before_neurons(gm)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm


def is_site(node: fx.Node) -> bool:
    """Whether a node of a prepared graph calls an activation site (a neuron in the SNN)."""
    return node.op == "call_module" and str(node.target).startswith(SITES + ".")


def site_name(node: fx.Node) -> str:
    """The name of the activation site a node calls (``sites.<name>``: the part after)."""
    if not is_site(node):
        raise ValueError(f"node {node.name!r} does not call an activation site")
    return str(node.target)[len(SITES) + 1 :]


@torch.no_grad()
def node_values(gm: fx.GraphModule, sample: torch.Tensor) -> dict[fx.Node, object]:
    """The value of every node of ``gm`` on ``sample`` (one ANN pass): the shapes and the
    constants that analyses of the graph (fan-outs, Lipschitz bounds) need."""
    values: dict[fx.Node, object] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            values[n] = super().run_node(n)
            return values[n]

    _Recorder(gm).run(sample)
    return values


def site_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The graph nodes that call an activation site, in execution order."""
    return [node for node in gm.graph.nodes if is_site(node)]


def activation_sites(gm: fx.GraphModule) -> dict[str, ActivationSite]:
    """The activation sites of a prepared graph, in execution order."""
    return {site_name(node): gm.get_submodule(str(node.target)) for node in site_nodes(gm)}


# --- the passes, in the order prepare() runs them ---------------------------------------


def _module_path(node: fx.Node) -> list[str]:
    """Qualified names of the modules this node was traced inside (outermost first)."""
    stack = node.meta.get("nn_module_stack", {})
    return [path for path, _ in stack.values()] if stack else []


def _mark_analog(gm: fx.GraphModule, names: list[str]) -> None:
    unmatched = set(names)
    for node in gm.graph.nodes:
        paths = _module_path(node)
        if node.op == "call_module":
            paths.append(str(node.target))
        for name in names:
            inside = any(p == name or p.startswith(name + ".") for p in paths)
            if inside or node.name == name:
                node.meta[ANALOG] = True
                unmatched.discard(name)
    if unmatched:
        raise ValueError(
            f"keep_analog names {sorted(unmatched)} match no module or node of the model"
        )


def _is_inplace(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_function":
        return (
            node.target in _INPLACE_FUNCTIONS
            or node.target in (F.relu_, torch.relu_)
            or (bool(node.kwargs.get("inplace")))
        )
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    return False


def _rewrite_inplace(gm: fx.GraphModule) -> None:
    """Make in-place operations out of place, keeping what the model computed.

    An in-place op overwrites its input, so every later reader of that input saw the result:
    those readers are pointed at the op's output, then the op stops writing in place (a
    simulation reuses cached values, which an in-place op would corrupt).
    """
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for node in list(gm.graph.nodes):
        if not _is_inplace(gm, node):
            continue
        target = node.args[0] if node.args else None
        if isinstance(target, fx.Node):
            for user in list(target.users):
                if user is not node and order[user] > order[node]:
                    user.replace_input_with(target, node)
        if node.op == "call_function" and node.target in _INPLACE_FUNCTIONS:
            node.target = _INPLACE_FUNCTIONS[node.target]
        elif node.op == "call_function" and node.target in (F.relu_, torch.relu_):
            node.target = torch.relu
        elif node.op == "call_method" and node.target in _INPLACE_METHODS:
            node.target = _INPLACE_METHODS[node.target]
        elif node.op == "call_method" and node.target == "relu_":
            node.target = "relu"
        elif node.op == "call_module":
            module = gm.get_submodule(node.target)
            module.inplace = False
        if "inplace" in node.kwargs:
            node.kwargs = {**node.kwargs, "inplace": False}


def _activation_cap(gm: fx.GraphModule, node: fx.Node) -> float | None:
    """The cap of the activation this node calls, or None if it is not an activation."""
    if node.op == "call_module":
        return _ACTIVATION_MODULES.get(type(gm.get_submodule(node.target)))
    if node.op == "call_function":
        return _ACTIVATION_FUNCTIONS.get(node.target)
    if node.op == "call_method":
        return _ACTIVATION_METHODS.get(node.target)
    return None


def _mark_output_activations(gm: fx.GraphModule) -> None:
    """Keep analog every activation whose output reaches no conv or linear layer.

    Such an activation belongs to the analog last layer, not to a neuron: its spikes would
    feed no synapse (FCOS applies ``F.relu`` to its box-distance outputs). Kept analog, it acts
    on the running average of the last layer's output, as the readout does, instead of
    clipping the output at a calibrated threshold and quantising it to multiples of
    ``theta / T``.
    """
    weighted = (*_CONVS, nn.Linear)
    feeds_synapses: set[fx.Node] = set()
    for node in reversed(gm.graph.nodes):
        for user in node.users:
            is_layer = user.op == "call_module" and isinstance(
                gm.get_submodule(user.target), weighted
            )
            if is_layer or user in feeds_synapses:
                feeds_synapses.add(node)
                break
    for node in gm.graph.nodes:
        if node not in feeds_synapses and _activation_cap(gm, node) is not None:
            node.meta[ANALOG] = True


def _install_frozen_group_norms(gm: fx.GraphModule) -> None:
    """Give every GroupNorm call (not kept analog) its own FrozenGroupNorm, still measuring."""
    container = nn.Module()
    gm.add_module(NORMS, container)
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.meta.get(ANALOG):
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, nn.GroupNorm):
            container.add_module(node.name, FrozenGroupNorm(module))
            node.target = f"{NORMS}.{node.name}"


def frozen_group_norms(gm: fx.GraphModule) -> dict[str, FrozenGroupNorm]:
    """The FrozenGroupNorm calls of a prepared graph (empty unless ``group_norm="freeze"``)."""
    if not hasattr(gm, NORMS):
        return {}
    return dict(gm.get_submodule(NORMS).named_children())  # type: ignore[arg-type]


def _check_convertible(gm: fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        if node.meta.get(ANALOG) or _activation_cap(gm, node) is not None:
            continue
        problem = None
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            if isinstance(module, _BATCH_NORMS) and getattr(module, "running_mean", 1) is None:
                problem = "a batch norm without running statistics normalises by batch"
            elif isinstance(module, nn.GroupNorm):
                problem = (
                    "GroupNorm normalises each sample by its own statistics, which is not linear "
                    "per time step; pass group_norm='freeze' to fix its statistics from the "
                    "calibration data"
                )
            elif not isinstance(module, LINEAR_MODULES + MAX_POOL_TYPES):
                problem = f"{type(module).__name__} is not linear per time step nor a ReLU"
        elif node.op == "call_function" and node.target in _NONLINEAR_FUNCTIONS:
            problem = "a nonlinearity that is not ReLU-like"
        elif node.op == "call_method" and node.target in _NONLINEAR_METHODS:
            problem = "a nonlinearity that is not ReLU-like"
        if problem:
            raise UnsupportedLayerError(
                f"cannot convert {describe(node)}: {problem}. Only conv/linear/batch-norm/"
                "ReLU-like/pooling/add/cat/upsample/flatten layers convert exactly; pass "
                f"keep_analog=[{_suggest_name(node)!r}] to keep it analog."
            )


def _suggest_name(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    paths = _module_path(node)
    return paths[-1] if paths else node.name


def _install_sites(gm: fx.GraphModule) -> None:
    """Replace every activation call (not kept analog) by a call of its own ActivationSite."""
    container = nn.Module()
    gm.add_module(SITES, container)
    for node in list(gm.graph.nodes):
        cap = _activation_cap(gm, node)
        if cap is None or node.meta.get(ANALOG):
            continue
        container.add_module(node.name, ActivationSite(cap=cap))
        with gm.graph.inserting_after(node):
            site = gm.graph.call_module(f"{SITES}.{node.name}", (node.args[0],))
        site.meta = {**node.meta}
        node.replace_all_uses_with(site)
        gm.graph.erase_node(node)


def _bind_max_pool_args(input, kernel_size, stride=None, padding=0, dilation=1,  # noqa: A002
                        ceil_mode=False, return_indices=False):  # fmt: skip
    return kernel_size, stride, padding, dilation, ceil_mode, return_indices


def _functional_pools_to_modules(gm: fx.GraphModule) -> None:
    """``F.max_pool2d(...)`` calls become ``nn.MaxPool2d`` modules, so later code sees one form."""
    functional = {F.max_pool1d: nn.MaxPool1d, F.max_pool2d: nn.MaxPool2d,
                  F.max_pool3d: nn.MaxPool3d}  # fmt: skip
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in functional:
            continue
        kernel, stride, padding, dilation, ceil_mode, return_indices = _bind_max_pool_args(
            *node.args, **node.kwargs
        )
        if return_indices:
            raise UnsupportedLayerError(f"cannot convert {describe(node)}: return_indices=True")
        pool = functional[node.target](kernel, stride, padding, dilation, ceil_mode=ceil_mode)
        name = f"snnlite_{node.name}"
        gm.add_module(name, pool)
        with gm.graph.inserting_after(node):
            replacement = gm.graph.call_module(name, (node.args[0],))
        replacement.meta = {**node.meta}
        node.replace_all_uses_with(replacement)
        gm.graph.erase_node(node)


def _calls_of(gm: fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return counts


def _fold_batchnorms(gm: fx.GraphModule) -> None:
    calls = _calls_of(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.meta.get(ANALOG):
            continue
        bn = gm.get_submodule(node.target)
        if not isinstance(bn, _BATCH_NORMS) or bn.running_mean is None:
            continue
        producer = node.args[0]
        if not (isinstance(producer, fx.Node) and producer.op == "call_module"):
            continue
        layer = gm.get_submodule(producer.target)
        if len(producer.users) != 1 or calls[producer.target] != 1 or calls[node.target] != 1:
            continue  # folding would change another use of the same layer
        fused = _fuse(layer, bn)
        if fused is None:
            continue
        _set_submodule(gm, producer.target, fused)
        node.replace_all_uses_with(producer)
        gm.graph.erase_node(node)


def _fuse(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
    """A copy of ``layer`` with the eval-mode ``bn`` that follows it folded in, or None."""

    # Fold in float64, then cast back: small running variances amplify rounding otherwise.
    def double(t):
        return None if t is None else t.detach().double()

    stats = (double(bn.running_mean), double(bn.running_var), bn.eps, double(bn.weight),
             double(bn.bias))  # fmt: skip
    weight, bias = double(layer.weight), double(layer.bias)
    if isinstance(layer, _CONVS) and layer.out_channels == bn.running_mean.numel():
        transpose = isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d,
                                       nn.ConvTranspose3d))  # fmt: skip
        weight, bias = fuse_conv_bn_weights(weight, bias, *stats, transpose=transpose)
    elif isinstance(layer, nn.Linear) and layer.out_features == bn.running_mean.numel():
        if bn.weight is None:
            return None
        weight, bias = fuse_linear_bn_weights(weight, bias, *stats)
    else:
        return None
    fused = copy.deepcopy(layer)
    dtype = layer.weight.dtype
    fused.weight = nn.Parameter(weight.to(dtype), requires_grad=layer.weight.requires_grad)
    fused.bias = nn.Parameter(bias.to(dtype), requires_grad=layer.weight.requires_grad)
    return fused


def _set_submodule(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent_name, _, name = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, name, module)


def _move_pools_before_neurons(gm: fx.GraphModule) -> None:
    """``site -> maxpool`` becomes ``maxpool -> site`` when the pool is the site's only user."""
    for pool in list(gm.graph.nodes):
        if pool.op != "call_module" or pool.meta.get(ANALOG):
            continue
        if not isinstance(gm.get_submodule(pool.target), MAX_POOL_TYPES):
            continue
        site = pool.args[0]
        if not (isinstance(site, fx.Node) and is_site(site)):
            continue
        if len(site.users) != 1:
            continue
        current = site.args[0]
        pool_users = list(pool.users)
        pool.replace_input_with(site, current)
        site.replace_input_with(current, pool)
        for user in pool_users:
            user.replace_input_with(pool, site)
        pool.append(site)  # the site now runs right after the pool
