"""Energy accounting: ANN multiply-accumulates, SNN synaptic operations, SOP90/95, FPS/W.

What is counted (book chapter 9), per image:

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

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from snnlite.graph import is_site
from snnlite.metrics import ann_accuracy, simulate_batches
from snnlite.synapses import Activity, fanout_maps  # noqa: F401 (fanout_maps: re-exported)

__all__ = [  # Activity and fanout_maps live in snnlite.synapses (imported here for callers)
    "EnergyConstants",
    "EnergyRow",
    "MacCount",
    "PRESETS",
    "analog_macs",
    "ann_macs",
    "energy_per_frame",
    "energy_row",
    "energy_table",
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
        if is_site(node) or any(arg in reached for arg in node.all_input_nodes):
            reached.add(node)
    return reached


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
    (its ``.snn`` as ``snn``) so that the outputs are detections. ``options`` go to
    ``simulate`` (delay, chunk_size, ...). Returns the activity of all batches (also left in
    ``snn.last_activity``): an adapter on :func:`snnlite.metrics.simulate_batches`.
    """
    pairs = ((batch[0] if isinstance(batch, tuple | list) else batch, batch) for batch in batches)
    activity = simulate_batches(snn, pairs, timesteps, update, simulate=simulate,
                                record_spikes=True, **options)  # fmt: skip
    assert activity is not None  # record_spikes=True
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
    timesteps = sorted(set(timesteps))
    correct = dict.fromkeys(timesteps, 0)

    def update(outputs: dict[int, Tensor], y: Tensor) -> None:
        for T, logits in outputs.items():
            correct[T] += int((logits.argmax(1) == y).sum())

    batches = [(images[i : i + batch_size], labels[i : i + batch_size])
               for i in range(0, len(images), batch_size)]  # fmt: skip
    activity = simulate_batches(snn, batches, timesteps, update, delay=delay,
                                record_spikes=True, progress=progress, desc=name)  # fmt: skip
    assert activity is not None  # record_spikes=True
    curve = {T: correct[T] / len(images) for T in timesteps}
    row = energy_row(
        name, curve, activity.sops_at(timesteps), ann_accuracy(model, images, labels),
        ann_macs(model, images[:1]).total, analog_macs(snn.ann, images[:1]).total,
        metric=metric, preset=preset,
    )  # fmt: skip
    return row, activity, curve
