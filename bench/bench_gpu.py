"""The 224 px bench on a GPU: speed, peak memory at long T, and a ResNet-34's conversion time.

Written for a session that is lent a GPU; it has run on a CPU only (``--device cpu``, which
``tests/test_bench_speed.py`` runs on small crops), so the CUDA numbers are still to come.
In one run on ``--device``:

  (a) speed: torchvision's MobileNetV2 (ImageNet weights) and ResNet-18 (random weights:
      the cost of a dense step does not depend on the values), converted with LTB on a few
      photo crops; snnlite's ``simulate`` (the torch path: the numba kernels are CPU-only)
      against the dense bound (T plain forward passes of the ANN on the same batch) and
      SpikingJelly 2.0 stepped T times, in turns within each round (``bench_simulate``);
  (b) peak device memory of one ``simulate`` of MobileNetV2 at T = 64 and T = 1024: flat in T
      on a GPU too (``torch.cuda.max_memory_allocated``; not measured on a CPU, where
      ``bench/speed_zoo.md`` has the peak resident memory);
  (c) the conversion time of a ResNet-34 at 224 px (LTB, channel thresholds, ``--updates``
      updates, snnlite's default if not given, over ``--calibration-batches`` batches of
      augmented crops), against
      the paper's report of about 93 s on one consumer GPU.

Written by::

    python bench/bench_gpu.py                 # cuda, 16 crops, T = 32
    python bench/bench_gpu.py --device cpu --images 2 --timesteps 4 --size 64 --no-write

into ``bench/speed_gpu.json`` and ``bench/speed_gpu.md``, headed by the command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable

import torch
import torchvision
from bench_224 import spikingjelly_twin
from bench_simulate import ratio, spikingjelly_runner, store, timings
from torch import nn

import snnlite
from snnlite import zoo
from snnlite.data.photos import augmented_crops

PAPER_RESNET34_SECONDS = 93  # Bu, Li & Yu (2024): conversion of a ResNet-34, one GPU
SPEED_UPDATES = 8  # LTB updates before the speed runs: thresholds do not change the cost


def synchronised(run: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """``run`` that returns only when the device has finished it (CUDA runs asynchronously)."""

    def call() -> None:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return call


def speed(model: nn.Module, x: torch.Tensor, steps: int, repeats: int) -> dict[str, float]:
    """Image-steps/s of snnlite, the dense bound and SpikingJelly 2.0, and the ratios."""
    device = x.device
    crops = augmented_crops(2 * len(x), seed=3, size=x.shape[-1]).to(device)
    calibration = list(crops.split(len(x)))
    snn = snnlite.convert(model, calibration, iterations=SPEED_UPDATES, progress=False)
    spikingjelly = spikingjelly_runner(spikingjelly_twin(model), calibration, device=str(device))

    def dense() -> None:
        with torch.no_grad():
            for _ in range(steps):
                model(x)

    runs = {"snnlite": lambda: snn.simulate(x, steps, progress=False), "dense bound": dense}
    if spikingjelly is not None:
        runs["SpikingJelly 2.0"] = lambda: spikingjelly(x, steps)
    times = timings({name: synchronised(run, device) for name, run in runs.items()}, repeats)
    work = len(x) * steps
    result = {f"{name} (image-steps/s)": work / min(t) for name, t in times.items()}
    for name in ("dense bound", "SpikingJelly 2.0"):
        if name in times:
            result[f"snnlite / {name}"] = ratio(times[name], times["snnlite"])
    return result


def peak_memory_mb(model: nn.Module, x: torch.Tensor, steps: int) -> float | None:
    """Peak device memory (MB) of one ``simulate`` of ``steps`` steps; None off CUDA."""
    if x.device.type != "cuda":
        return None
    snn = snnlite.convert(model, [x], iterations=SPEED_UPDATES, progress=False)
    torch.cuda.synchronize(x.device)
    torch.cuda.reset_peak_memory_stats(x.device)
    snn.simulate(x, steps, progress=False)
    torch.cuda.synchronize(x.device)
    return torch.cuda.max_memory_allocated(x.device) / 2**20


def conversion_seconds(
    device: torch.device, size: int, batches: int, batch: int, updates: int | None
) -> float:
    """Wall time of converting a ResNet-34 (LTB, channel thresholds, ``updates`` LTB updates:
    None is snnlite's default)."""
    model = torchvision.models.resnet34(weights=None).eval().to(device)
    calibration = [augmented_crops(batch, seed=100 + i, size=size).to(device)
                   for i in range(batches)]  # fmt: skip
    start = time.perf_counter()
    snnlite.convert(model, calibration, granularity="channel", iterations=updates,
                    progress=False)  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def markdown(table: dict) -> str:
    """The table as Markdown, headed by the command that wrote it."""
    lines = [
        f"<!-- written by: {table['command']} -->",
        "",
        "# The 224 px bench on a GPU",
        "",
        f"Device: {table['device']}. {table['images']} crops of {table['size']} px, T = "
        f"{table['T']}, {table['rounds']} rounds taken in turns; rates: the best round, "
        "ratios: medians of per-round ratios (above 1: snnlite is faster).",
        "",
    ]
    columns = list(next(iter(table["speed"].values())))
    lines += ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, result in table["speed"].items():
        cells = [f"{v:.1f}" if k.endswith("(image-steps/s)") else f"{v:.2f}x"
                 for k, v in result.items()]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    memory = table["peak memory MB"]
    if memory is not None:
        peaks = ", ".join(f"{mb:.0f} MB at T = {T}" for T, mb in memory.items())
        lines += ["", f"Peak device memory of one MobileNetV2 simulation: {peaks}."]
    conversion = table["conversion"]
    lines += [
        "",
        f"Conversion of a ResNet-34 ({conversion['batches']} batches of {conversion['batch']} "
        f"crops, LTB, channel thresholds, {conversion['updates'] or 'the default number of'} "
        f"updates): {conversion['seconds']:.1f} s, "
        f"against the paper's {PAPER_RESNET34_SECONDS} s on one consumer GPU "
        f"({conversion['seconds'] / PAPER_RESNET34_SECONDS:.2f}x).",
    ]
    return "\n".join(lines) + "\n"


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=16, help="crops simulated together")
    parser.add_argument("--timesteps", type=int, default=32)
    parser.add_argument("--size", type=int, default=224, help="crop size in pixels")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    parser.add_argument("--memory-timesteps", default="64,1024")
    parser.add_argument("--calibration-batches", type=int, default=10)
    parser.add_argument("--calibration-batch", type=int, default=32)
    parser.add_argument("--updates", type=int, default=None, help="LTB updates (conversion)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --device cpu, or on a machine with a GPU")
    x = augmented_crops(args.images, seed=11, size=args.size).to(device)
    models = {
        "mobilenet_v2 (ImageNet weights)": zoo.load("mobilenet_v2_imagenet"),
        "resnet18 (random weights)": torchvision.models.resnet18(weights=None),
    }
    argv = [a for a in sys.argv[1:] if a != "--no-write"]
    table: dict = {
        "command": shlex.join(["python", "bench/bench_gpu.py", *argv]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "images": args.images,
        "size": args.size,
        "T": args.timesteps,
        "rounds": args.repeats,
        "speed": {},
    }
    for name, model in models.items():
        model = model.eval().to(device)
        table["speed"][name] = speed(model, x, args.timesteps, args.repeats)
        print(name, table["speed"][name], flush=True)
    mobilenet = models["mobilenet_v2 (ImageNet weights)"].eval().to(device)
    memory = {int(T): peak_memory_mb(mobilenet, x, int(T))
              for T in args.memory_timesteps.split(",")}  # fmt: skip
    table["peak memory MB"] = None if None in memory.values() else memory
    seconds = conversion_seconds(device, args.size, args.calibration_batches,
                                 args.calibration_batch, args.updates)  # fmt: skip
    table["conversion"] = {"seconds": seconds, "batches": args.calibration_batches,
                           "batch": args.calibration_batch, "updates": args.updates}  # fmt: skip
    return store("speed_gpu", table, markdown, write=not args.no_write)


if __name__ == "__main__":
    main()
