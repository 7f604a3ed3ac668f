"""Measure a zoo classifier's SNN accuracy table and store it with the zoo entry.

For each threshold recipe (LTB channel-wise, LTB layer-wise, robust-norm 99.9 and max-norm,
both layer-wise as in the paper's ablation), convert the model with the same calibration set
and read the test accuracy at T = 8 ... 256 out of one simulation per batch::

    python -m snnlite.zoo.snn_table --model fmnist_vgg --images 500

The result goes to ``snnlite/zoo/results/<model>.json``, with the command that wrote it;
:func:`snnlite.zoo.info` returns it as ``snn_accuracy``. The stored tables use the first 500
test images (four recipes to T = 256 take about half an hour per model on 2 CPU cores);
``--images 10000`` reads the whole test set. The calibration (600 batches of 100 training
images) is that of the latency tables and of ``python -m snnlite.energy``.
"""

from __future__ import annotations

import argparse
import time

import torch

import snnlite
from snnlite.data import fashion_mnist_benchmark
from snnlite.metrics import accuracy_curve, ann_accuracy
from snnlite.zoo.registry import load, write_result

TIMESTEPS = (8, 16, 32, 64, 128, 256)
RECIPES = {  # label: convert() arguments
    "ltb-channel": {"method": "ltb", "granularity": "channel"},
    "ltb-layer": {"method": "ltb", "granularity": "layer"},
    "robust-99.9": {"method": "robust", "granularity": "layer", "percentile": 99.9},
    "max": {"method": "max", "granularity": "layer"},
}


def measure(
    model_name: str, images: int, calibration_batches: int, calibration_batch: int,
    batch_size: int,
) -> dict:  # fmt: skip
    model = load(model_name)
    x, y, calibration = fashion_mnist_benchmark(images, calibration_batches, calibration_batch)
    table = {
        "model": model_name,
        "test_images": len(x),
        "calibration": f"{calibration_batches} batches of {calibration_batch} training images "
        f"({calibration_batches} LTB updates)",
        "delay": "auto",
        "timesteps": list(TIMESTEPS),
        "ann_accuracy": ann_accuracy(model, x, y),
        "recipes": {},
    }
    for label, arguments in RECIPES.items():
        start = time.perf_counter()
        snn = snnlite.convert(model, calibration, progress=False, **arguments)
        curve = accuracy_curve(snn, x, y, TIMESTEPS, delay="auto", batch_size=batch_size)
        table["recipes"][label] = {
            "relux_accuracy": ann_accuracy(snn.relux(), x, y),
            "delay_estimate": snn.delay_estimate,
            "accuracy": {str(T): curve[T] for T in TIMESTEPS},
            "seconds": round(time.perf_counter() - start, 1),
        }
        row = " ".join(f"{100 * curve[T]:6.2f}" for T in TIMESTEPS)
        print(f"{label:<12s} {row}", flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", type=int, default=500, help="first N test images")
    parser.add_argument("--calibration-batches", type=int, default=600)
    parser.add_argument("--calibration-batch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    torch.manual_seed(0)
    table = measure(args.model, args.images, args.calibration_batches,
                    args.calibration_batch, args.batch_size)  # fmt: skip
    table["command"] = (
        f"python -m snnlite.zoo.snn_table --model {args.model} --images {args.images} "
        f"--calibration-batches {args.calibration_batches} "
        f"--calibration-batch {args.calibration_batch}"
    )
    write_result(f"{args.model}.json", table)


if __name__ == "__main__":
    main()
