"""Theorem 1 made measurable: every term of the conversion error bound on a real network.

The bound (book chapter 2) relates the SNN's average output ``phi_l`` of layer l to the ANN's
activation ``a_l = ReLU(z_l)``:

    e_l = ||phi_l - a_l|| <= eps_l + Lip(f_l) * e_{l-1},    eps_l = ||phi_l - ReLU(f_l(phi_{l-1}))||

where ``f_l`` is the ANN's map from layer l-1's output to layer l's input current (a conv or
linear layer, possibly with a max pool and a flatten; its Lipschitz constant is at most the
product of the spectral norms of its linear layers, since max pools with disjoint windows,
flatten and eval-mode dropout are 1-Lipschitz). Unrolled from ``e_0 = 0`` (direct coding),
``e_L <= sum_l (prod_{k>l} Lip(f_k)) eps_l``.

Everything here only *reads* a converted network: the SNN averages come from one ordinary
:meth:`SpikingNetwork.simulate` run of a copy whose output also returns every site's spikes, and
the ANN terms from an :class:`torch.fx.Interpreter` pass over the same prepared graph. The
helpers support chain networks (VGG-like); branches (ResNets) raise a clear error, because
the one-predecessor recursion above does not apply to them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from snnlite.graph import (
    REARRANGING_MODULES,
    SITES,
    WEIGHTED_MODULES,
    is_site,
    node_values,
    site_name,
    site_nodes,
)
from snnlite.network import SpikingNetwork

__all__ = ["bound_terms", "operator_norm", "site_values", "spiking_site_averages"]

# Modules that are 1-Lipschitz in the Euclidean norm (in eval mode), or are checked below;
# the layers whose operator norm is computed. Both come from graph's op tables.
_ONE_LIPSCHITZ = REARRANGING_MODULES
_LINEAR = WEIGHTED_MODULES


def _activation(site: nn.Module, z: Tensor) -> Tensor:
    """The ORIGINAL activation of a site: ReLU, or ReLU6 where the model had one."""
    out = torch.relu(z)
    return out.clamp(max=site.cap) if math.isfinite(site.cap) else out


class _SiteProbe(fx.Interpreter):
    """Runs the prepared ANN, records each site's input and output, may substitute outputs."""

    def __init__(self, gm: fx.GraphModule, clipped: bool, substitute: Mapping[str, Tensor]):
        super().__init__(gm)
        self.clipped = clipped
        self.substitute = substitute
        self.inputs: dict[str, Tensor] = {}
        self.outputs: dict[str, Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        if not is_site(n):
            return super().run_node(n)
        name = site_name(n)
        site = self.module.get_submodule(str(n.target))
        z = self.fetch_args_kwargs_from_env(n)[0][0]
        self.inputs[name] = z
        self.outputs[name] = site(z) if self.clipped else _activation(site, z)
        return self.substitute.get(name, self.outputs[name])


@torch.no_grad()
def site_values(
    ann: fx.GraphModule,
    x: Tensor,
    clipped: bool = False,
    substitute: Mapping[str, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """One ANN pass over a prepared graph: (output, site inputs z_l, site outputs).

    ``clipped=False`` gives the original ANN (ReLU), ``True`` the calibrated clipped ANN.
    ``substitute`` replaces the outputs of the named sites downstream (their recorded output
    is still the ANN's): feeding the SNN's averages ``phi`` this way gives ``f_l(phi_{l-1})``.
    """
    probe = _SiteProbe(ann, clipped, substitute or {})
    output = probe.run(x)
    return output, probe.inputs, probe.outputs


def _with_site_outputs(ann: fx.GraphModule) -> fx.GraphModule:
    """A copy of the graph whose output is ``(original output, (site_1, ..., site_L))``."""
    gm = copy.deepcopy(ann)
    sites = site_nodes(gm)
    output = next(node for node in gm.graph.nodes if node.op == "output")
    output.args = ((output.args[0], tuple(sites)),)
    gm.recompile()
    return gm


def spiking_site_averages(
    snn: SpikingNetwork, x: Tensor, timesteps: Iterable[int]
) -> dict[int, tuple[Tensor, dict[str, Tensor]]]:
    """SNN averages over steps 1..T (no delay): ``{T: (output, {site: phi_l})}``.

    One simulation of a copy of ``snn`` that also outputs every site's spike train; the
    readout average of a theta-valued spike train is exactly the site's average output.
    """
    gm = _with_site_outputs(snn.ann)
    probe = SpikingNetwork(gm, max_pool=snn.max_pool, progress=False)
    names = [site_name(node) for node in site_nodes(gm)]
    runs = probe.simulate(x, list(timesteps), delay=0)
    return {T: (out, dict(zip(names, phis))) for T, (out, phis) in runs.items()}


def operator_norm(
    layer: nn.Module, input_shape: tuple[int, ...], iterations: int = 300, seed: int = 0
) -> float:
    """Spectral norm of the linear part of ``layer`` on inputs of ``input_shape`` (no batch).

    Exact (an SVD) for ``nn.Linear``; power iteration on ``J^T J`` (autograd, float64) for
    convolutions, whose operator with padding and stride has no closed form. Power iteration
    approaches the norm from below; 300 iterations on the zoo's convs agree to <1e-6.
    """
    if isinstance(layer, nn.Linear):
        return float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    if not isinstance(layer, _LINEAR):
        raise TypeError(f"operator_norm needs a conv or linear layer, got {type(layer).__name__}")
    lin = copy.deepcopy(layer).double().eval()
    if getattr(lin, "bias", None) is not None:
        lin.bias = None  # the norm of an affine map's linear part
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *input_shape), generator=generator, dtype=torch.float64)
    for _ in range(iterations):
        v = (v / v.norm()).requires_grad_(True)
        with torch.enable_grad():
            y = lin(v)
            (v,) = torch.autograd.grad(y, v, y)  # J^T J v
    v = v.detach() / v.norm()
    with torch.no_grad():
        return float(lin(v).norm())


def _segment_lipschitz(ann: fx.GraphModule, end: fx.Node, shapes: dict[fx.Node, tuple]) -> tuple:
    """Walk back from ``end`` to the previous site (or the input): (Lipschitz bound, layers)."""
    factor, layers = 1.0, []
    node = end
    while True:
        inputs = node.all_input_nodes
        if len(inputs) != 1:
            raise ValueError(
                f"node {node.name!r} has {len(inputs)} inputs: the Theorem 1 helpers need a "
                "chain network (no residual branches), e.g. zoo 'fmnist_vgg'"
            )
        node = inputs[0]
        if node.op == "placeholder":
            return factor, layers, None
        if is_site(node):
            return factor, layers, site_name(node)
        module = ann.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, _LINEAR):
            norm = operator_norm(module, shapes[node.all_input_nodes[0]][1:])
            factor *= norm
            layers.append((str(node.target), norm))
        elif isinstance(module, nn.MaxPool2d | nn.MaxPool1d):
            if module.kernel_size != module.stride or module.padding not in (0, (0, 0)):
                raise ValueError(f"max pool {node.target!r} has overlapping windows")
        elif (
            isinstance(module, _ONE_LIPSCHITZ)
            or (node.op == "call_function" and getattr(node.target, "__name__", "") == "flatten")
            or (node.op == "call_method" and node.target in ("flatten", "view", "reshape"))
        ):
            pass
        else:
            raise ValueError(f"no Lipschitz bound for node {node.name!r} ({node.op} {node.target})")


