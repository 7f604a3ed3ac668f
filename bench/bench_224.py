"""Simulation speed at 224 px against the dense bound and SpikingJelly, in ONE run.

For torchvision's MobileNetV2 (its real ImageNet weights, from the zoo) and ResNet-18 (the
architecture with random weights: its weight file is not shipped offline; the speed of a
dense simulation does not depend on the weights' values), each converted with LTB on a few
augmented photo crops, it times on the same batch of crops, in turns within each round
(``bench_simulate.timings``):

  (a) ``snnlite`` ``simulate`` for T steps, the batch as given (NCHW) and with
      ``channels_last=True``,
  (b) the latter without the front (``snnlite.network.FRONT_BYTES``): one tiling for every
      layer, the rule before, where the largest activation sets the work of every call,
  (c) the dense bound: T plain forward passes of the ANN on the batch, as given and with
      model and batch channels-last (the ANN's own best layout on a CPU),
  (d) SpikingJelly 2.0: its LTB conversion of the same ANN, stepped T times. It refuses
      ReLU6 and a functional average pool, so MobileNetV2 reaches it with ReLU for ReLU6
      and the pool as a module (``spikingjelly_twin``: the same layers and sizes; the cost
      of a step does not depend on the cap).

It reports image-steps per second (best round) and, for snnlite's faster layout, the ratios
to (b), (c) and (d) (medians over rounds of ratios within a round); then, from one more run
of (a) and (c) in each layout, where the time goes: milliseconds per image-step in each
kind of layer. Written by::

    python bench/bench_224.py                       # 4 crops, T = 16, 7 rounds, 1 thread
    python bench/bench_224.py --images 8 --timesteps 32 --threads 2

into ``bench/speed_224.json`` and ``bench/speed_224.md``, headed by the command
(``--no-write`` to print only).
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from collections import defaultdict
from collections.abc import Callable

import torch
import torchvision
from bench_simulate import machine, ratio, spikingjelly_runner, store, timings
from torch import nn

import snnlite
from snnlite import network, zoo
from snnlite.data.photos import augmented_crops

CALIBRATION_UPDATES = 8  # LTB updates: thresholds do not change the dense cost
CHANNELS_LAST = torch.channels_last


def models() -> dict[str, nn.Module]:
    """The 224 px models, eval mode."""
    return {
        "mobilenet_v2 (ImageNet weights)": zoo.load("mobilenet_v2_imagenet").eval(),
        "resnet18 (random weights)": torchvision.models.resnet18(weights=None).eval(),
    }


def spikingjelly_twin(model: nn.Module) -> nn.Module:
    """The same layers in a form SpikingJelly 2.0 converts: ReLU6 -> ReLU, and MobileNetV2's
    functional average pool (which it refuses too) as a module in a Sequential."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.ReLU6):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, nn.ReLU())
    if isinstance(model, torchvision.models.MobileNetV2):
        pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        model = nn.Sequential(model.features, *pool, model.classifier).eval()
    return model


def kind(module: nn.Module) -> str:
    """A layer's kind for the profile: convolutions by what they cost, else the class."""
    if isinstance(module, nn.Conv2d):
        if module.groups > 1 and module.groups == module.in_channels:
            return "Conv2d depthwise"
        return "Conv2d 1x1" if module.kernel_size == (1, 1) else "Conv2d"
    return type(module).__name__


def time_per_kind(run: Callable[[], object], work: int) -> dict[str, float]:
    """Milliseconds per image-step spent in each kind of layer during one ``run``, timed
    with torch's global module hooks (every layer call, the IF neurons included), plus
    "outside layers" for the rest (the runner, functions such as the residual adds)."""
    spent: dict[str, float] = defaultdict(float)
    started: dict[int, float] = {}

    def before(module: nn.Module, _inputs: object) -> None:
        started[id(module)] = time.perf_counter()

    def after(module: nn.Module, _inputs: object, _output: object) -> None:
        if not any(True for _ in module.children()):  # layers, not containers
            spent[kind(module)] += time.perf_counter() - started.pop(id(module))

    hooks = [
        nn.modules.module.register_module_forward_pre_hook(before),
        nn.modules.module.register_module_forward_hook(after),
    ]
    try:
        start = time.perf_counter()
        run()
        total = time.perf_counter() - start
    finally:
        for hook in hooks:
            hook.remove()
    spent["outside layers"] = total - sum(spent.values())
    return {name: 1000 * seconds / work for name, seconds in spent.items()}


