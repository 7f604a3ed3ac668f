"""Simulation speed at 224 px against the dense bound, measured in ONE run.

For torchvision's MobileNetV2 (its real ImageNet weights, from the zoo) and ResNet-18 (the
architecture with random weights: its weight file is not shipped offline; the speed of a
dense simulation does not depend on the weights' values), each converted with LTB on a few
augmented photo crops, it times on the same batch of crops

  (a) ``snnlite`` ``simulate`` for T steps with its default tiling,
  (b) the same with the tiling rule before ``snnlite.network.MIN_WORK`` (as many
      sample-steps per layer call as fit in ``work_bytes``, down to one),
  (c) the dense bound: T plain forward passes of the ANN on the batch,

in turns within each round (``bench_simulate.timings``), and reports image-steps per second
and the ratios (a)/(c) and (a)/(b), medians over the rounds. Written by::

    python bench/bench_224.py                       # 4 crops, T = 16, 3 rounds, 1 thread
    python bench/bench_224.py --images 8 --timesteps 32 --threads 2

into ``bench/speed_224.json`` and ``bench/speed_224.md`` (``--no-write`` to print only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torchvision
from bench_simulate import ratio, timings  # run as a script: bench/ is on sys.path
from torch import nn

import snnlite
from snnlite import network, zoo
from snnlite.data.photos import augmented_crops

HERE = Path(__file__).resolve().parent
CALIBRATION_UPDATES = 8  # LTB updates: thresholds do not change the dense cost


def models() -> dict[str, nn.Module]:
    """The 224 px models, eval mode."""
    return {
        "mobilenet_v2 (ImageNet weights)": zoo.load("mobilenet_v2_imagenet").eval(),
        "resnet18 (random weights)": torchvision.models.resnet18(weights=None).eval(),
    }


def measure(model: nn.Module, x: torch.Tensor, steps: int, repeats: int) -> dict[str, float]:
    """Rates (image-steps/s) and ratios of one model on the batch ``x``."""
    calibration = list(augmented_crops(4 * len(x), seed=3).split(len(x)))
    snn = snnlite.convert(model, calibration, iterations=CALIBRATION_UPDATES, progress=False)

    def simulate() -> None:
        snn.simulate(x, steps, progress=False)

    def simulate_before() -> None:
        floor = network.MIN_WORK
        network.MIN_WORK = 1  # the rule before: no floor on the work per layer call
        try:
            snn.simulate(x, steps, progress=False)
        finally:
            network.MIN_WORK = floor

    def dense() -> None:
        with torch.no_grad():
            for _ in range(steps):
                model(x)

    runs = {"snnlite": simulate, "snnlite, one sample-step per call": simulate_before,
            "dense bound": dense}  # fmt: skip
    times = timings(runs, repeats)
    work = len(x) * steps
    result = {f"{name} (image-steps/s)": work / min(t) for name, t in times.items()}
    result["snnlite / dense bound"] = ratio(times["dense bound"], times["snnlite"])
    result["snnlite / before"] = ratio(times["snnlite, one sample-step per call"],
                                       times["snnlite"])  # fmt: skip
    return result


def markdown(results: dict[str, dict[str, float]], header: dict[str, object]) -> str:
    columns = list(next(iter(results.values())))
    lines = [
        "# Simulation speed at 224 px",
        "",
        "Written by `python bench/bench_224.py` (do not edit by hand; raw numbers in",
        "`speed_224.json`). Rates are the best round; ratios are medians over rounds of",
        "times taken in turns (ratios above 1: snnlite is faster).",
        "",
        ", ".join(f"{k}: {v}" for k, v in header.items()),
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, row in results.items():
        cells = [f"{v:.1f}" if k.endswith("(image-steps/s)") else f"{v:.2f}x"
                 for k, v in row.items()]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="crops simulated together")
    parser.add_argument("--timesteps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = augmented_crops(args.images, seed=4)  # (N, 3, 224, 224)
    results = {}
    for name, model in models().items():
        results[name] = measure(model, x, args.timesteps, args.repeats)
        print(name, json.dumps(results[name]), flush=True)
    header = {
        "images": args.images, "T": args.timesteps, "rounds": args.repeats,
        "threads": args.threads, "cpus": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(),
        "load average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }  # fmt: skip
    if not args.no_write:
        (HERE / "speed_224.json").write_text(json.dumps({"setting": header, "results": results},
                                                        indent=1) + "\n")  # fmt: skip
        (HERE / "speed_224.md").write_text(markdown(results, header))
    print(markdown(results, header))


if __name__ == "__main__":
    main()
