"""Simulation speed, calibration cost and memory of snnlite, measured in ONE run.

For each zoo Fashion-MNIST classifier, on the same converted network and the same input
batch, it measures image-steps per second for

  (a) ``snnlite`` ``simulate`` (plain, and in channels-last memory format),
  (b) the dense bound: T plain forward passes of the ANN on the batch (and the same work as
      one batched call in channels-last),
  (c) a naive step-by-step loop over the same network (a straightforward implementation),
  (d) SpikingJelly 2.0's converted model (``LocalThresholdBalancingRecipe``), if installed,

then calibration time over plain ANN inference time on the same batches, and (for the
first model) the peak memory of a simulation at T = 64 against T = 1024, each in a fresh
process. Speed targets are ratios within this one run, so the machine's speed and load
cancel out as far as possible. Written by::

    python bench/bench_simulate.py                # batch 500, T = 64 (the reference setting)
    python bench/bench_simulate.py --batch 100 --timesteps 32 --repeats 1 --no-write

into ``bench/speed_zoo.json`` and ``bench/speed_zoo.md``, headed by the command.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
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


def load_network(name: str = "fmnist_vgg") -> tuple[nn.Module, str]:
    from snnlite import zoo

    try:
        return zoo.load(name), f"zoo {name} (trained)"
    except Exception as error:  # weights not there yet: same architecture, BN from data
        warnings.warn(f"zoo weights unavailable ({error}); using an untrained {name}",
                      stacklevel=2)  # fmt: skip
        return zoo.build(name).eval(), f"{name} (untrained)"


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


def spikingjelly_runner(model: nn.Module, calibration: list[torch.Tensor], device: str = "cpu"):
    """SpikingJelly 2.0's LTB conversion on ``device``, and a function that simulates T steps
    with it."""
    try:
        from spikingjelly.activation_based import ann2snn, functional
    except ImportError:
        return None
    recipe = ann2snn.LocalThresholdBalancingRecipe(dataloader=[(b, None) for b in calibration])
    net = ann2snn.FXConverter(recipe=recipe, device=device).convert(copy.deepcopy(model)).eval()

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


RUNS = {
    "snnlite": "(a) snnlite simulate",
    "snnlite channels-last": "(a') snnlite simulate, channels_last",
    "dense": "(b) dense bound: T ANN forwards",
    "dense batched": "(b') dense, one batched channels_last call",
    "naive": "(c) naive step-by-step loop",
    "spikingjelly": "(d) SpikingJelly 2.0 LTB model",
}
TARGETS = {"snnlite / dense bound": ">= 1.0", "snnlite / SpikingJelly": ">= 1.3",
           "calibration / ANN inference": "<= 1.2"}  # fmt: skip


def measure(name: str, x: torch.Tensor, calibration: list[torch.Tensor], steps: int,
            repeats: int) -> dict:  # fmt: skip
    """Rates, ratios and calibration cost of one zoo model (see the module docstring)."""
    model, description = load_network(name)

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
    cold = time.perf_counter() - start
    timed = timings({"inference": infer, "calibration": calibrate}, repeats)

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
        RUNS["snnlite"]: lambda: snn.simulate(x, [steps], progress=False),
        RUNS["snnlite channels-last"]:
            lambda: snn.simulate(x, [steps], channels_last=True, progress=False),
        RUNS["dense"]: dense,
        RUNS["dense batched"]: dense_batched,
        RUNS["naive"]: lambda: naive_loop(snn, x, steps),
    }  # fmt: skip
    sj = spikingjelly_runner(model, calibration)
    if sj is not None:
        runs[RUNS["spikingjelly"]] = lambda: sj(x, steps)
    times = timings(runs, repeats)
    work = len(x) * steps
    rates = {run: work / min(seconds) for run, seconds in times.items()}
    # snnlite's better layout in each round, against each baseline in the same round
    ours = [min(a, b) for a, b in zip(times[RUNS["snnlite"]],
                                      times[RUNS["snnlite channels-last"]])]  # fmt: skip
    ratios = {
        label: ratio(times[RUNS[run]], ours)
        for label, run in (("snnlite / dense bound", "dense"),
                           ("snnlite / naive loop", "naive"),
                           ("snnlite / SpikingJelly", "spikingjelly"))
        if RUNS[run] in times
    }  # fmt: skip
    ratios["calibration / ANN inference"] = ratio(timed["calibration"], timed["inference"])
    return {
        "network": description,
        "image-steps/s": rates,
        "ratios": ratios,
        "seconds": {"inference": min(timed["inference"]),
                    "calibration": min(timed["calibration"]), "cold calibration": cold},
    }  # fmt: skip


def markdown(table: dict) -> str:
    """The table as Markdown, headed by the command that wrote it (from the table as stored)."""
    lines = [
        f"<!-- written by: {table['command']} -->",
        "",
        "# Simulation speed on the zoo classifiers",
        "",
        f"Batch of {table['batch']} Fashion-MNIST test images, T = {table['T']}, "
        f"{table['rounds']} rounds with the runs taken in turns after a warm-up round. Rates: "
        "the best round. Ratios: snnlite in its faster layout round by round against each "
        "other run, medians over rounds (above 1: snnlite is faster); calibration: LTB over "
        f"{table['calibration_batches']} batches of 100 against ANN inference on the same "
        f"batches. Machine: {table['machine']}.",
        "",
        "| run | " + " | ".join(table["models"]) + " |",
        "|---|" + "---|" * len(table["models"]),
    ]
    results = list(table["models"].values())
    for run in RUNS.values():
        cells = [f"{r['image-steps/s'][run]:.0f}" if run in r["image-steps/s"] else "-"
                 for r in results]  # fmt: skip
        lines.append(f"| {run} (image-steps/s) | " + " | ".join(cells) + " |")
    for label in results[0]["ratios"]:
        cells = [f"{r['ratios'][label]:.2f}x" if label in r["ratios"] else "-" for r in results]
        target = f" (target {TARGETS[label]})" if label in TARGETS else ""
        lines.append(f"| {label}{target} | " + " | ".join(cells) + " |")
    memory = table.get("memory")
    if memory:
        lines += [
            "",
            f"Peak resident memory of a fresh process that converts {memory['network']} and "
            f"simulates a batch of {memory['batch']}: {memory['T=64 MB']:.0f} MB at T = 64, "
            f"{memory['T=1024 MB']:.0f} MB at T = 1024 (flat in T: the same).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="fmnist_vgg,fmnist_resnet")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--timesteps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration-batches", type=int, default=60)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.manual_seed(0)
    images, _ = fashion_mnist_tensors("test")
    train, _ = fashion_mnist_tensors("train")
    x = images[: args.batch]
    calibration = [train[i * 100 : (i + 1) * 100] for i in range(args.calibration_batches)]
    argv = [a for a in sys.argv[1:] if a != "--no-write"]
    table: dict = {
        "command": shlex.join(["python", "bench/bench_simulate.py", *argv]),
        "batch": args.batch,
        "T": args.timesteps,
        "rounds": args.repeats,
        "calibration_batches": args.calibration_batches,
        "machine": machine(),
        "models": {},
    }
    for name in args.models.split(","):
        table["models"][name] = measure(name, x, calibration, args.timesteps, args.repeats)
        print(name, json.dumps(table["models"][name]["ratios"]), flush=True)
    if not args.skip_memory:
        probe = min(args.batch, 100)  # T = 1024 on the full batch would take minutes
        table["memory"] = {"network": load_network()[1], "batch": probe,
                           "T=64 MB": peak_memory_mb(64, probe),
                           "T=1024 MB": peak_memory_mb(1024, probe)}  # fmt: skip
    store("speed_zoo", table, markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
