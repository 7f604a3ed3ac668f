"""Time to accuracy: how fast each converted network answers once it is as accurate as its ANN.

A raw simulation rate says little on its own: what a user waits for is an accurate answer.
So for every zoo classifier with a labelled test set (the Fashion-MNIST VGG and ResNet), on
the same calibration batches and the same test images, this finds for each converter the
smallest T on a doubling grid whose accuracy is within 1 point of the ANN's:

* snnlite, the paper's pipeline (``convert(model, batches)``, automatic delay);
* snnlite, the low-latency mode: ``convert(model, batches, target_timesteps=T)`` for each
  grid T in turn, scored at that T, until one is within the point (its conversion time is
  the LTB pass plus the tuning for that T);
* SpikingJelly 2.0's LTB conversion, read out with its own per-T delay
  (``estimate_delay_start``);

then times each at its T on one batch, the runs taken in turns over several rounds, and
reports images per second and that rate as a fraction of plain ANN inference on the same
batch (the ANN answers at "T = 1"). A converter that is never within the point up to the
grid's end says so instead of a rate.

    python bench/bench_time_to_accuracy.py                # the stored table
    python bench/bench_time_to_accuracy.py --images 500 --calibration-batches 30 --no-write

Writes ``bench/time_to_accuracy.json`` and ``bench/time_to_accuracy.md`` (unless
``--no-write``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_parity import spikingjelly_ltb, spikingjelly_outputs  # bench/ is on sys.path
from bench_simulate import machine, store, timings
from torch import nn
from tqdm.auto import tqdm

import snnlite
from snnlite.data import fashion_mnist_benchmark, fashion_mnist_tensors
from snnlite.latency import TUNING_SAMPLES, tune_for_latency
from snnlite.metrics import accuracy_curve, ann_accuracy
from snnlite.zoo import load

HERE = Path(__file__).resolve().parent
GRID = (2, 4, 8, 16, 32, 64, 128, 256)
WITHIN = 0.01  # "as accurate as the ANN": within 1 point


def first_within(accuracy_at: Callable[[int], float], goal: float) -> dict:
    """Score T = 2, 4, 8, ... until the accuracy reaches ``goal``: the T found (or None) and
    every accuracy measured on the way (``{T: accuracy}``)."""
    curve: dict[int, float] = {}
    for T in tqdm(GRID, desc="T", leave=False):
        curve[T] = accuracy_at(T)
        if curve[T] >= goal:
            return {"T": T, "curve": curve}
    return {"T": None, "curve": curve}


def spikingjelly_accuracy_at(net: nn.Module, loader: list, x: torch.Tensor, y: torch.Tensor,
                             batch_size: int) -> Callable[[int], float]:  # fmt: skip
    """Accuracy of SpikingJelly's network at T, read out after its own estimate of the delay."""
    from spikingjelly.activation_based import ann2snn

    def accuracy_at(T: int) -> float:
        delay = ann2snn.estimate_delay_start(net, loader, "cpu", T)
        correct = 0
        for start in range(0, len(x), batch_size):
            outputs = spikingjelly_outputs(net, x[start : start + batch_size], T)
            readout = outputs[delay:T].mean(dim=0)
            correct += int((readout.argmax(dim=1) == y[start : start + batch_size]).sum())
        return correct / len(x)

    return accuracy_at


def low_latency_start(model: nn.Module, calibration: list[torch.Tensor]
                      ) -> tuple[snnlite.SpikingNetwork, torch.Tensor]:  # fmt: skip
    """What the low-latency rows are tuned from: one LTB conversion with the cumulative pool,
    and the first TUNING_SAMPLES calibration images. Tuning a copy of it for T is what
    ``convert(..., target_timesteps=T)`` builds, without repeating the LTB pass for every T."""
    base = snnlite.convert(model, calibration, max_pool="cumulative", progress=False)
    return base, torch.cat(list(calibration))[:TUNING_SAMPLES]


