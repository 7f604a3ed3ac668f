"""Measure the low-latency conversion of a zoo classifier against the paper's pipeline.

Both start from the same LTB (channel-wise) conversion on the same calibration batches. The
paper's network is read out with the gated max pool (as the book measures it) and, as its own
row, with the cumulative max pool that the low-latency mode uses (:mod:`snnlite.pooling`), so
the pool's share of the gain is seen apart from the tuning's. The low-latency networks are
tuned for each target T (8, 16 and 64), at the first target also with the parts switched on
one by one (by default T-aware thresholds alone against the default: T-aware thresholds, the
potential correction and the delay chosen per T), and every network is read out at
T = 4 ... 64 from one simulation per batch, with its SOPs per image recorded in the same
runs::

    python -m snnlite.zoo.latency_table --model fmnist_vgg --images 10000

The result goes to ``snnlite/zoo/results/<model>_latency.json``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import snnlite
from snnlite.data import fashion_mnist_benchmark
from snnlite.latency import LATENCY_PARTS, latency_parts_of, tune_for_latency
from snnlite.metrics import accuracy_curve, ann_accuracy
from snnlite.zoo.registry import load, write_result

TIMESTEPS = (4, 8, 16, 32, 64)
TARGETS = (8, 16, 64)
VARIANTS = {  # label: latency parts, measured at the first target (the default at all)
    "thresholds": ("thresholds",),
    "thresholds+bias": ("thresholds", "bias", "delay"),
    "default": LATENCY_PARTS,  # thresholds + potential + delay
}
STORED_VARIANTS = ("thresholds", "default")  # the stored table's (each costs one curve)


def _curve(snn: snnlite.SpikingNetwork, x, y, batch_size: int) -> dict:
    accuracy = accuracy_curve(snn, x, y, TIMESTEPS, delay="auto", batch_size=batch_size,
                              progress=False, record_spikes=True)  # fmt: skip
    sops = snn.last_activity.sops_at(TIMESTEPS)
    return {
        "delay": snn.delay_estimate,
        "relux_accuracy": ann_accuracy(snn.relux(), x, y),
        "accuracy": {str(T): accuracy[T] for T in TIMESTEPS},
        "sops_per_image": {str(T): sops[T] for T in TIMESTEPS},
    }


def tuning_start(paper: snnlite.SpikingNetwork, calibration: list[torch.Tensor],
                 tuning_size: int) -> tuple[snnlite.SpikingNetwork, torch.Tensor]:  # fmt: skip
    """What every target is tuned from: a copy of the paper's network with the low-latency
    mode's cumulative pool, and the first ``tuning_size`` calibration images (as
    ``convert(..., target_timesteps=T)`` takes them)."""
    cumulative = copy.deepcopy(paper)
    cumulative.max_pool = "cumulative"
    return cumulative, torch.cat(calibration)[:tuning_size]


def measure(
    model_name: str,
    images: int,
    calibration_batches: int,
    calibration_batch: int,
    tuning_size: int,
    batch_size: int,
    targets: tuple[int, ...] = TARGETS,
    variants: tuple[str, ...] = tuple(VARIANTS),
) -> dict:
    """The table: the paper pipeline and each (target, variant), on the first ``images``
    test images."""
    model = load(model_name)
    x, y, calibration = fashion_mnist_benchmark(images, calibration_batches, calibration_batch)
    start = time.perf_counter()
    paper = snnlite.convert(model, calibration, progress=False, tuning_size=tuning_size)
    ltb_seconds = time.perf_counter() - start
    cumulative, tuning = tuning_start(paper, calibration, tuning_size)
    table = {
        "model": model_name,
        "test_images": len(x),
        "calibration": f"{calibration_batches} batches of {calibration_batch} training images "
        f"(LTB channel-wise, {calibration_batches} updates); latency tuning on the first "
        f"{tuning_size} of them",
        "timesteps": list(TIMESTEPS),
        "ann_accuracy": ann_accuracy(model, x, y),
        "ltb_seconds": round(ltb_seconds, 1),
        "paper": _curve(paper, x, y, batch_size),
        "paper_cumulative_pool": _curve(cumulative, x, y, batch_size),
        "max_pool": {"paper": paper.max_pool, "targets": cumulative.max_pool},
        "targets": {},
    }
    print(f"paper      {_row(table['paper'])}", flush=True)
    print(f"paper cum. {_row(table['paper_cumulative_pool'])}", flush=True)
    for target in targets:
        table["targets"][str(target)] = {}
        for label in variants if target == targets[0] else ("default",):
            snn = copy.deepcopy(cumulative)
            start = time.perf_counter()
            tune_for_latency(snn, tuning, target, latency_parts_of(VARIANTS[label]),
                             progress=False)  # fmt: skip
            seconds = time.perf_counter() - start
            entry = _curve(snn, x, y, batch_size)
            # One timing each, taken between long evaluations: indicative only. The cost
            # target is measured in turns over rounds by bench/bench_latency_cost.py.
            entry["tuning_seconds"] = round(seconds, 1)
            entry["conversion_ratio"] = round((ltb_seconds + seconds) / ltb_seconds, 2)
            table["targets"][str(target)][label] = entry
            print(f"T*={target:<3d} {label:<16s} {_row(entry)}", flush=True)
    return table


def _row(entry: dict) -> str:
    return " ".join(f"{100 * entry['accuracy'][str(T)]:6.2f}" for T in TIMESTEPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="zoo classifier, e.g. fmnist_vgg")
    parser.add_argument("--images", type=int, default=10000, help="first N test images")
    parser.add_argument("--calibration-batches", type=int, default=600)
    parser.add_argument("--calibration-batch", type=int, default=100)
    parser.add_argument("--tuning-size", type=int, default=512,
                        help="calibration images the latency tuning sees")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--targets", default=",".join(map(str, TARGETS)),
                        help="target T's of the low-latency tuning")  # fmt: skip
    parser.add_argument(
        "--variants",
        default=",".join(STORED_VARIANTS),
        help=f"latency parts compared at the first target: {', '.join(VARIANTS)}",
    )
    args = parser.parse_args()
    targets = tuple(int(t) for t in args.targets.split(","))
    variants = tuple(args.variants.split(","))
    torch.manual_seed(0)
    table = measure(args.model, args.images, args.calibration_batches,
                    args.calibration_batch, args.tuning_size, args.batch_size,
                    targets, variants)  # fmt: skip
    table["command"] = (
        f"python -m snnlite.zoo.latency_table --model {args.model} --images {args.images} "
        f"--calibration-batches {args.calibration_batches} "
        f"--calibration-batch {args.calibration_batch} --tuning-size {args.tuning_size} "
        f"--targets {args.targets} --variants {args.variants}"
    )
    write_result(f"{args.model}_latency.json", table)


if __name__ == "__main__":
    main()
