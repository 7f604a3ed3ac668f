"""Simulation speed, calibration cost and memory of snnlite, measured in ONE run.

On the same converted VGG-style Fashion-MNIST network and the same input batch it prints
image-steps per second for

  (a) ``snnlite`` ``simulate`` (plain, and in channels-last memory format),
  (b) the dense bound: T plain forward passes of the ANN on the batch (and the same work as
      one batched call in channels-last),
  (c) a naive step-by-step loop over the same network (a straightforward implementation),
  (d) SpikingJelly 2.0's converted model (``LocalThresholdBalancingRecipe``), if installed,

then calibration time over plain ANN inference time on the same batches, and the peak memory
of a simulation at T = 64 against T = 1024 (each in a fresh process). Speed targets are
ratios within this one run, so the machine's speed and load cancel out as far as possible.

    python bench/bench_simulate.py                # batch 500, T = 64 (the reference setting)
    python bench/bench_simulate.py --batch 100 --timesteps 32 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import snnlite
from snnlite.data import fashion_mnist_tensors
from snnlite.graph import SITES


def timings(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall times of each run in every round; the runs take turns within a round.

    In turns, not one after the other: a shared machine's speed drifts over minutes (here
    the dense bound ranged over 1600-3000 image-steps/s between runs). Runs in one round
    meet about the same speed, so a ratio taken per round, then the median over rounds,
    holds even when the absolute rates do not. One warm-up round is not timed.
    """
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def machine() -> str:
    """What the numbers were measured on: cores, torch, threads and the load at the time."""
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{os.cpu_count()} cpus, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load average {load}")  # fmt: skip


def store(stem: str, table: dict, render: Callable[[dict], str], write: bool = True) -> dict:
    """Print a result table as Markdown and, with ``write``, keep it as ``bench/<stem>.json``
    and ``bench/<stem>.md``. Rendered from the table as stored (JSON: integer keys become
    strings), so a test can check that the Markdown is the rendering of the JSON."""
    table = json.loads(json.dumps(table))
    text = render(table)
    print(text)
    if write:
        here = Path(__file__).resolve().parent
        (here / f"{stem}.json").write_text(json.dumps(table, indent=1) + "\n")
        (here / f"{stem}.md").write_text(text)
    return table


def ratio(slower: list[float], faster: list[float]) -> float:
    """Median over rounds of ``slower / faster`` (times of the same rounds)."""
    return statistics.median(s / f for s, f in zip(slower, faster, strict=True))


def load_network() -> tuple[nn.Module, str]:
    from snnlite import zoo

    try:
        return zoo.load("fmnist_vgg"), "zoo fmnist_vgg (trained)"
    except Exception as error:  # weights not there yet: same architecture, BN from data
        warnings.warn(f"zoo weights unavailable ({error}); using an untrained FashionVGG",
                      stacklevel=2)  # fmt: skip
        return zoo.build("fmnist_vgg").eval(), "FashionVGG (untrained)"


class NaiveIF(nn.Module):
    """One IF step per call: the straightforward way to simulate, for comparison."""

    def __init__(self, threshold: torch.Tensor) -> None:
        super().__init__()
        self.theta, self.u = threshold, None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        theta = self.theta.view(-1, *([1] * (z.dim() - 2))) if self.theta.dim() else self.theta
        if self.u is None:
            self.u = (theta / 2).expand_as(z).clone()
        self.u = self.u + z
        spikes = (self.u >= theta).to(z.dtype) * theta
        self.u = self.u - spikes
        return spikes


def naive_loop(snn: snnlite.SpikingNetwork, x: torch.Tensor, steps: int) -> torch.Tensor:
    """Every step: the whole network, the first layer included, one step at a time."""
    net = snn.relux()
    sites = net.get_submodule(SITES)
    for name, site in list(sites.named_children()):
        setattr(sites, name, NaiveIF(site.threshold))
    total = 0
    with torch.no_grad():
        for _ in range(steps):
            total = total + net(x)
    return total / steps


def spikingjelly_runner(model: nn.Module, calibration: list[torch.Tensor]):
    """SpikingJelly 2.0's LTB conversion, and a function that simulates T steps with it."""
    try:
        from spikingjelly.activation_based import ann2snn, functional
    except ImportError:
        return None
    recipe = ann2snn.LocalThresholdBalancingRecipe(dataloader=[(b, None) for b in calibration])
    net = ann2snn.FXConverter(recipe=recipe, device="cpu").convert(copy.deepcopy(model)).eval()

    def run(x: torch.Tensor, steps: int) -> torch.Tensor:
        functional.reset_net(net)
        total = 0
        with torch.no_grad():
            for _ in range(steps):
                total = total + net(x)
        return total / steps

    return run


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at exec. ``ru_maxrss`` does
    not: a child inherits its parent's peak through fork + exec, so a benchmark that had
    grown to 7 GB reported 7 GB for every child it started.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux, macOS: B


