"""The energy tables of the zoo's models, on the command line (the package's one energy CLI).

    python -m snnlite.energy --models fmnist_vgg fmnist_resnet --images 500
    python -m snnlite.energy --models mobilenet_v2_imagenet --images 64 --photo-size 96
    python -m snnlite.energy --stored          # scene models, from their stored measurements

Classifiers are measured now (LTB channel-wise, delay "auto"): Fashion-MNIST models by top-1
accuracy on the first test images, calibrated on 3000 training images; MobileNetV2 (ImageNet)
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

import torch

import snnlite
from snnlite import zoo
from snnlite.data import augmented_crops, fashion_mnist_tensors
from snnlite.energy import PRESETS, EnergyRow, classification_energy, energy_table, layer_table
from snnlite.zoo.dense_curves import energy_tables

TIMESTEPS = [4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256]


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
    return cli


def measure(args: argparse.Namespace) -> list[EnergyRow]:
    """Convert and measure every model of ``args.models``; print its curve and sources."""
    torch.manual_seed(0)
    if any(name.startswith("fmnist") for name in args.models):  # loaded once for all of them
        test, test_labels = fashion_mnist_tensors("test")
        fashion_calibration = list(fashion_mnist_tensors("train")[0][:3000].split(50))
    rows = []
    for name in args.models:
        model = zoo.load(name)
        if name.startswith("fmnist"):
            calibration, metric, batch = fashion_calibration, "accuracy", 250
            images, labels = test[: args.images], test_labels[: args.images]
        else:  # an ImageNet model: agreement with the ANN on photo crops
            calibration = list(augmented_crops(320, seed=1, size=args.photo_size).split(16))
            images = augmented_crops(args.images, seed=2, size=args.photo_size)
            with torch.no_grad():
                labels = model(images).argmax(dim=1)
            metric, batch = "agreement", 32  # larger images than Fashion-MNIST: smaller batches
        snn = snnlite.convert(model, calibration, progress=False)
        row, activity, curve = classification_energy(
            name, model, snn, images, labels, args.timesteps, batch_size=batch, metric=metric
        )
        rows.append(row)
        print(f"\n## {name}\n{metric} over T: "
              + ", ".join(f"T={T}: {100 * a:.1f}%" for T, a in curve.items()))  # fmt: skip
        sops = activity.sops_at(args.timesteps)
        print("SOPs per image over T: " + ", ".join(f"T={T}: {s:.4g}" for T, s in sops.items()))
        T = row.sop90[0] if row.sop90 else max(args.timesteps)
        print(f"\nper source at T={T}:\n" + layer_table(activity, T), flush=True)
    return rows


def main(argv: list[str] | None = None, prog: str = "python -m snnlite.energy") -> None:
    args = parser(prog).parse_args(argv)
    if args.stored:
        print(energy_tables())
        return
    rows = measure(args)
    for preset in PRESETS.values():
        print(f"\n### constants '{preset.name}': {preset.joules_per_sop * 1e15:g} fJ per SOP, "
              f"{preset.joules_per_mac * 1e12:g} pJ per MAC\n")  # fmt: skip
        print(energy_table(dataclasses.replace(row, preset=preset) for row in rows))


if __name__ == "__main__":
    main()
