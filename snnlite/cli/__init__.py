"""The ``snnlite`` command line: convert a classifier, a segmenter or a detector and write a
report, export a classifier to NIR, tabulate energy::

    snnlite convert --model zoo:fmnist_vgg --data fashion-mnist --out report/
    snnlite convert --model torchvision:resnet18 --weights IMAGENET1K_V1 \\
        --calibration imagefolder:TRAIN --data imagefolder:VAL --timesteps 8,16,32 \\
        --method ltb --granularity channel --target-timesteps 16 --out report/
    snnlite convert --model zoo:scenes_fcn --data fashion-scenes --timesteps 16,64 --out report/
    snnlite export --model zoo:fmnist_resnet --data fashion-mnist --nir resnet.nir
    snnlite energy --models fmnist_vgg --images 500     # python -m snnlite.energy

The task comes with the model (a zoo entry knows its own; any other model is a classifier
unless ``--task`` says segmentation or detection) and decides the metric: top-1 accuracy,
mIoU or COCO mAP (:mod:`snnlite.cli.scenes` for the dense tasks, on ``fashion-scenes``).
Every step is a library call (:func:`snnlite.convert`, :mod:`snnlite.metrics`,
:mod:`snnlite.zoo.scene_eval`, :mod:`snnlite.energy`, :mod:`snnlite.export`); this package
only parses, loads and writes.
Bad input ends with one line on stderr and status 1 (2 for a malformed command line), and
never leaves a report folder behind. Under ``torchrun`` the processes join one process group:
every calibration batch is split over them (the thresholds equal one process's), each
evaluates its own share of the images, the counts are summed, and only rank 0 writes
(:mod:`snnlite.cli.evaluate`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch.utils.data import DataLoader, Dataset

import snnlite
from snnlite import distributed
from snnlite.checks import check_delay, check_timesteps
from snnlite.cli import report, scenes
from snnlite.cli.evaluate import evaluate, evaluation_loader, is_writer, process_group
from snnlite.cli.sources import (
    SCENES,
    TASKS,
    LoadedModel,
    SourceError,
    check_task_data,
    first,
    load_data,
    load_model,
)
from snnlite.convert import METHODS
from snnlite.energy import __main__ as energy_cli
from snnlite.export import write_nir

__all__ = ["main", "parser"]

PROG = "snnlite"

# Defaults that depend on the task: a scene costs far more than a small image to generate
# and to simulate (96x96 maps all through the network), so the dense tasks use what
# python -m snnlite.zoo.dense_curves measures the zoo with.
DEFAULTS = {
    "classification": {"calibration_images": 3000, "calibration_batch_size": 50,
                       "batch_size": 250},
    "dense": {"calibration_images": 320, "calibration_batch_size": 16, "batch_size": 50},
}  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``prog: error: message (see --help)``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _timesteps(text: str) -> list[int]:
    """``8,16,32`` -> [8, 16, 32]; every T a positive integer."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give positive integers separated by commas, e.g. 8,16,32"
        ) from None
    try:
        return check_timesteps(values)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _delay(text: str) -> Any:
    if text in ("auto", "half"):
        return text
    try:
        return check_delay(float(text) if "." in text else int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _conversion_flags() -> argparse.ArgumentParser:
    """The flags that say which model to convert, on which data, and how."""
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_argument_group("model and data")
    group.add_argument(
        "--model", required=True, metavar="SPEC",
        help="the ANN: zoo:NAME (snnlite's zoo: classifiers such as zoo:fmnist_vgg, "
        "segmenters zoo:scenes_fcn / zoo:scenes_deeplabv3, detectors zoo:scenes_retinanet / "
        "zoo:scenes_fcos), torchvision:NAME (with --weights) or module:function / "
        "path/to/file.py:function returning an nn.Module",
    )  # fmt: skip
    group.add_argument(
        "--weights", metavar="MEMBER",
        help="torchvision weights enum member for torchvision:NAME, e.g. IMAGENET1K_V1 or "
        "DEFAULT ('none': random weights); its preprocessing is used for a classifier's "
        "images (scenes are fed as they are, in [0, 1])",
    )  # fmt: skip
    group.add_argument(
        "--task", choices=("auto", *TASKS), default="auto",
        help="what the model does, which sets the metric and the data it takes: auto (a zoo "
        "model's own task, classification for any other model), classification (top-1), "
        "segmentation (mIoU; the model returns {'out': logits} or logits of the 11 scene "
        "classes) or detection (COCO mAP@[.5:.95] and mAP@.5; a torchvision RetinaNet or "
        f"FCOS, whose network part alone spikes) (default: %(default)s); the dense tasks run "
        f"on --data {SCENES} and are not exported",
    )  # fmt: skip
    group.add_argument(
        "--data", required=True, metavar="SPEC",
        help="evaluation data (its test split): fashion-mnist, imagefolder:PATH or "
        "torchvision:NAME:ROOT (a torchvision data set already on disk) for classifiers; "
        f"{SCENES} (the zoo's pinned FashionScenes splits, 96x96, with masks and boxes) for "
        "segmentation and detection",
    )  # fmt: skip
    group.add_argument(
        "--calibration", metavar="SPEC",
        help="calibration data, same forms as --data (default: the training split of --data; "
        "an image folder is used as it is)",
    )  # fmt: skip
    group.add_argument(
        "--calibration-images", type=_positive, metavar="N",
        help="calibration images: the first N of the calibration data (default: 3000; 320 "
        "training scenes for segmentation and detection)",
    )  # fmt: skip
    group.add_argument(
        "--calibration-batch-size", type=_positive, metavar="N",
        help="images per calibration batch, one threshold update each; under torchrun each "
        "batch is split over the processes (default: 50; 16 scenes for segmentation and "
        "detection)",
    )  # fmt: skip
    group.add_argument(
        "--image-size", type=_positive, default=224, metavar="PIXELS",
        help="crop size of image-folder images when the weights carry no preprocessing "
        "(torchvision's ImageNet evaluation transform; default: %(default)s)",
    )  # fmt: skip
    group = flags.add_argument_group("conversion (snnlite.convert)")
    group.add_argument(
        "--method", choices=METHODS, default="ltb",
        help="threshold recipe: ltb (local threshold balancing), max (max-norm) or robust "
        "(99.9th percentile) (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--granularity", choices=("layer", "channel"), default="channel",
        help="one threshold per layer or per channel (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--calibration-batches", type=_positive, metavar="K",
        help="threshold updates: calibration batches to run, cycling over the calibration "
        "images (default: convert's, 600 for ltb, one pass for max/robust)",
    )  # fmt: skip
    group.add_argument(
        "--target-timesteps", type=_positive, metavar="T",
        help="tune the network for this latency, still without training (thresholds, initial "
        "potentials, readout delay; book chapter 6), for every task; default: the paper's "
        "network",
    )  # fmt: skip
    group.add_argument(
        "--spikes-per-step", type=_positive, default=1, metavar="B",
        help="burst neurons: up to B spikes of theta / B per step, log2(B + 1) bits, every "
        "spike counted in the SOPs (an option beside the paper's binary spikes; book "
        "chapter 6); with --signed-spikes: signed spikes of theta / B; default: %(default)s",
    )  # fmt: skip
    group.add_argument(
        "--signed-spikes", action="store_true",
        help="signed spikes with memory: a neuron may send -theta to take back a spike it "
        "sent, log2(3) = 1.58 bits per step, every spike of either sign counted in the SOPs "
        "(an option beside the paper's binary spikes; book chapter 6)",
    )  # fmt: skip
    group.add_argument(
        "--catch-up", type=_positive, default=1, metavar="B",
        help="with --signed-spikes: a neuron may send or take back up to B spikes in one "
        "step when its input came faster than theta per step, log2(2 B + 1) bits per step; "
        "default: %(default)s",
    )  # fmt: skip
    group.add_argument(
        "--max-pool", choices=("gated", "cumulative", "current"), default=None,
        help="max pools on time-varying inputs: gated by accumulated input, the increment "
        "of the largest accumulated input (cumulative), or per step (the paper's form); "
        "default: gated, cumulative with --target-timesteps",
    )  # fmt: skip
    group = flags.add_argument_group("running")
    group.add_argument(
        "--device", default="cpu",
        help="torch device to run on, e.g. cpu or cuda (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--seed", type=int, default=0,
        help="torch's random seed, set before anything runs (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--no-progress", action="store_true",
        help="no progress bars (they go to stderr and are on by default)",
    )  # fmt: skip
    group.add_argument(
        "--traceback", action="store_true",
        help="on an error, show Python's full traceback instead of one line",
    )  # fmt: skip
    return flags


def parser() -> argparse.ArgumentParser:
    """The command line, every flag explained (``snnlite COMMAND --help``)."""
    cli = energy_cli.doc_parser(__doc__, PROG, _Parser)
    cli.add_argument("--version", action="version", version=f"snnlite {snnlite.__version__}")
    commands = cli.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                  parser_class=_Parser)  # fmt: skip
    flags = _conversion_flags()
    convert = commands.add_parser(
        "convert", parents=[flags],
        help="convert a classifier, segmenter or detector, evaluate it, write a report",
        description="Convert a pretrained classifier, segmenter or one-stage detector into a "
        "spiking network (no training), score the ANN and the SNN at every T (top-1 "
        "accuracy, mIoU or COCO mAP), and write OUT/results.json, OUT/summary.md and the "
        "plots.",
    )  # fmt: skip
    group = convert.add_argument_group("evaluation and report")
    group.add_argument(
        "--timesteps", type=_timesteps, default=[8, 16, 32, 64], metavar="T,T,...",
        help="time steps T to read out, all from one simulation per batch run to the largest "
        "(default: 8,16,32,64)",
    )  # fmt: skip
    group.add_argument(
        "--delay", type=_delay, default="auto",
        help="readout delay of the snn_accuracy_T<T> (snn_miou_T<T>, snn_map_T<T>) keys: auto "
        "(estimated at conversion), half (T/2) or a number of steps; 0 and half are reported "
        "too (default: auto)",
    )  # fmt: skip
    group.add_argument(
        "--images", type=_positive, metavar="N",
        help="evaluate the first N images of --data, or the first N test scenes "
        "(default: all)",
    )  # fmt: skip
    group.add_argument(
        "--batch-size", type=_positive, metavar="N",
        help="images simulated per batch during evaluation, per process under torchrun "
        "(default: 250; 50 scenes for segmentation and detection)",
    )  # fmt: skip
    group.add_argument(
        "--out", type=Path, required=True, metavar="FOLDER",
        help="report folder to create (results.json, summary.md, the metric against T in "
        "accuracy.png, miou.png or map.png, firing_rates.png); written elsewhere first and "
        "renamed when complete",
    )  # fmt: skip
    group.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing --out folder (it is kept until the new report is complete)",
    )  # fmt: skip
    group.add_argument(
        "--no-plots", action="store_true",
        help="skip the figures (they need matplotlib, the 'plots' extra)",
    )  # fmt: skip
    export = commands.add_parser(
        "export", parents=[flags],
        help="convert a classifier and write it as a NIR graph (classifiers only)",
        description="Convert a pretrained classifier and write the spiking network as a NIR "
        "graph (nir 1.0; snnlite.export.to_nir says what survives the export).",
    )  # fmt: skip
    export.add_argument(
        "--nir", type=Path, required=True, metavar="FILE",
        help="the NIR file to write (HDF5, e.g. network.nir); written elsewhere first",
    )  # fmt: skip
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing --nir file",
    )  # fmt: skip
    commands.add_parser(
        "energy", add_help=False, prefix_chars="\0",
        help="energy tables of zoo classifiers (the same as python -m snnlite.energy; "
        "snnlite energy --help lists its flags)",
    )  # fmt: skip
    return cli