def measure(model: nn.Module, x: torch.Tensor, steps: int, repeats: int) -> dict[str, dict]:
    """Rates (image-steps/s) and ratios of one model on the batch ``x``."""
    calibration = list(augmented_crops(4 * len(x), seed=3).split(len(x)))
    snn = snnlite.convert(model, calibration, iterations=CALIBRATION_UPDATES, progress=False)
    x_last = x.contiguous(memory_format=CHANNELS_LAST)  # for the dense bound
    model_last = copy.deepcopy(model).to(memory_format=CHANNELS_LAST)
    spikingjelly = spikingjelly_runner(spikingjelly_twin(model), calibration)

    def simulate_before() -> None:
        front = network.FRONT_BYTES
        network.FRONT_BYTES = float("inf")  # the rule before: no front, one tiling for all
        try:
            snn.simulate(x, steps, channels_last=True, progress=False)
        finally:
            network.FRONT_BYTES = front

    def dense(net: nn.Module, batch: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for _ in range(steps):
                    net(batch)

        return run

    runs = {
        "snnlite": lambda: snn.simulate(x, steps, progress=False),
        "snnlite channels-last": lambda: snn.simulate(x, steps, channels_last=True, progress=False),
        "snnlite channels-last, without the front": simulate_before,
        "dense bound": dense(model, x),
        "dense bound channels-last": dense(model_last, x_last),
    }
    if spikingjelly is not None:
        runs["SpikingJelly 2.0"] = lambda: spikingjelly(x, steps)
    times = timings(runs, repeats)
    work = len(x) * steps
    result = {f"{name} (image-steps/s)": work / min(t) for name, t in times.items()}
    # snnlite's faster layout, round by round as the ratios below take it
    best = [min(a, b) for a, b in zip(times["snnlite"], times["snnlite channels-last"])]
    for name in ("dense bound", "dense bound channels-last", "SpikingJelly 2.0"):
        if name in times:
            result[f"snnlite / {name}"] = ratio(times[name], best)
    result["snnlite / before"] = ratio(times["snnlite channels-last, without the front"],
                                       times["snnlite channels-last"])  # fmt: skip
    profiled = ("snnlite", "snnlite channels-last", "dense bound", "dense bound channels-last")
    profile = {name: time_per_kind(runs[name], work) for name in profiled}
    return {"speed": result, "profile": profile}


def markdown(table: dict) -> str:
    """The table as Markdown, headed by the command that wrote it."""
    results = table["results"]
    columns = list(next(iter(results.values()))["speed"])
    lines = [
        f"<!-- written by: {table['command']} -->",
        "",
        "# Simulation speed at 224 px",
        "",
        f"{table['images']} photo crops, T = {table['T']}, {table['rounds']} rounds taken in "
        f"turns. Rates: the best round. Ratios: snnlite in its faster layout (NCHW or "
        "channels-last, round by round) against each other run, medians over rounds (above 1: "
        "snnlite is faster); 'before' is snnlite channels-last against the same without the "
        "front (one tiling for all layers, set by the largest activation). SpikingJelly 2.0 "
        "refuses ReLU6: MobileNetV2 reaches it with ReLU instead (same layers and sizes). "
        f"Machine: {table['machine']}.",
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, result in results.items():
        cells = [f"{v:.1f}" if k.endswith("(image-steps/s)") else f"{v:.2f}x"
                 for k, v in result["speed"].items()]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, result in results.items():
        profile = result["profile"]
        kinds = sorted({k for times in profile.values() for k in times},
                       key=lambda k: -max(t.get(k, 0) for t in profile.values()))  # fmt: skip
        lines += [
            "",
            f"## Where the time goes: {name}",
            "",
            "Milliseconds per image-step in each kind of layer, one more run of each, timed "
            "with torch's module hooks (IFNeuron: snnlite's neurons; 'outside layers': the "
            "rest, such as the residual adds and the runner's own work).",
            "",
            "| layer kind | " + " | ".join(profile) + " |",
            "|---|" + "---|" * len(profile),
        ]
        for k in kinds:
            cells = [f"{times[k]:.2f}" if k in times else "-" for times in profile.values()]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        totals = [f"{sum(times.values()):.2f}" for times in profile.values()]
        lines.append("| all | " + " | ".join(totals) + " |")
    return "\n".join(lines) + "\n"


def crops_run(
    script: str, description: str, timesteps: int, repeats: int
) -> tuple[argparse.Namespace, torch.Tensor, dict]:
    """The command line of the 224 px benches (this one, ``bench_neurons.py``): its arguments
    parsed, the threads set, the batch of crops and the stored table's heading."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--images", type=int, default=4, help="crops simulated together")
    parser.add_argument("--timesteps", type=int, default=timesteps)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = augmented_crops(args.images, seed=4)  # (N, 3, 224, 224)
    argv = [a for a in sys.argv[1:] if a != "--no-write"]
    table = {
        "command": shlex.join(["python", f"bench/{script}", *argv]),
        "images": args.images,
        "T": args.timesteps,
        "rounds": args.repeats,
        "machine": machine(),
        "results": {},
    }
    return args, x, table


def main() -> None:
    description = __doc__.split("\n\n")[0]
    args, x, table = crops_run("bench_224.py", description, timesteps=16, repeats=7)
    for name, model in models().items():
        table["results"][name] = measure(model, x, args.timesteps, args.repeats)
        print(name, table["results"][name], flush=True)
    store("speed_224", table, markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