def peak_memory_mb(timesteps: int, batch: int) -> float:
    """Peak resident memory (MB) of a fresh process that converts and simulates T steps.

    The conversion is identical for every T, so a peak that does not change with T means the
    simulation's memory is flat in T.
    """
    code = (
        "import torch, snnlite;"
        "from snnlite.data import fashion_mnist_tensors;"
        "from bench.bench_simulate import load_network, peak_rss_mb;"
        "m, _ = load_network(); x, _ = fashion_mnist_tensors('test');"
        f"snn = snnlite.convert(m, [x[:100]], iterations=1, progress=False);"
        f"snn.simulate(x[:{batch}], [{timesteps}], progress=False);"
        "print(peak_rss_mb())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--timesteps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration-batches", type=int, default=60)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    torch.manual_seed(0)

    model, description = load_network()
    images, _ = fashion_mnist_tensors("test")
    train, _ = fashion_mnist_tensors("train")
    x = images[: args.batch]
    calibration = [train[i * 100 : (i + 1) * 100] for i in range(args.calibration_batches)]
    steps, work = args.timesteps, args.batch * args.timesteps
    print(f"network: {description}; batch {args.batch}, T = {steps}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip

    # Calibration cost against plain inference on the same batches.
    def infer() -> None:
        with torch.no_grad():
            for batch in calibration:
                model(batch)

    def calibrate() -> snnlite.SpikingNetwork:
        return snnlite.convert(model, calibration, iterations=len(calibration), progress=False)

    # The first conversion in a process also loads the numba kernels and warms torch: timed
    # on its own ("cold"); the ratio compares warm runs, as the inference baseline is.
    start = time.perf_counter()
    snn = calibrate()
    cold_calibration_time = time.perf_counter() - start
    timed = timings({"inference": infer, "calibration": calibrate}, args.repeats)
    inference_time, calibration_time = min(timed["inference"]), min(timed["calibration"])

    def dense() -> None:
        with torch.no_grad():
            for _ in range(steps):
                model(x)

    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_folded = x.repeat(steps, 1, 1, 1).contiguous(memory_format=torch.channels_last)

    def dense_batched() -> None:
        with torch.no_grad():
            model_cl(x_folded)

    runs = {
        "(a) snnlite simulate": lambda: snn.simulate(x, [steps], progress=False),
        "(a') snnlite simulate, channels_last":
            lambda: snn.simulate(x, [steps], channels_last=True, progress=False),
        "(b) dense bound: T ANN forwards": dense,
        "(b') dense, one batched channels_last call": dense_batched,
        "(c) naive step-by-step loop": lambda: naive_loop(snn, x, steps),
    }  # fmt: skip
    sj = spikingjelly_runner(model, calibration)
    if sj is not None:
        runs["(d) SpikingJelly 2.0 LTB model"] = lambda: sj(x, steps)
    print(f"speed (higher is better; best of {args.repeats} rounds, the runs taken in turns):")
    times = timings(runs, args.repeats)
    results: dict[str, float] = {}
    for name, seconds in times.items():
        results[name] = work / min(seconds)
        print(f"  {name:<44s} {results[name]:>9.0f} image-steps/s")
    if sj is None:
        print("  (d) SpikingJelly not installed: skipped")

    # snnlite's better layout in each round, against each baseline in the same round
    ours = [min(a, b) for a, b in zip(times["(a) snnlite simulate"],
                                      times["(a') snnlite simulate, channels_last"])]  # fmt: skip
    print(f"ratios (median over the {args.repeats} rounds of the ratio within a round):")
    for label, name, target in (
        ("snnlite / dense bound", "(b) dense bound: T ANN forwards", ">= 1.0"),
        ("snnlite / naive loop", "(c) naive step-by-step loop", None),
        ("snnlite / SpikingJelly", "(d) SpikingJelly 2.0 LTB model", ">= 1.3"),
    ):
        if name in times:
            results[label] = ratio(times[name], ours)
            note = f"  (target {target})" if target else ""
            print(f"  {label:<28s} {results[label]:.2f}x{note}")
    calibration = ratio(timed["calibration"], timed["inference"])
    print(f"  calibration / ANN inference  {calibration:.2f}x  (target <= 1.2; best "
          f"{calibration_time:.2f} s vs {inference_time:.2f} s, includes tracing and the "
          f"delay estimate; the first, cold conversion {cold_calibration_time:.2f} s)")  # fmt: skip
    results["calibration_over_inference"] = calibration
    results["cold_calibration_over_inference"] = cold_calibration_time / inference_time

    if not args.skip_memory:
        probe = min(args.batch, 100)  # T = 1024 on the full batch would take minutes
        short, long = peak_memory_mb(64, probe), peak_memory_mb(1024, probe)
        print(
            f"peak memory of convert + simulate (batch {probe}): T=64 {short:.0f} MB, "
            f"T=1024 {long:.0f} MB (ratio {long / max(short, 1e-9):.2f}, flat: 1.0)"
        )
        results.update(memory_T64_mb=short, memory_T1024_mb=long)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
