"""The report folder of ``snnlite convert``: results.json, a Markdown summary and the plots.

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
from pathlib import Path
from typing import Any

from snnlite.energy import analog_macs, ann_macs, sop_at_fraction
from snnlite.network import SpikingNetwork
from snnlite.notebook import save_results

try:  # matplotlib is the optional `plots` extra: the report can do without figures
    from snnlite import plots
except ImportError:
    plots = None  # type: ignore[assignment]

__all__ = ["delay_key", "plots_available", "results", "staging", "summary", "write_plots"]


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


def results(
    evaluation: Any,
    snn: SpikingNetwork,
    model: Any,
    example: Any,
    timesteps: list[int],
    delays: list[Any],
    default_delay: Any,
) -> dict[str, float | int | str]:
    """Every number of the run as a flat mapping in the notebooks' convention.

    ``ann_accuracy``, ``snn_accuracy_T<T>`` (the default delay), ``snn_accuracy_T<T>_<delay>``
    for every delay, ``delay_T<T>`` (steps skipped before the readout), SOPs and firing rates
    per image at every T, the energy summary (SOP90/95) and each site's threshold mean/max.
    """
    values: dict[str, Any] = {
        "images": evaluation.images,
        "ann_accuracy": evaluation.ann_correct / evaluation.images,
        "clipped_ann_accuracy": evaluation.clipped_correct / evaluation.images,
    }
    activity = evaluation.activity
    sops = activity.sops_at(timesteps)
    for T in timesteps:
        values[f"snn_accuracy_T{T}"] = evaluation.accuracy(T, default_delay)
        for d in delays:
            values[f"snn_accuracy_T{T}_{delay_key(d)}"] = evaluation.accuracy(T, d)
        values[f"delay_T{T}"] = snn.skipped_steps(T, default_delay)
        values[f"snn_sops_T{T}"] = sops[T]
        rows = activity.layers(T)
        events = sum(row["events_per_image"] for row in rows)
        neurons = sum(row["neurons"] for row in rows)
        values[f"snn_firing_rate_T{T}"] = events / (neurons * T) if neurons else 0.0
    values["ann_macs"] = ann_macs(model, example).total
    values["analog_macs"] = analog_macs(snn.ann, example).total
    curve = {T: evaluation.accuracy(T, default_delay) for T in timesteps}
    for fraction in (90, 95):
        reached = sop_at_fraction(curve, sops, values["ann_accuracy"], fraction / 100)
        if reached is not None:
            values[f"sop{fraction}_T"], values[f"sop{fraction}"] = reached
    for name, theta in snn.thresholds.items():
        values[f"threshold_{name}_mean"] = float(theta.float().mean())
        values[f"threshold_{name}_max"] = float(theta.float().max())
    return {k: v for k, v in values.items() if not isinstance(v, float) or math.isfinite(v)}


def write_results(folder: Path, values: Mapping[str, Any]) -> Path:
    """``folder/results.json`` (flat, sorted), through :func:`snnlite.notebook.save_results`."""
    return save_results("results", values, folder)


def summary(values: Mapping[str, Any], config: Mapping[str, Any], timesteps: list[int]) -> str:
    """A short Markdown report: the run, the accuracy curve and the energy at each T."""
    lines = ["# snnlite convert report", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in config.items()]
    lines += [
        "",
        f"ANN top-1: {100 * values['ann_accuracy']:.2f}% "
        f"(clipped ANN: {100 * values['clipped_ann_accuracy']:.2f}%) on {values['images']} "
        "images.",
        "",
        "| T | SNN top-1 | delay (steps) | SOPs / image | firing rate |",
        "|---|---|---|---|---|",
    ]
    for T in timesteps:
        lines.append(
            f"| {T} | {100 * values[f'snn_accuracy_T{T}']:.2f}% | {values[f'delay_T{T}']} "
            f"| {values[f'snn_sops_T{T}']:.4g} | {values[f'snn_firing_rate_T{T}']:.4f} |"
        )
    for fraction in (90, 95):
        if f"sop{fraction}_T" in values:
            lines.append(
                f"\nSOP{fraction}: {values[f'sop{fraction}']:.4g} SOPs per image at "
                f"T={values[f'sop{fraction}_T']} (ANN: {values['ann_macs']:.4g} MACs)."
            )
    lines.append("\nAll numbers: `results.json`. Figures: `accuracy.png`, `firing_rates.png`.")
    return "\n".join(lines) + "\n"


def write_plots(folder: Path, values: Mapping[str, Any], activity: Any, timesteps: list[int],
                delays: list[Any]) -> list[Path]:  # fmt: skip
    """``accuracy.png`` (top-1 against T per delay) and ``firing_rates.png`` (per layer)."""
    assert plots is not None, "plots_available() first"
    plots.setup()
    fig, ax = plots.new_figure()
    curves = {f"SNN, delay {d}": {T: values[f"snn_accuracy_T{T}_{delay_key(d)}"]
                                  for T in timesteps} for d in delays}  # fmt: skip
    plots.accuracy_over_time(ax, curves, {"ANN": values["ann_accuracy"]})
    accuracy = folder / "accuracy.png"
    fig.savefig(accuracy)
    T = max(timesteps)
    fig, ax = plots.new_figure(height=0.3 * len(activity.layers(T)) + 1.2)
    plots.firing_rates(ax, {row["source"]: row["firing_rate"] for row in activity.layers(T)}, T)
    rates = folder / "firing_rates.png"
    fig.savefig(rates)
    return [accuracy, rates]
