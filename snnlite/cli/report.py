"""The report folder of ``snnlite convert``: results.json, a Markdown summary and the plots.

Every task reports through one form, :class:`Scores` (a metric of the ANN, the clipped ANN
and the SNN at every T and delay), so a classifier's top-1, a segmenter's mIoU and a
detector's mAP get the same keys, table and figure, named after their metric.

Everything is written into a temporary folder beside the target and renamed into place at
the end, so a run that fails (bad input, an interrupt, a full disk) never leaves a folder
that looks like a finished report.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from snnlite.energy import analog_macs, ann_macs, sop_at_fraction
from snnlite.network import SpikingNetwork
from snnlite.notebook import save_results
from snnlite.synapses import Activity

try:  # matplotlib is the optional `plots` extra: the report can do without figures
    from snnlite import plots
except ImportError:
    plots = None  # type: ignore[assignment]

__all__ = [
    "Run",
    "Scores",
    "delay_key",
    "metric_values",
    "plot_name",
    "plots_available",
    "results",
    "staging",
    "summary",
    "write_plots",
    "write_results",
]


def plots_available() -> bool:
    return plots is not None


def delay_key(delay: Any) -> str:
    """``auto`` -> ``auto``, ``half`` -> ``half``, 3 -> ``d3``: a delay as part of a key."""
    return delay if isinstance(delay, str) else f"d{delay:g}"


@contextmanager
def staging(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder that becomes ``out`` when the block ends without an error."""
    out = out.resolve()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield temp
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        os.replace(out, old)
    os.replace(temp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class Scores:
    """One metric of a run, whatever the task: what :func:`results` writes for it.

    ``metric`` is the stem of its keys (``accuracy``, ``miou``, ``map``: the notebooks'
    ``ann_<metric>`` and ``snn_<metric>_T<T>``), ``label`` its name for readers; ``prefix``
    goes before every key (``iou50_`` for mAP@.5, as chapter 8 writes it). ``also`` holds the
    run's further metrics, written beside it but never used for the energy summary.
    """

    metric: str
    label: str
    images: int
    ann: float
    clipped: float
    snn: dict[tuple[int, Any], float]  # (T, delay) -> the SNN's metric
    prefix: str = ""
    also: tuple[Scores, ...] = ()
    extra: dict[str, float] = field(default_factory=dict)  # more flat keys of the run

    def key(self, stem: str) -> str:
        """``ann`` -> ``ann_miou`` (``iou50_ann_map`` with a prefix)."""
        return f"{self.prefix}{stem}_{self.metric}"

    def curve(self, delay: Any, timesteps: list[int]) -> dict[int, float]:
        """{T: the SNN's metric} at one readout delay."""
        return {T: self.snn[(T, delay)] for T in timesteps}


@dataclass
class Run:
    """Everything a report is written from, whatever the task: the scores, the spiking
    network and its activity over every evaluated image, and the ANN counterpart of the
    network (whose MACs are counted on ``example``, one input as both networks see it)."""

    scores: Scores
    activity: Activity
    snn: SpikingNetwork
    model: nn.Module
    example: Tensor
    calibration_images: int


def metric_values(
    scores: Scores, timesteps: list[int], delays: list[Any], default_delay: Any
) -> dict[str, float]:
    """``ann_<m>``, ``clipped_ann_<m>``, ``snn_<m>_T<T>`` (the default delay) and
    ``snn_<m>_T<T>_<delay>`` for every delay, of one metric (prefixed)."""
    values = {scores.key("ann"): scores.ann, scores.key("clipped_ann"): scores.clipped}
    for T in timesteps:
        values[f"{scores.key('snn')}_T{T}"] = scores.snn[(T, default_delay)]
        for d in delays:
            values[f"{scores.key('snn')}_T{T}_{delay_key(d)}"] = scores.snn[(T, d)]
    return values


def results(
    run: Run, timesteps: list[int], delays: list[Any], default_delay: Any
) -> dict[str, float | int | str]:
    """Every number of the run as a flat mapping in the notebooks' convention.

    The metrics (:func:`metric_values`: ``ann_accuracy``, ``snn_miou_T<T>``,
    ``snn_map_T<T>_half``, ...), ``delay_T<T>`` (steps skipped before the readout), SOPs and
    firing rates per image at every T, the MACs of the ANN and of its analog layers, the
    energy summary (SOP90/95 on the main metric's curve) and each site's threshold mean/max.
    """
    scores, activity, snn = run.scores, run.activity, run.snn
    values: dict[str, Any] = {"images": scores.images}
    for metric in (scores, *scores.also):
        values.update(metric_values(metric, timesteps, delays, default_delay))
        values.update(metric.extra)
    sops = activity.sops_at(timesteps)
    for T in timesteps:
        values[f"delay_T{T}"] = snn.skipped_steps(T, default_delay)
        values[f"snn_sops_T{T}"] = sops[T]
        rows = activity.layers(T)
        events = sum(row["events_per_image"] for row in rows)
        neurons = sum(row["neurons"] for row in rows)
        values[f"snn_firing_rate_T{T}"] = events / (neurons * T) if neurons else 0.0
    values["ann_macs"] = ann_macs(run.model, run.example).total
    values["analog_macs"] = analog_macs(snn.ann, run.example).total
    curve = scores.curve(default_delay, timesteps)
    for fraction in (90, 95):
        reached = sop_at_fraction(curve, sops, scores.ann, fraction / 100)
        if reached is not None:
            values[f"sop{fraction}_T"], values[f"sop{fraction}"] = reached
    for name, theta in snn.thresholds.items():
        values[f"threshold_{name}_mean"] = float(theta.float().mean())
        values[f"threshold_{name}_max"] = float(theta.float().max())
    return {k: v for k, v in values.items() if not isinstance(v, float) or math.isfinite(v)}


def write_results(folder: Path, values: Mapping[str, Any]) -> Path:
    """``folder/results.json`` (flat, sorted), through :func:`snnlite.notebook.save_results`."""
    return save_results("results", values, folder)


def summary(
    values: Mapping[str, Any], config: Mapping[str, Any], timesteps: list[int], scores: Scores
) -> str:
    """A short Markdown report: the run, the metric's curve (and its companions) and the
    energy at each T."""
    metrics = (scores, *scores.also)
    lines = ["# snnlite convert report", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in config.items()]
    lines.append("")
    for m in metrics:
        lines.append(
            f"ANN {m.label}: {_percent(values[m.key('ann')])} (clipped ANN: "
            f"{_percent(values[m.key('clipped_ann')])}) on {values['images']} images."
        )
    snn_columns = " | ".join(f"SNN {m.label}" for m in metrics)
    lines += [
        "",
        f"| T | {snn_columns} | delay (steps) | SOPs / image | firing rate |",
        "|---|" + "---|" * len(metrics) + "---|---|---|",
    ]
    for T in timesteps:
        snn_values = " | ".join(_percent(values[f"{m.key('snn')}_T{T}"]) for m in metrics)
        lines.append(
            f"| {T} | {snn_values} | {values[f'delay_T{T}']} "
            f"| {values[f'snn_sops_T{T}']:.4g} | {values[f'snn_firing_rate_T{T}']:.4f} |"
        )
    for fraction in (90, 95):
        if f"sop{fraction}_T" in values:
            lines.append(
                f"\nSOP{fraction}: {values[f'sop{fraction}']:.4g} SOPs per image at "
                f"T={values[f'sop{fraction}_T']}, the first T whose {scores.label} reaches "
                f"{fraction}% of the ANN's (ANN: {values['ann_macs']:.4g} MACs)."
            )
    lines.append(
        f"\nAll numbers: `results.json`. Figures: `{plot_name(scores)}` ({scores.label} "
        "against T), `firing_rates.png`."
    )
    return "\n".join(lines) + "\n"


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def plot_name(scores: Scores) -> str:
    """The figure of the metric against T: ``accuracy.png``, ``miou.png`` or ``map.png``."""
    return f"{scores.metric}.png"


def write_plots(folder: Path, scores: Scores, activity: Activity, timesteps: list[int],
                delays: list[Any]) -> list[Path]:  # fmt: skip
    """The main metric against T, one line per delay (``accuracy.png``, ``miou.png`` or
    ``map.png``), and ``firing_rates.png`` (per layer, at the largest T)."""
    assert plots is not None, "plots_available() first"
    plots.setup()
    fig, ax = plots.new_figure()
    curves = {f"SNN, delay {d}": scores.curve(d, timesteps) for d in delays}
    plots.accuracy_over_time(ax, curves, {"ANN": scores.ann}, metric=scores.label)
    curve = folder / plot_name(scores)
    fig.savefig(curve)
    T = max(timesteps)
    fig, ax = plots.new_figure(height=0.3 * len(activity.layers(T)) + 1.2)
    plots.firing_rates(ax, {row["source"]: row["firing_rate"] for row in activity.layers(T)}, T)
    rates = folder / "firing_rates.png"
    fig.savefig(rates)
    return [curve, rates]