def _shapes(ann: fx.GraphModule, x: Tensor) -> dict[fx.Node, tuple]:
    """The shape of every tensor node on one sample of ``x``."""
    values = node_values(ann, x[:1])
    return {node: tuple(v.shape) for node, v in values.items() if torch.is_tensor(v)}


def _per_image_norm(t: Tensor) -> Tensor:
    return t.double().flatten(1).norm(dim=1)  # (N,)


def bound_terms(snn: SpikingNetwork, x: Tensor, timesteps: Iterable[int]) -> dict[str, Any]:
    """Every term of Theorem 1 on the batch ``x``, for each T (no readout delay).

    Returns a dict with ``layers`` (the site names, then ``"output"``), ``lipschitz`` (one
    factor per layer), and per T under ``terms[T]``: per-image tensors (N,) ``error`` (e_l),
    ``intra`` (eps_l), ``inter`` (the measured inter-layer term ``||ReLU(f_l(phi_{l-1})) -
    a_l||``, which the theorem bounds by ``Lip(f_l) e_{l-1}``) and ``bound`` (the recursion),
    each a list over layers; ``error <= intra + inter`` holds exactly (triangle inequality).
    The output layer is analog (no neuron): its intra term is the float rounding of the readout.
    """
    ann = snn.ann
    timesteps = sorted(set(timesteps))
    shapes = _shapes(ann, x)
    nodes = site_nodes(ann)
    names = [site_name(node) for node in nodes]
    output_node = next(node for node in ann.graph.nodes if node.op == "output")
    lipschitz: list[float] = []
    layers: list[list] = []
    previous = None
    for node in [*nodes, output_node]:
        factor, linear, source = _segment_lipschitz(ann, node, shapes)
        if source != previous:
            raise ValueError("the sites do not form a chain: Theorem 1 helpers need one")
        lipschitz.append(factor)
        layers.append(linear)
        previous = site_name(node) if node is not output_node else None
    y_ann, _, a = site_values(ann, x)  # the original ANN (ReLU)
    runs = spiking_site_averages(snn, x, timesteps)
    terms: dict[int, dict[str, list[Tensor]]] = {}
    for T, (y_snn, phi) in runs.items():
        y_sub, z_sub, _ = site_values(ann, x, substitute=phi)  # z'_l = f_l(phi_{l-1})
        error, intra, inter, bound = [], [], [], []
        previous_bound = torch.zeros(len(x), dtype=torch.float64)
        for i, name in enumerate([*names, "output"]):
            if name == "output":
                e = _per_image_norm(y_snn - y_ann)
                eps = _per_image_norm(y_snn - y_sub)
                carried = _per_image_norm(y_sub - y_ann)
            else:
                site = ann.get_submodule(f"{SITES}.{name}")
                e = _per_image_norm(phi[name] - a[name])
                eps = _per_image_norm(phi[name] - _activation(site, z_sub[name]))
                carried = _per_image_norm(_activation(site, z_sub[name]) - a[name])
            previous_bound = eps + lipschitz[i] * previous_bound
            error.append(e)
            intra.append(eps)
            inter.append(carried)
            bound.append(previous_bound.clone())
        terms[T] = {"error": error, "intra": intra, "inter": inter, "bound": bound}
    return {"layers": [*names, "output"], "lipschitz": lipschitz, "linear": layers,
            "terms": terms}  # fmt: skip
