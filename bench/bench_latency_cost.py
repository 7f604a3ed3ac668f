"""The cost of the low-latency conversion against the paper's LTB conversion, as ratios.

On the same calibration batches, for each zoo classifier: ``convert(model, batches)`` (the
paper's pipeline) and ``convert(model, batches, target_timesteps=T)`` for each target T,
taking turns in every round so that the machine's drift meets both alike; the ratio of
their wall times per round, median over rounds. Target: at most 3x.

    python bench/bench_latency_cost.py     # both zoo classifiers, 600 x 100 images, T* 8,16,64
    python bench/bench_latency_cost.py --models fmnist_vgg --calibration-batches 60 --repeats 1

Writes ``bench/latency_cost.json`` and ``bench/latency_cost.md`` (unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from bench_simulate import machine, store  # run as a script: bench/ is on sys.path
from tqdm.auto import tqdm

import snnlite
from snnlite.data import fashion_mnist_tensors
from snnlite.zoo import load

HERE = Path(__file__).resolve().parent


def measure(model_name: str, batches: list[torch.Tensor], targets: list[int],
            repeats: int) -> dict[str, dict[str, float]]:  # fmt: skip
    """Median seconds and median per-round ratio to LTB of each conversion of one model."""
    model = load(model_name)
    runs = {"paper (LTB)": None} | {f"target T={t}": t for t in targets}
    seconds: dict[str, list[float]] = {label: [] for label in runs}
    for _ in tqdm(range(repeats), desc=model_name, leave=False):
        for label, target in runs.items():  # in turns, so drift meets every conversion alike
            start = time.perf_counter()
            snnlite.convert(model, batches, target_timesteps=target, progress=False)
            seconds[label].append(time.perf_counter() - start)
    ltb = seconds["paper (LTB)"]
    return {
        label: {
            "median_seconds": round(statistics.median(times), 1),
            "ratio_to_ltb": round(statistics.median(t / b for t, b in zip(times, ltb)), 2),
            "seconds": [round(t, 1) for t in times],
        }
        for label, times in seconds.items()
    }


def markdown(table: dict) -> str:
    """The ratios as a Markdown table, with the command that wrote it."""
    lines = [
        f"<!-- written by: {table['command']} -->",
        "",
        f"Conversion on {table['calibration_batches']} batches of {table['calibration_batch']} "
        f"training images, {table['repeats']} rounds taken in turns (median of the per-round "
        f"ratios). Machine: {table['machine']}.",
        "",
        "| model | conversion | median seconds | ratio to LTB |",
        "|---|---|---|---|",
    ]
    for model_name, rows in table["models"].items():
        for label, row in rows.items():
            lines.append(f"| {model_name} | {label} | {row['median_seconds']:.1f} | "
                         f"{row['ratio_to_ltb']:.2f}x |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="fmnist_vgg,fmnist_resnet")
    parser.add_argument("--calibration-batches", type=int, default=600)
    parser.add_argument("--calibration-batch", type=int, default=100)
    parser.add_argument("--targets", default="8,16,64")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.manual_seed(0)
    train, _ = fashion_mnist_tensors("train")
    size = args.calibration_batch
    batches = [train[i * size : (i + 1) * size] for i in range(args.calibration_batches)]
    targets = [int(t) for t in args.targets.split(",")]
    table = {
        "command": f"python bench/bench_latency_cost.py --models {args.models} "
        f"--calibration-batches {args.calibration_batches} --calibration-batch {size} "
        f"--targets {args.targets} --repeats {args.repeats}",
        "calibration_batches": args.calibration_batches,
        "calibration_batch": size,
        "repeats": args.repeats,
        "machine": machine(),
        "models": {
            name: measure(name, batches, targets, args.repeats) for name in args.models.split(",")
        },
    }
    store("latency_cost", table, markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
