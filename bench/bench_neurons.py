"""What each neuron option costs in simulation time, on MobileNetV2 at 224 px, in ONE run.

The options that send more than one bit per step (bursts, signed spikes, catching up) are
priced in the book in bits per step and in synaptic operations; this prices them in the
simulator's time too. MobileNetV2 with its real ImageNet weights is converted once with LTB
on a few augmented photo crops (thresholds do not change the cost of a step), then
simulated channels-last for T steps on the same batch of crops, with each option in turns
within each round (``bench_simulate.timings``):

  binary                 the paper's neuron, one spike or none per step (1 bit)
  bursts of 2            ``spikes_per_step=2`` (log2 3 bits)
  signed                 ``signed_spikes=True`` (log2 3 bits)
  signed, catch-up 2/3   ``signed_spikes=True, catch_up=B`` (log2(2B + 1) bits)

It reports image-steps per second (best round), each option's time against binary spikes
(median over rounds of the ratio within a round: above 1, slower), and from the quickest of
three more runs of each, milliseconds per image-step in the neurons (``IFNeuron``, timed
with torch's module hooks, ``bench_224.time_per_kind``) and in everything else. Every
option runs on a fused numba kernel (:mod:`snnlite.kernels`). Written by::

    python bench/bench_neurons.py                   # 4 crops, T = 32, 11 rounds, 1 thread

into ``bench/neurons_224.json`` and ``bench/neurons_224.md``, headed by the command
(``--no-write`` to print only).
"""

from __future__ import annotations

import copy
import math

import torch
from bench_224 import CALIBRATION_UPDATES, crops_run, time_per_kind
from bench_simulate import ratio, store, timings

import snnlite
from snnlite import zoo
from snnlite.data.photos import augmented_crops

# label -> (convert's neuron options, bits per step)
OPTIONS: dict[str, tuple[dict, float]] = {
    "binary": ({}, 1.0),
    "bursts of 2": ({"spikes_per_step": 2}, math.log2(3)),
    "signed": ({"signed_spikes": True}, math.log2(3)),
    "signed, catch-up 2": ({"signed_spikes": True, "catch_up": 2}, math.log2(5)),
    "signed, catch-up 3": ({"signed_spikes": True, "catch_up": 3}, math.log2(7)),
}


def networks(x: torch.Tensor) -> dict[str, snnlite.SpikingNetwork]:
    """MobileNetV2 converted once; a copy per option with only its neuron switched (what
    ``convert(..., **options)`` builds from the same calibration: no option moves a
    threshold)."""
    calibration = list(augmented_crops(4 * len(x), seed=3).split(len(x)))
    model = zoo.load("mobilenet_v2_imagenet").eval()
    binary = snnlite.convert(model, calibration, iterations=CALIBRATION_UPDATES, progress=False)
    return {label: with_neuron(binary, options) for label, (options, _bits) in OPTIONS.items()}


def with_neuron(binary: snnlite.SpikingNetwork, options: dict) -> snnlite.SpikingNetwork:
    """A copy of a converted network with the neuron ``options`` of ``convert`` switched on
    (tests/test_bench_speed.py checks that it simulates as ``convert(..., **options)``)."""
    snn = copy.deepcopy(binary)
    for name, value in options.items():
        setattr(snn, name, value)
    return snn


def measure(x: torch.Tensor, steps: int, repeats: int) -> dict[str, dict]:
    """Rate, ratio to binary spikes and time per image-step in the neurons, per option."""
    nets = networks(x)
    runs = {label: (lambda snn=snn: snn.simulate(x, steps, channels_last=True, progress=False))
            for label, snn in nets.items()}  # fmt: skip
    times = timings(runs, repeats)
    work = len(x) * steps
    results = {}
    for label, run in runs.items():
        # One profiled run is noisy on a shared machine: the quickest of three is kept.
        profile = min((time_per_kind(run, work) for _ in range(3)),
                      key=lambda p: sum(p.values()))  # fmt: skip
        neurons = profile.get("IFNeuron", 0.0)
        results[label] = {
            "bits per step": OPTIONS[label][1],
            "image-steps/s": work / min(times[label]),
            "time / binary": ratio(times[label], times["binary"]),
            "neurons (ms per image-step)": neurons,
            "the rest (ms per image-step)": sum(profile.values()) - neurons,
        }
    return results


def markdown(table: dict) -> str:
    """The table as Markdown, headed by the command that wrote it."""
    results = table["results"]
    columns = list(next(iter(results.values())))
    lines = [
        f"<!-- written by: {table['command']} -->",
        "",
        "# What each neuron option costs in simulation time",
        "",
        f"MobileNetV2 (ImageNet weights) at 224 px, {table['images']} photo crops, channels-last, "
        f"T = {table['T']}, {table['rounds']} rounds with the options taken in turns. Rates: the "
        "best round. 'time / binary': the option's time against binary spikes in the same round, "
        "median over rounds (above 1: slower). Neurons and the rest: the quickest of three more "
        f"runs of each, timed with torch's module hooks. Machine: {table['machine']}.",
        "",
        "| neuron | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, result in results.items():
        cells = []
        for column, value in result.items():
            if column == "time / binary":
                cells.append(f"{value:.2f}x")
            elif column == "image-steps/s":
                cells.append(f"{value:.1f}")
            else:
                cells.append(f"{value:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    description = __doc__.split("\n\n")[0]
    args, x, table = crops_run("bench_neurons.py", description, timesteps=32, repeats=11)
    table["results"] = measure(x, args.timesteps, args.repeats)
    store("neurons_224", table, markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
