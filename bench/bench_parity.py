"""snnlite against SpikingJelly 2.0 on the same model and the same data, side by side.

Both convert the zoo ResNet with local threshold balancing, channel-wise, on the same
calibration batches (by default the whole training set as 600 batches of 100, one update
per batch for both), and both are read out on the same test images at every T, each with
its own automatic delay: SpikingJelly's ``estimate_delay_start`` (one estimate per T, from
the first calibration batch) and snnlite's ``delay="auto"``. snnlite appears twice: the
paper's pipeline (``target_timesteps=None``) and the low-latency mode for each target T
(the paper's network tuned exactly as ``convert(..., target_timesteps=T)`` tunes it).

    python bench/bench_parity.py                    # the stored comparison (bench/parity.md)
    python bench/bench_parity.py --images 500 --calibration-batches 60   # quick look

Writes ``bench/parity.json`` and ``bench/parity.md`` (unless ``--no-write``). The target
(issue 11): snnlite at least matches SpikingJelly, within 0.2 points, at every T.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from bench_simulate import store  # run as a script: bench/ is on sys.path
from torch import nn
from tqdm.auto import tqdm

import snnlite
from snnlite.data import fashion_mnist_benchmark
from snnlite.latency import TUNING_SAMPLES, tune_for_latency
from snnlite.metrics import accuracy_curve, ann_accuracy
from snnlite.zoo import load

HERE = Path(__file__).resolve().parent
TIMESTEPS = (4, 8, 16, 32, 64)


def spikingjelly_ltb(model: nn.Module, calibration: list[torch.Tensor]) -> tuple[nn.Module, list]:
    """SpikingJelly 2.0's LTB conversion of ``model`` (its FXConverter and
    LocalThresholdBalancingRecipe, one update per batch), and the loader it was calibrated on
    (SpikingJelly's delay estimate reads it)."""
    from spikingjelly.activation_based import ann2snn

    loader = [(b, None) for b in calibration]
    recipe = ann2snn.LocalThresholdBalancingRecipe(dataloader=loader)
    net = ann2snn.FXConverter(recipe=recipe, device="cpu").convert(copy.deepcopy(model))
    return net.eval(), loader


def spikingjelly_outputs(net: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The network's output at every step from a reset state: (steps, B, classes)."""
    from spikingjelly.activation_based import functional

    functional.reset_net(net)
    with torch.no_grad():
        return torch.stack([net(x) for _ in range(steps)])


def spikingjelly_accuracy(model: nn.Module, calibration: list[torch.Tensor], x: torch.Tensor,
                          y: torch.Tensor, timesteps: tuple[int, ...],
                          batch_size: int) -> tuple[dict[int, float], dict[int, int]]:  # fmt: skip
    """SpikingJelly's LTB conversion read out at every T with its own per-T delay."""
    from spikingjelly.activation_based import ann2snn

    net, loader = spikingjelly_ltb(model, calibration)
    delays = {T: ann2snn.estimate_delay_start(net, loader, "cpu", T) for T in timesteps}
    correct = dict.fromkeys(timesteps, 0)
    steps = max(timesteps)
    for start in tqdm(range(0, len(x), batch_size), desc="spikingjelly", leave=False):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        outputs = spikingjelly_outputs(net, xb, steps)  # (steps, B, classes)
        for T in timesteps:
            readout = outputs[delays[T] : T].mean(dim=0)
            correct[T] += int((readout.argmax(dim=1) == yb).sum())
    return {T: correct[T] / len(x) for T in timesteps}, delays


def parser() -> argparse.ArgumentParser:
    """The command line (the test that re-runs a slice reads the stored command with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fmnist_resnet")
    parser.add_argument("--images", type=int, default=2000, help="first N test images")
    parser.add_argument("--calibration-batches", type=int, default=600)
    parser.add_argument("--calibration-batch", type=int, default=100)
    parser.add_argument("--targets", default="8,16,64", help="low-latency target T's")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser


def inputs(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor, list]:
    """The model, the test images and labels, and the calibration batches of a command."""
    torch.manual_seed(0)
    model = load(args.model)
    x, y, calibration = fashion_mnist_benchmark(
        args.images, args.calibration_batches, args.calibration_batch
    )
    return model, x, y, calibration


def main() -> None:
    args = parser().parse_args()
    model, x, y, calibration = inputs(args)

    rows: dict[str, dict] = {}
    start = time.perf_counter()
    sj, sj_delays = spikingjelly_accuracy(model, calibration, x, y, TIMESTEPS,
                                          args.batch_size)  # fmt: skip
    rows["SpikingJelly 2.0 (LTB)"] = {"accuracy": sj, "delay": sj_delays,
                                      "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    start = time.perf_counter()
    paper = snnlite.convert(model, calibration, progress=False)
    paper_seconds = time.perf_counter() - start
    tuning = torch.cat(calibration)[:TUNING_SAMPLES]  # what convert(target_timesteps=...) uses
    networks = {"snnlite paper (LTB)": (paper, paper_seconds)}
    for target in (int(t) for t in args.targets.split(",")):
        start = time.perf_counter()
        snn = tune_for_latency(copy.deepcopy(paper), tuning, target, progress=False)
        networks[f"snnlite target T={target}"] = (snn, paper_seconds + time.perf_counter() - start)
    for label, (snn, seconds) in networks.items():
        accuracy = accuracy_curve(snn, x, y, TIMESTEPS, batch_size=args.batch_size)
        rows[label] = {"accuracy": accuracy, "delay": snn.delay_estimate,
                       "conversion_seconds": round(seconds, 1)}  # fmt: skip
        print(label, {T: round(100 * a, 2) for T, a in accuracy.items()}, flush=True)
    table = {
        "command": "python bench/bench_parity.py "
        f"--model {args.model} --images {args.images} "
        f"--calibration-batches {args.calibration_batches} "
        f"--calibration-batch {args.calibration_batch} --targets {args.targets}",
        "ann_accuracy": ann_accuracy(model, x, y),
        "timesteps": list(TIMESTEPS),
        "rows": rows,
    }
    store("parity", table, markdown, write=not args.no_write)


def markdown(table: dict) -> str:
    """The comparison as a Markdown table, with the command that wrote it (from the table
    as stored in JSON, where the T's are strings)."""
    steps = table["timesteps"]
    sj = table["rows"]["SpikingJelly 2.0 (LTB)"]["accuracy"]
    lines = [
        f"<!-- written by: {table['command']} -->",
        "",
        f"ANN accuracy {100 * table['ann_accuracy']:.2f}% on the same test images. "
        "Accuracy (%) at each T; in brackets, the difference to SpikingJelly.",
        "",
        "| conversion | " + " | ".join(f"T={T}" for T in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for label, row in table["rows"].items():
        cells = []
        for T in map(str, steps):
            a = row["accuracy"][T]
            diff = "" if row["accuracy"] is sj else f" ({100 * (a - sj[T]):+.2f})"
            cells.append(f"{100 * a:.2f}{diff}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
