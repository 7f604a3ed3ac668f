"""Measure a scene model's SNN metric over time steps and store it with its zoo entry.

    python -m snnlite.zoo.dense_curves --model scenes_fcn --images 100
    python -m snnlite.zoo.dense_curves --model scenes_fcn --images 100 --target-timesteps 16
    python -m snnlite.zoo.dense_curves --model scenes_fcn --images 100 --target-timesteps 16 \
        --spikes-per-step 2

Segmentation models (FCN, DeepLabV3) convert whole; detectors (RetinaNet, FCOS) convert
their network part only and keep torchvision's pipeline (:mod:`snnlite.detection`). Both are
calibrated with local threshold balancing (channel thresholds, the default 600 updates) on
training scenes, then evaluated on the first ``--images`` test scenes of the zoo's test split
at T = 16 ... 512, with the readout delay ``"auto"`` and ``"half"`` read from the same
simulation (one per batch). The ANN metric (original and clipped) is measured on the same scenes.
The conversion and the scoring are :mod:`snnlite.zoo.scene_eval`'s, which ``snnlite convert``
runs too (``snnlite convert --model zoo:scenes_fcn --data fashion-scenes``).
With ``--target-timesteps T`` the network is tuned for T after calibration
(:mod:`snnlite.latency`, the default parts) and the result is stored under ``"t<T>"`` in
``<model>_latency.json`` beside the paper pipeline's ``<model>.json``; with
``--spikes-per-step B`` (B > 1) too, its neurons send bursts of up to B spikes per step
(log2(B + 1) bits per step, every spike counted in the SOPs), stored under ``"t<T>_b<B>"``;
with ``--signed-spikes`` (and ``--catch-up B``) under ``"t<T>_signed"``
(``"t<T>_signed_catch_up<B>"``).
The same simulations count the SNN's synaptic operations (``record_spikes``); the stored
result also holds the ANN's MACs, so that energy tables of the scene models
(:mod:`snnlite.energy`) come from the stored numbers::

    python -m snnlite.energy --stored      # energy tables of every stored result
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

import torch

from snnlite import energy
from snnlite.neurons import bits_per_step
from snnlite.zoo.registry import RESULTS_DIR, info, list_models, load, snn_accuracy
from snnlite.zoo.scene_eval import (
    TRAIN_SCENES,
    convert_scene_model,
    load_scenes,
    score_scene_model,
)

TIMESTEPS = (16, 32, 64, 128, 256, 512)
DELAYS = ("auto", "half")


def calibration_batches(scenes: int, batch: int) -> list[torch.Tensor]:
    """The first ``scenes`` training scenes in batches (the LTB updates cycle over them)."""
    train = load_scenes(progress=False, **{**TRAIN_SCENES, "num_scenes": scenes})
    return list(train["images"].split(batch))


def measure(
    name: str,
    images: int,
    calibration_scenes: int = 320,
    calibration_batch: int = 16,
    timesteps: tuple[int, ...] = TIMESTEPS,
    batch_size: int = 50,
    progress: bool = True,
    target_timesteps: int | None = None,
    spikes_per_step: int = 1,
    signed_spikes: bool = False,
    catch_up: int = 1,
) -> dict:
    """ANN metric and SNN curves (delay auto and half) of zoo model ``name``, as a dict;
    with ``target_timesteps``, of the network tuned for that T (:mod:`snnlite.latency`);
    with ``spikes_per_step`` B > 1, of burst neurons (up to B spikes per step); with
    ``signed_spikes``, of signed neurons with memory (log2 3 bits per step), that may send
    up to ``catch_up`` B spikes in one step (log2(2 B + 1) bits)."""
    entry = info(name)
    model = load(name)
    test_args = {**entry["extra"]["test_scenes"], "num_scenes": images}
    test = load_scenes(progress=progress, **test_args)
    calibration = calibration_batches(calibration_scenes, calibration_batch)
    started = time.process_time()
    result: dict = {
        "model": name,
        "task": entry["task"],
        "test_scenes": test_args,
        "calibration": f"ltb channel, 600 updates on {calibration_scenes} training scenes in "
        f"batches of {calibration_batch}",
        "timesteps": list(timesteps),
    }
    if target_timesteps is not None:
        result["target_timesteps"] = target_timesteps
    if spikes_per_step > 1:
        result["spikes_per_step"] = spikes_per_step
    if signed_spikes:
        result["signed_spikes"] = True
    if catch_up > 1:
        result["catch_up"] = catch_up
    if spikes_per_step > 1 or signed_spikes:  # binary results (1 bit per step) have no key
        result["bits_per_step"] = bits_per_step(spikes_per_step, signed_spikes, catch_up)
    converted = convert_scene_model(model, entry["task"], calibration, progress=progress,
                                    target_timesteps=target_timesteps,
                                    spikes_per_step=spikes_per_step,
                                    signed_spikes=signed_spikes,
                                    catch_up=catch_up)  # fmt: skip
    scores = score_scene_model(model, converted, entry["task"], test, timesteps, list(DELAYS),
                               batch_size, progress)  # fmt: skip
    metric = "miou" if entry["task"] == "segmentation" else "map"
    result[f"ann_{metric}"] = scores.ann
    result[f"relux_{metric}"] = scores.clipped
    if scores.frozen_group_norm is not None:  # what freezing GroupNorm alone costs the ANN
        result["ann_frozen_group_norm_map"] = scores.frozen_group_norm
    for delay, curve in scores.curves.items():
        result[f"snn_{metric}_{delay}"] = {str(T): v for T, v in curve.items()}
    network, ann_network, example = scores.network, scores.ann_network, scores.example
    # Energy: the ANN's MACs per image, those of the layers that see the analog image, and
    # the SNN's SOPs per image up to each T, all steps counted (the simulations above).
    result["ann_macs"] = energy.ann_macs(ann_network, example).total
    result["analog_macs"] = energy.analog_macs(network.ann, example).total
    sops = network.last_activity.sops_at(timesteps)
    result["snn_sops"] = {str(T): v for T, v in sops.items()}
    result["delay_estimate"] = network.delay_estimate
    if network.delay_schedule:
        result["delay_schedule"] = {str(T): d for T, d in network.delay_schedule.items()}
    result["cpu_minutes"] = round((time.process_time() - started) / 60, 1)
    return result


def headline(value: float | dict) -> float:
    """A stored metric as one number: an mIoU as it is, a detection metric (the dict of
    :func:`snnlite.metrics.detection_map`) as its COCO mAP @[.5:.95]."""
    return value["map"] if isinstance(value, dict) else value


def energy_row(
    result: dict, preset: str | energy.EnergyConstants = "paper", delay: str = "auto"
) -> energy.EnergyRow:
    """The energy row of a stored result: SOP90 / SOP95 on its curve (mIoU, or COCO mAP
    @[.5:.95]) with readout delay ``delay``, FPS/W of the ANN and the SNN."""
    metric = "miou" if result["task"] == "segmentation" else "map"
    curve = {int(T): headline(v) for T, v in result[f"snn_{metric}_{delay}"].items()}
    sops = {int(T): v for T, v in result["snn_sops"].items()}
    return energy.energy_row(
        result["model"], curve, sops, headline(result[f"ann_{metric}"]), result["ann_macs"],
        result["analog_macs"], metric="mIoU" if metric == "miou" else "mAP", preset=preset,
    )  # fmt: skip


def stored_results() -> dict[str, dict]:
    """The stored measurements of this script that carry SOPs: {zoo name: result}."""
    return {name: r for name in list_models() if (r := snn_accuracy(name)) and "snn_sops" in r}


def energy_tables() -> str:
    """Markdown energy tables (every constant set) of the scene models with stored SOPs."""
    results = stored_results().values()
    parts = []
    for preset in energy.PRESETS.values():
        rows = [energy_row(r, preset) for r in results]
        parts.append(f"constants '{preset.name}' ({preset.joules_per_sop * 1e15:g} fJ per SOP, "
                     f"{preset.joules_per_mac * 1e12:g} pJ per MAC):\n\n"
                     + energy.energy_table(rows))  # fmt: skip
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="zoo scene model, e.g. scenes_fcn")
    parser.add_argument("--images", type=int, default=100, help="first N zoo test scenes")
    parser.add_argument("--calibration-scenes", type=int, default=320)
    parser.add_argument("--calibration-batch", type=int, default=16)
    parser.add_argument("--timesteps", type=int, nargs="+", default=list(TIMESTEPS))
    parser.add_argument(
        "--target-timesteps",
        type=int,
        default=None,
        help="tune for this T; stored in <model>_latency.json under 't<T>'",
    )
    parser.add_argument(
        "--spikes-per-step",
        type=int,
        default=1,
        metavar="B",
        help="burst neurons: up to B spikes per step (needs --target-timesteps)",
    )
    parser.add_argument(
        "--signed-spikes",
        action="store_true",
        help="signed spikes with memory, 1.58 bits per step (needs --target-timesteps)",
    )
    parser.add_argument(
        "--catch-up",
        type=int,
        default=1,
        metavar="B",
        help="with --signed-spikes: up to B spikes per step, log2(2 B + 1) bits per step",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args()
    if args.spikes_per_step != 1 and args.target_timesteps is None:
        parser.error("--spikes-per-step is stored with a tuned network: give --target-timesteps")
    if args.signed_spikes and args.target_timesteps is None:
        parser.error("--signed-spikes is stored with a tuned network: give --target-timesteps")
    if args.catch_up != 1 and not args.signed_spikes:
        parser.error("--catch-up needs --signed-spikes")
    torch.set_num_threads(args.threads)
    result = measure(args.model, args.images, args.calibration_scenes, args.calibration_batch,
                     tuple(args.timesteps), target_timesteps=args.target_timesteps,
                     spikes_per_step=args.spikes_per_step,
                     signed_spikes=args.signed_spikes, catch_up=args.catch_up)  # fmt: skip
    result["command"] = "python -m snnlite.zoo.dense_curves " + shlex.join(sys.argv[1:])
    text = json.dumps(result, indent=1)
    print(text)
    if args.no_save:
        return
    if args.target_timesteps is None:
        (RESULTS_DIR / f"{args.model}.json").write_text(text + "\n")
        return
    path = RESULTS_DIR / f"{args.model}_latency.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    burst = f"_b{args.spikes_per_step}" if args.spikes_per_step > 1 else ""
    signed = "_signed" if args.signed_spikes else ""
    signed += f"_catch_up{args.catch_up}" if args.catch_up > 1 else ""
    stored[f"t{args.target_timesteps}{burst}{signed}"] = result
    path.write_text(json.dumps(stored, indent=1) + "\n")


if __name__ == "__main__":
    main()