def measure(model_name: str, calibration: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
            timing_batch: torch.Tensor, repeats: int, batch_size: int) -> dict:  # fmt: skip
    """One model: the T each converter needs, and its speed there against the ANN's."""
    model = load(model_name)
    ann = ann_accuracy(model, x, y)
    goal = ann - WITHIN
    rows: dict[str, dict] = {}
    runs: dict[str, Callable[[], object]] = {}

    def snnlite_at(snn: snnlite.SpikingNetwork, T: int) -> float:
        return accuracy_curve(snn, x, y, [T], batch_size=batch_size, progress=False)[T]

    start = time.perf_counter()
    paper = snnlite.convert(model, calibration, progress=False)
    seconds = time.perf_counter() - start
    row = rows["snnlite paper (LTB)"] = first_within(lambda T: snnlite_at(paper, T), goal)
    row["conversion_seconds"] = round(seconds, 1)
    if (T := row["T"]) is not None:
        runs["snnlite paper (LTB)"] = lambda T=T: paper.simulate(timing_batch, [T], progress=False)

    start = time.perf_counter()
    base, tuning = low_latency_start(model, calibration)
    base_seconds = time.perf_counter() - start
    tuned: dict[int, tuple[snnlite.SpikingNetwork, float]] = {}

    def tuned_at(T: int) -> float:
        start = time.perf_counter()
        snn = tune_for_latency(copy.deepcopy(base), tuning, T, progress=False)
        tuned[T] = snn, time.perf_counter() - start
        return snnlite_at(snn, T)

    row = rows["snnlite low latency"] = first_within(tuned_at, goal)
    if (T := row["T"]) is not None:
        row["conversion_seconds"] = round(base_seconds + tuned[T][1], 1)
        runs["snnlite low latency"] = lambda T=T: tuned[T][0].simulate(
            timing_batch, [T], progress=False
        )

    start = time.perf_counter()
    net, loader = spikingjelly_ltb(model, calibration)
    seconds = time.perf_counter() - start
    row = rows["SpikingJelly 2.0 (LTB)"] = first_within(
        spikingjelly_accuracy_at(net, loader, x, y, batch_size), goal
    )
    row["conversion_seconds"] = round(seconds, 1)
    if (T := row["T"]) is not None:
        runs["SpikingJelly 2.0 (LTB)"] = lambda T=T: spikingjelly_outputs(net, timing_batch, T)

    def infer() -> None:
        with torch.no_grad():
            model(timing_batch)

    times = timings({"ANN": infer} | runs, repeats)
    for label, row in rows.items():
        if label in times:
            row["images_per_second"] = round(len(timing_batch) / min(times[label]), 1)
            row["fraction_of_ann_rate"] = round(
                statistics.median(a / s for a, s in zip(times["ANN"], times[label])), 4
            )
    return {
        "ann_accuracy": ann,
        "ann_images_per_second": round(len(timing_batch) / min(times["ANN"]), 1),
        "rows": rows,
    }


def markdown(table: dict) -> str:
    """The table as Markdown, with the command that wrote it (from the table as stored)."""
    lines = [
        f"<!-- written by: {table['command']} -->",
        "",
        f"Smallest T on the grid {', '.join(map(str, table['grid']))} whose accuracy on the "
        f"first {table['images']} test images is within 1 point of the ANN's; speed at that T "
        f"on a batch of {table['timing_batch']} images (best of {table['repeats']} rounds "
        "taken in turns), and as a fraction of plain ANN inference on the same batch (median "
        f"of the per-round ratios). Machine: {table['machine']}.",
        "",
        "| model | conversion | T | accuracy at T (%) | images/s | fraction of the ANN's rate "
        "| conversion seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in table["models"].items():
        lines.append(f"| {name} | ANN | - | {100 * result['ann_accuracy']:.2f} | "
                     f"{result['ann_images_per_second']:.0f} | 1 | - |")  # fmt: skip
        for label, row in result["rows"].items():
            if row["T"] is None:
                best = max(row["curve"].values())
                lines.append(f"| {name} | {label} | never within T <= {table['grid'][-1]} | "
                             f"{100 * best:.2f} (best) | - | - | - |")  # fmt: skip
                continue
            accuracy = row["curve"][str(row["T"])]
            lines.append(f"| {name} | {label} | {row['T']} | {100 * accuracy:.2f} | "
                         f"{row['images_per_second']:.0f} | "
                         f"{row['fraction_of_ann_rate']:.3f} | "
                         f"{row['conversion_seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    """The command line (the test that re-runs a slice reads the stored command with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="fmnist_vgg,fmnist_resnet")
    parser.add_argument("--images", type=int, default=2000, help="first N test images")
    parser.add_argument("--calibration-batches", type=int, default=600)
    parser.add_argument("--calibration-batch", type=int, default=100)
    parser.add_argument("--timing-batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser


def inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, list, torch.Tensor]:
    """The test images and labels, the calibration batches and the timing batch (the last
    test images) of a command."""
    torch.manual_seed(0)
    x, y, calibration = fashion_mnist_benchmark(
        args.images, args.calibration_batches, args.calibration_batch
    )
    timing_batch = fashion_mnist_tensors("test")[0][-args.timing_batch :]
    return x, y, calibration, timing_batch


def main() -> None:
    args = parser().parse_args()
    x, y, calibration, timing_batch = inputs(args)
    size = args.calibration_batch
    table = {
        "command": f"python bench/bench_time_to_accuracy.py --models {args.models} "
        f"--images {args.images} --calibration-batches {args.calibration_batches} "
        f"--calibration-batch {size} --timing-batch {args.timing_batch} "
        f"--repeats {args.repeats}",
        "grid": list(GRID),
        "images": args.images,
        "timing_batch": args.timing_batch,
        "repeats": args.repeats,
        "machine": machine(),
        "models": {
            name: measure(name, calibration, x, y, timing_batch, args.repeats, args.batch_size)
            for name in tqdm(args.models.split(","), desc="models")
        },
    }
    store("time_to_accuracy", table, markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
