"""The cost of the low-latency conversion against the paper's LTB conversion, as ratios.

On the same calibration batches, for a zoo classifier: ``convert(model, batches)`` (the
paper's pipeline) and ``convert(model, batches, target_timesteps=T)`` for each target T,
taking turns in every round so that the machine's drift meets both alike; the ratio of
their wall times per round, median over rounds. Target (issue 11): at most 3x.

    python bench/bench_latency_cost.py                  # 600 batches of 100, targets 8,16,64
    python bench/bench_latency_cost.py --calibration-batches 60 --repeats 1   # quick look

Writes ``bench/latency_cost.md`` (unless ``--no-write``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import snnlite
from snnlite.data import fashion_mnist_tensors
from snnlite.zoo import load

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fmnist_vgg")
    parser.add_argument("--calibration-batches", type=int, default=600)
    parser.add_argument("--calibration-batch", type=int, default=100)
    parser.add_argument("--targets", default="8,16,64")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load(args.model)
    train, _ = fashion_mnist_tensors("train")
    size = args.calibration_batch
    batches = [train[i * size : (i + 1) * size] for i in range(args.calibration_batches)]
    runs = {"paper (LTB)": None} | {f"target T={t}": int(t) for t in args.targets.split(",")}
    seconds: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(args.repeats):
        for label, target in runs.items():
            start = time.perf_counter()
            snnlite.convert(model, batches, target_timesteps=target, progress=False)
            seconds[label].append(time.perf_counter() - start)
    ltb = seconds["paper (LTB)"]
    lines = [
        f"<!-- written by: python bench/bench_latency_cost.py --model {args.model} "
        f"--calibration-batches {args.calibration_batches} --calibration-batch {size} "
        f"--targets {args.targets} --repeats {args.repeats} -->",
        "",
        f"Conversion of `{args.model}` on {args.calibration_batches} batches of {size} "
        f"training images, {args.repeats} rounds (median of the per-round ratios).",
        "",
        "| conversion | median seconds | ratio to LTB |",
        "|---|---|---|",
    ]
    for label, times in seconds.items():
        ratio = statistics.median(t / base for t, base in zip(times, ltb))
        lines.append(f"| {label} | {statistics.median(times):.1f} | {ratio:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        (HERE / "latency_cost.md").write_text(text)


if __name__ == "__main__":
    main()
