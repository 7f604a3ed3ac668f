"""Measure the low-latency conversion of the real ImageNet MobileNetV2 at its native 224 px.

There is no ImageNet here, so the measure is **agreement**: the share of held-out photo crops
on which the SNN's top-1 class is the ANN's. Both networks start from the same LTB
(channel-wise) conversion, calibrated on augmented crops of the bundled photos
(:func:`snnlite.data.augmented_crops`, one seed); the test crops are other crops of the same
photos (another seed). The paper's network is read out with its automatic delay; the
low-latency one is tuned for each target T on the calibration crops (the default parts:
T-aware thresholds, the potential correction, the delay chosen per T) and read out with its
delay schedule. Every network is simulated once per batch to the largest T, every T read
from that run, with its synaptic operations per image::

    python -m snnlite.zoo.photo_latency

With ``--signed-spikes`` every network sends signed spikes with memory (a neuron may take a
spike back; three values per step, log2 3 = 1.58 bits, every spike of either sign counted in
the synaptic operations) and the table goes to ``mobilenet_v2_imagenet_latency_signed.json``.
Signed networks are also scored through their quantised ANN at each T
(``quantised_agreement``: :meth:`snnlite.SpikingNetwork.quantised_ann`, what the network
computes read out at T with no delay when nothing lags), the ceiling that rounding to T
stairs leaves them.
With ``--signed-spikes --catch-up B`` a neuron may also send (or take back) up to B spikes in
one step when its input came faster than one threshold per step (log2(2 B + 1) bits per
step, each spike counted): ``mobilenet_v2_imagenet_latency_signed_catch_up<B>.json``. With
``--spikes-per-step S`` as well, the signed spikes are finer, theta / S, up to S B of them
in one step (log2(2 S B + 1) bits; a network read out at T rounds every activation to S T
levels, as a binary network would need S T steps for):
``mobilenet_v2_imagenet_latency_signed_b<S>_catch_up<B>.json``.

The result goes to ``snnlite/zoo/results/mobilenet_v2_imagenet_latency.json``, with each
test crop's class (from the ANN, the clipped ANN and the SNN at each T) so that a slice can
be re-run crop by crop, and the time the calibration and each tuning took (``ltb_seconds``,
``tuning_seconds``: the tuning simulates the 224 px network for the corrections and the
delay, most of the run).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import Tensor, nn

import snnlite
from snnlite.data import augmented_crops
from snnlite.latency import LATENCY_PARTS, latency_parts_of, tune_for_latency
from snnlite.zoo.registry import load, write_result

MODEL = "mobilenet_v2_imagenet"
TIMESTEPS = (32, 64, 128, 256)
TARGETS = (64,)
CALIBRATION_SEED, TEST_SEED = 1, 2  # two disjoint draws of crops


def _top1(readout: Tensor) -> Tensor:
    return readout.argmax(dim=1)


def agreement(snn: snnlite.SpikingNetwork, crops: Tensor, reference: Tensor,
               timesteps: tuple[int, ...], batch_size: int) -> dict:  # fmt: skip
    """Top-1 agreement with ``reference`` (the ANN's classes) at every T, and SOPs per image,
    from one simulation per batch; with each crop's class at each T, so that a slice of the
    table can be re-run crop by crop."""
    sops = dict.fromkeys(timesteps, 0.0)
    classes: dict[int, list[int]] = {T: [] for T in timesteps}
    for start in range(0, len(crops), batch_size):
        x = crops[start : start + batch_size]
        runs = snn.simulate(x, list(timesteps), delay="auto", progress=False,
                            record_spikes=True)  # fmt: skip
        per_image = snn.last_activity.sops_at(list(timesteps))
        for T in timesteps:
            classes[T] += _top1(runs[T]).tolist()
            sops[T] += per_image[T] * len(x)
    with torch.no_grad():
        relux_top1 = _top1(snn.relux()(crops))

    def share(top1: Tensor) -> float:  # of the crops whose class is the ANN's
        return int((top1 == reference).sum()) / len(crops)

    entry = {
        "delays": {str(T): snn.auto_delay(T) for T in timesteps},
        "relux_agreement": share(relux_top1),
        "relux_top1": relux_top1.tolist(),
        "agreement": {str(T): share(torch.tensor(classes[T])) for T in timesteps},
        "sops_per_image": {str(T): sops[T] / len(crops) for T in timesteps},
        "top1": {str(T): classes[T] for T in timesteps},
    }
    if snn.signed_spikes:  # the lag-free ceiling at each T: what is left is lag
        quantised = {T: _top1(_in_batches(snn.quantised_ann(T), crops, batch_size))
                     for T in timesteps}  # fmt: skip
        entry["quantised_agreement"] = {str(T): share(q) for T, q in quantised.items()}
        entry["quantised_top1"] = {str(T): q.tolist() for T, q in quantised.items()}
    return entry


@torch.no_grad()
def _in_batches(network: nn.Module, crops: Tensor, batch_size: int) -> Tensor:
    return torch.cat([network(x) for x in crops.split(batch_size)])


def measure(
    calibration_crops: int = 96,
    test_crops: int = 96,
    updates: int = 300,
    size: int = 224,
    batch: int = 8,
    timesteps: tuple[int, ...] = TIMESTEPS,
    targets: tuple[int, ...] = TARGETS,
    model: nn.Module | None = None,
    signed_spikes: bool = False,
    keep: dict | None = None,
    catch_up: int = 1,
    spikes_per_step: int = 1,
) -> dict:
    """The table: the paper's network and one tuned network per target, as agreement with
    the ANN on ``test_crops`` crops. ``model``: the network to convert (default: the zoo's
    MobileNetV2 with its ImageNet weights; tests pass a small one). ``signed_spikes``: every
    network sends signed spikes with memory (:func:`snnlite.convert`), up to ``catch_up``
    of them in one step, of theta / ``spikes_per_step``. ``keep``: a dict that
    receives the paper's network, the test crops and the ANN's classes (for tests that
    score the same network another way)."""
    model = load(MODEL) if model is None else model
    calibration = augmented_crops(calibration_crops, seed=CALIBRATION_SEED, size=size)
    test = augmented_crops(test_crops, seed=TEST_SEED, size=size)
    with torch.no_grad():
        reference = _top1(model(test))  # (n,) the ANN's classes
    start = time.perf_counter()
    paper = snnlite.convert(model, list(calibration.split(batch)), iterations=updates,
                            signed_spikes=signed_spikes, catch_up=catch_up,
                            spikes_per_step=spikes_per_step, progress=False)  # fmt: skip
    ltb_seconds = time.perf_counter() - start
    if keep is not None:
        keep.update(paper=paper, test=test, reference=reference)
    table = {
        "model": MODEL,
        "size": size,
        "test_crops": test_crops,
        "calibration": f"{calibration_crops} augmented photo crops (seed {CALIBRATION_SEED}) "
        f"in batches of {batch}, {updates} LTB updates (channel-wise); the latency tuning "
        f"sees the same crops; test crops: seed {TEST_SEED}",
        "timesteps": list(timesteps),
        "ltb_seconds": round(ltb_seconds, 1),
        "ann_top1": reference.tolist(),
        "paper": agreement(paper, test, reference, timesteps, batch),
        "targets": {},
    }
    if signed_spikes:  # binary tables (one bit per step) have neither key
        table.update(signed_spikes=True, bits_per_step=paper.bits_per_step)
    if catch_up > 1:  # 2 S B + 1 values per step
        table.update(catch_up=catch_up)
    if spikes_per_step > 1:
        table.update(spikes_per_step=spikes_per_step)
    print(f"paper   {_row(table['paper'], timesteps)}", flush=True)
    for target in targets:
        snn = copy.deepcopy(paper)
        start = time.perf_counter()
        tune_for_latency(snn, calibration, target, latency_parts_of(LATENCY_PARTS),
                         progress=False)  # fmt: skip
        seconds = time.perf_counter() - start
        entry = agreement(snn, test, reference, timesteps, batch)
        entry["tuning_seconds"] = round(seconds, 1)
        entry["conversion_ratio"] = round((ltb_seconds + seconds) / ltb_seconds, 2)
        table["targets"][str(target)] = entry
        print(f"T*={target:<4d} {_row(entry, timesteps)}", flush=True)
    return table


def _row(entry: dict, timesteps: tuple[int, ...]) -> str:
    cells = " ".join(f"{100 * entry['agreement'][str(T)]:5.1f}" for T in timesteps)
    return f"{cells}  (clipped ANN {100 * entry['relux_agreement']:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibration-crops", type=int, default=96)
    parser.add_argument("--test-crops", type=int, default=96)
    parser.add_argument("--updates", type=int, default=300, help="LTB updates")
    parser.add_argument("--size", type=int, default=224, help="crop size in pixels")
    parser.add_argument("--batch", type=int, default=8, help="crops per batch")
    parser.add_argument("--timesteps", default=",".join(map(str, TIMESTEPS)))
    parser.add_argument("--targets", default=",".join(map(str, TARGETS)),
                        help="target T's of the low-latency tuning")  # fmt: skip
    parser.add_argument("--signed-spikes", action="store_true",
                        help="signed spikes with memory (1.58 bits per step)")  # fmt: skip
    parser.add_argument("--catch-up", type=int, default=1,
                        help="with --signed-spikes: up to this many spikes per step")  # fmt: skip
    parser.add_argument("--spikes-per-step", type=int, default=1,
                        help="with --signed-spikes: spikes of theta / S")  # fmt: skip
    args = parser.parse_args()
    if (args.catch_up != 1 or args.spikes_per_step != 1) and not args.signed_spikes:
        parser.error("--catch-up and --spikes-per-step need --signed-spikes")
    timesteps = tuple(int(t) for t in args.timesteps.split(","))
    targets = tuple(int(t) for t in args.targets.split(","))
    torch.manual_seed(0)
    table = measure(args.calibration_crops, args.test_crops, args.updates, args.size,
                    args.batch, timesteps, targets, signed_spikes=args.signed_spikes,
                    catch_up=args.catch_up, spikes_per_step=args.spikes_per_step)  # fmt: skip
    table["command"] = (
        f"python -m snnlite.zoo.photo_latency --calibration-crops {args.calibration_crops} "
        f"--test-crops {args.test_crops} --updates {args.updates} --size {args.size} "
        f"--batch {args.batch} --timesteps {args.timesteps} --targets {args.targets}"
        + (" --signed-spikes" if args.signed_spikes else "")
        + (f" --catch-up {args.catch_up}" if args.catch_up != 1 else "")
        + (f" --spikes-per-step {args.spikes_per_step}" if args.spikes_per_step != 1 else "")
    )
    suffix = (
        ("_signed" if args.signed_spikes else "")
        + (f"_b{args.spikes_per_step}" if args.spikes_per_step != 1 else "")
        + (f"_catch_up{args.catch_up}" if args.catch_up != 1 else "")
    )
    write_result(f"{MODEL}_latency{suffix}.json", table)


if __name__ == "__main__":
    main()