def _fail(command: str, error: BaseException) -> int:
    # KeyError's str() quotes its message; every other error's str() is its message.
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    message = " ".join(str(text).split())
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["energy"]:  # one energy command line, python -m snnlite.energy's
        energy_cli.main(argv[1:], prog=f"{PROG} energy")
        return 0
    args = parser().parse_args(argv)
    try:
        if args.command == "convert":
            run_convert(args)
        else:
            run_export(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except (SourceError, ValueError, TypeError, KeyError, OSError, RuntimeError) as error:
        if args.traceback:
            raise
        return _fail(args.command, error)
    return 0


def _prepare(args: argparse.Namespace, loaded: LoadedModel) -> LoadedModel:
    """Refuse data of another task than the model's, before any conversion; give the flags
    whose defaults depend on the task their task's; move the model to ``--device``."""
    check_task_data(args.model, loaded.task, args.data)
    if args.calibration is not None:
        check_task_data(args.model, loaded.task, args.calibration, "--calibration")
    defaults = DEFAULTS["classification" if loaded.task == "classification" else "dense"]
    for name, value in defaults.items():
        if getattr(args, name, value) is None:
            setattr(args, name, value)
    loaded.model.to(args.device)
    return loaded


@dataclass
class _Converted:
    loaded: LoadedModel
    snn: snnlite.SpikingNetwork
    test_set: Dataset
    calibration_images: int


def _converted(args: argparse.Namespace, loaded: LoadedModel) -> _Converted:
    """Calibrate a classifier and convert it; also the evaluation data set."""
    spec = args.calibration or args.data
    calibration_set = first(
        load_data(spec, "train", loaded.transform, args.image_size), args.calibration_images
    )
    test_set = load_data(args.data, "test", loaded.transform, args.image_size)
    # Under torchrun every batch is split over the processes: the global batches are the
    # ones a single process reads, so the thresholds are too.
    batches = distributed.BatchShardSampler(calibration_set, args.calibration_batch_size)
    calibration = DataLoader(calibration_set, batch_sampler=batches)
    snn = snnlite.convert(
        loaded.model, calibration, method=args.method, granularity=args.granularity,
        iterations=args.calibration_batches, max_pool=args.max_pool,
        target_timesteps=args.target_timesteps, spikes_per_step=args.spikes_per_step,
        signed_spikes=args.signed_spikes, catch_up=args.catch_up, progress=not args.no_progress,
    )  # fmt: skip
    return _Converted(loaded, snn, test_set, len(calibration_set))  # type: ignore[arg-type]


def _classify(args: argparse.Namespace, loaded: LoadedModel, delays: list[Any]) -> report.Run:
    """Convert a classifier and count its top-1 answers on this process's share of --data."""
    run = _converted(args, loaded)
    test_set = first(run.test_set, args.images)
    loader = evaluation_loader(test_set, args.batch_size)  # this process's share
    evaluation = evaluate(loaded.model, run.snn, loader, args.timesteps, delays,
                          device=args.device, total=len(loader),
                          progress=not args.no_progress)  # fmt: skip
    assert evaluation.activity is not None, "evaluate records the spikes"
    example = test_set[0][0].unsqueeze(0).to(args.device)
    return report.Run(evaluation.scores(), evaluation.activity, run.snn, loaded.model, example,
                      run.calibration_images)  # fmt: skip


def run_convert(args: argparse.Namespace) -> None:
    """``snnlite convert``: convert, evaluate, write the report folder (rank 0 only)."""
    plots = not args.no_plots
    if plots and not report.plots_available():
        raise SourceError(
            "the plots need matplotlib: pip install 'snnlite[plots]', or pass --no-plots"
        )
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists: choose another --out or pass --overwrite")
    process_group(args.device)
    torch.manual_seed(args.seed)
    loaded = _prepare(args, load_model(args.model, args.weights, args.task))
    delays = list(dict.fromkeys([args.delay, "auto", "half", 0]))
    if loaded.task == "classification":
        run = _classify(args, loaded, delays)
    else:
        run = scenes.run(args, loaded, delays)
    if not is_writer():
        return
    values = report.results(run, args.timesteps, delays, args.delay)
    config = {
        "model": args.model + (f" ({args.weights})" if args.weights else ""),
        "task": loaded.task,
        "data": args.data, "calibration": args.calibration or f"{args.data} (train split)",
        "calibration images": run.calibration_images, "method": args.method,
        "granularity": args.granularity, "target T": args.target_timesteps,
        "spikes per step": args.spikes_per_step, "signed spikes": args.signed_spikes,
        "catch-up (spikes per step)": args.catch_up,
        "delay": args.delay, "command": " ".join(["snnlite", *sys.argv[1:]]),
    }  # fmt: skip
    with report.staging(args.out, args.overwrite) as folder:
        report.write_results(folder, values)
        (folder / "summary.md").write_text(
            report.summary(values, config, args.timesteps, run.scores)
        )
        if plots:
            report.write_plots(folder, run.scores, run.activity, args.timesteps, delays)
    print(f"wrote {args.out}/ (results.json, summary.md{', plots' if plots else ''})")


def run_export(args: argparse.Namespace) -> None:
    """``snnlite export``: convert, then write the network as a NIR graph (rank 0 only)."""
    if args.nir.exists() and not args.overwrite:
        raise FileExistsError(f"{args.nir} exists: choose another --nir or pass --overwrite")
    process_group(args.device)
    torch.manual_seed(args.seed)
    loaded = load_model(args.model, args.weights, args.task)
    if loaded.task != "classification":
        raise SourceError(
            f"{args.model} is a {loaded.task} model: snnlite export writes classifiers "
            "(snnlite convert scores dense models)"
        )
    run = _converted(args, _prepare(args, loaded))
    if not is_writer():
        return
    example = run.test_set[0][0].unsqueeze(0).to(args.device)
    args.nir.parent.mkdir(parents=True, exist_ok=True)
    partial = args.nir.with_name(f".{args.nir.name}.{os.getpid()}.partial")
    try:
        write_nir(run.snn, partial, example)
        os.replace(partial, args.nir)
    finally:
        partial.unlink(missing_ok=True)
    print(f"wrote {args.nir}")
