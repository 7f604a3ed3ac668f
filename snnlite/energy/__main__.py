"""The energy tables of the zoo's models, on the command line (the package's one energy CLI).

    python -m snnlite.energy --models fmnist_vgg fmnist_resnet --images 500
    python -m snnlite.energy --models mobilenet_v2_imagenet --images 64 --photo-size 96
    python -m snnlite.energy --stored          # scene models, from their stored measurements
    python -m snnlite.energy --images 500 --output bench/energy_tables.md

Classifiers are measured now (LTB channel-wise, delay "auto"): Fashion-MNIST models by top-1
accuracy on the first test images, calibrated as the zoo's stored tables are (the first
600 x 100 training images, one LTB update per batch); MobileNetV2 (ImageNet)
by the SNN's top-1 agreement with the ANN on augmented crops of the scikit-image photos (no
labelled ImageNet is at hand offline; calibration: other crops of them, batches of 16).
Scene models (segmentation, detection) take minutes to hours to measure, so ``--stored``
prints the tables of what ``python -m snnlite.zoo.dense_curves`` stored with their zoo entries.

This module sits at the top of the package's layers (it loads zoo models and data sets);
:mod:`snnlite.energy` itself only counts and tabulates.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

import snnlite
from snnlite import zoo
from snnlite.data import augmented_crops, fashion_mnist_benchmark
from snnlite.energy import PRESETS, EnergyRow, classification_energy, energy_table, layer_table
from snnlite.zoo.dense_curves import energy_tables

TIMESTEPS = [4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256]
# Fashion-MNIST calibration: that of snnlite.zoo.snn_table's stored tables (its defaults), so
# the same model reads the same accuracy in both.
CALIBRATION_BATCHES, CALIBRATION_BATCH = 600, 100


def doc_parser(
    doc: str, prog: str, parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """A command line described by its module's docstring ``doc`` (this one's, ``snnlite``'s):
    the first paragraph says what it does, the second, after the flags, gives examples."""
    paragraphs = doc.split("\n\n")
    # A first paragraph ending in "::" introduces the examples as a literal block in the
    # API docs (Sphinx); on the command line it is a sentence.
    description = paragraphs[0].removesuffix("::") + ("." if paragraphs[0].endswith("::") else "")
    return parser_class(
        prog=prog,
        description=description,
        epilog="Examples:\n" + paragraphs[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def parser(prog: str = "python -m snnlite.energy") -> argparse.ArgumentParser:
    """The command line, every flag explained (``--help``); also ``snnlite energy``."""
    cli = doc_parser(__doc__, prog)
    cli.add_argument(
        "--models", nargs="+", default=["fmnist_vgg", "fmnist_resnet"], metavar="NAME",
        help="zoo classifiers to convert and measure now (default: %(default)s); "
        "names starting with 'fmnist' are scored on Fashion-MNIST, others on photo crops",
    )  # fmt: skip
    cli.add_argument(
        "--images", type=int, default=500,
        help="test images per model (Fashion-MNIST: the first N of the test set; "
        "ImageNet models: N augmented photo crops) (default: %(default)s)",
    )  # fmt: skip
    cli.add_argument(
        "--timesteps", type=int, nargs="+", default=TIMESTEPS, metavar="T",
        help="time steps T at which accuracy and SOPs are read, all from one simulation "
        "per batch run to the largest (default: %(default)s)",
    )  # fmt: skip
    cli.add_argument(
        "--photo-size", type=int, default=96, metavar="PIXELS",
        help="side of the photo crops for ImageNet models (default: %(default)s)",
    )  # fmt: skip
    cli.add_argument(
        "--stored", action="store_true",
        help="print the energy tables of the scene models' stored measurements "
        "(snnlite/zoo/results/*.json) instead of measuring classifiers, and stop",
    )  # fmt: skip
    cli.add_argument(
        "--output", metavar="FILE.md",
        help="also write the report to this Markdown file, headed by the command that "
        "regenerates it (how bench/energy_tables.md is made)",
    )  # fmt: skip
    return cli


def measure(args: argparse.Namespace) -> tuple[list[EnergyRow], list[str]]:
    """Convert and measure every model of ``args.models``: its energy row, and a Markdown
    section with its curve and its spike sources."""
    torch.manual_seed(0)
    if any(name.startswith("fmnist") for name in args.models):  # loaded once for all of them
        test, test_labels, fashion_calibration = fashion_mnist_benchmark(
            args.images, CALIBRATION_BATCHES, CALIBRATION_BATCH
        )
    rows, sections = [], []
    for name in args.models:
        model = zoo.load(name)
        if name.startswith("fmnist"):
            calibration, metric, batch = fashion_calibration, "accuracy", 250
            images, labels = test, test_labels
            data = (f"first {len(images)} Fashion-MNIST test images; calibration: the first "
                    f"{CALIBRATION_BATCHES} x {CALIBRATION_BATCH} training images")  # fmt: skip
        else:  # an ImageNet model: agreement with the ANN on photo crops
            calibration = list(augmented_crops(320, seed=1, size=args.photo_size).split(16))
            images = augmented_crops(args.images, seed=2, size=args.photo_size)
            with torch.no_grad():
                labels = model(images).argmax(dim=1)
            metric, batch = "agreement", 32  # larger images than Fashion-MNIST: smaller batches
            data = (f"{len(images)} augmented {args.photo_size}-px crops of the scikit-image "
                    "photos, scored by top-1 agreement with the ANN (no labelled ImageNet "
                    "offline); calibration: 320 other crops, batches of 16")  # fmt: skip
        snn = snnlite.convert(model, calibration, progress=False)
        row, activity, curve = classification_energy(
            name, model, snn, images, labels, args.timesteps, batch_size=batch, metric=metric
        )
        rows.append(row)
        sops = activity.sops_at(args.timesteps)
        T = row.sop90[0] if row.sop90 else max(args.timesteps)
        sections.append("\n".join([
            f"## {name}", "",
            f"{data}; LTB channel-wise thresholds, delay \"auto\".", "",
            "| | " + " | ".join(f"T={t}" for t in curve) + " |",
            "|---|" + "---|" * len(curve),
            f"| {metric} (%) | " + " | ".join(f"{100 * a:.2f}" for a in curve.values()) + " |",
            "| SOPs per image | " + " | ".join(f"{s:.4g}" for s in sops.values()) + " |",
            "", f"Spike sources at T={T}" + (" (SOP90):" if row.sop90 else ":"), "",
            layer_table(activity, T),
        ]))  # fmt: skip
    return rows, sections


def report(args: argparse.Namespace, argv: list[str]) -> str:
    """The whole Markdown report of ``args``, headed by the command that regenerates it."""
    command = "python -m snnlite.energy " + " ".join(argv)
    parts = [f"<!-- written by: {command} -->", "# Energy tables (snnlite.energy)"]
    if args.stored:
        parts += ["Scene models, from the measurements `python -m snnlite.zoo.dense_curves` "
                  "stored with their zoo entries (snnlite/zoo/results/).",
                  energy_tables()]  # fmt: skip
        return "\n\n".join(parts) + "\n"
    rows, sections = measure(args)
    parts += ["Accuracy (or agreement) and SOPs come from the same simulations; SOPs per "
              "image at T include all T steps. MACs by torch.utils.flop_counter. SOP90 / "
              "SOP95: SOPs per image at the first T of the grid where the metric reaches "
              "90% / 95% of the ANN's.", *sections]  # fmt: skip
    for preset in PRESETS.values():
        parts.append(
            f"### constants '{preset.name}': {preset.joules_per_sop * 1e15:g} fJ per "
            f"SOP, {preset.joules_per_mac * 1e12:g} pJ per MAC\n\n"
            + energy_table(dataclasses.replace(row, preset=preset) for row in rows)
        )
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None, prog: str = "python -m snnlite.energy") -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(prog).parse_args(argv)
    text = report(args, argv)
    print(text)
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
