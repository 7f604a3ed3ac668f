"""The stored time-to-accuracy table (bench/time_to_accuracy.json, written by
bench/bench_time_to_accuracy.py): its rendering, and what it claims.

The full run (two models, three converters, SpikingJelly's simulation up to the T it needs,
timing rounds) takes about half an hour on 2 cores; the suite holds the stored run: the
Markdown is the script's rendering of the JSON, every T found is the first grid T whose
stored accuracy is within a point of the ANN's, and the low-latency mode answers no later
than the paper's pipeline or SpikingJelly on either model. And it re-runs a slice with the
stored command's settings: on the ResNet, each converter's accuracy at the grid's first
T's, exactly as stored (about 40 s).
"""

from __future__ import annotations

import copy
import json
import math
import shlex

import pytest

from tests.helpers import bench_script

bench = bench_script("bench_time_to_accuracy")

STORED = bench.HERE / "time_to_accuracy.json"


@pytest.fixture(scope="module")
def stored() -> dict:
    return json.loads(STORED.read_text())


def test_the_stored_table_is_the_scripts_rendering_of_its_numbers(stored) -> None:
    assert stored["command"].startswith("python bench/bench_time_to_accuracy.py ")
    assert (bench.HERE / "time_to_accuracy.md").read_text() == bench.markdown(stored)
    assert set(stored["models"]) == {"fmnist_vgg", "fmnist_resnet"}


def test_each_T_is_the_first_on_the_grid_within_a_point(stored) -> None:
    for name, result in stored["models"].items():
        goal = result["ann_accuracy"] - bench.WITHIN
        for label, row in result["rows"].items():
            curve = {int(T): a for T, a in row["curve"].items()}
            measured = sorted(curve)
            assert measured == list(bench.GRID[: len(measured)]), (name, label)
            within = [T for T in measured if curve[T] >= goal]
            assert within[:1] == ([row["T"]] if row["T"] is not None else []), (name, label)
            if row["T"] is not None:
                assert 0 < row["fraction_of_ann_rate"] and row["images_per_second"] > 0


def test_the_low_latency_mode_answers_first(stored) -> None:
    def steps(row: dict) -> float:
        return math.inf if row["T"] is None else row["T"]

    for name, result in stored["models"].items():
        rows = result["rows"]
        tuned = steps(rows["snnlite low latency"])
        assert tuned < math.inf, name
        assert tuned <= steps(rows["snnlite paper (LTB)"]), name
        assert tuned <= steps(rows["SpikingJelly 2.0 (LTB)"]), name


def test_a_slice_reproduces_from_its_command(stored) -> None:
    """The stored command's data and conversions, on the zoo ResNet: snnlite's paper pipeline
    and SpikingJelly's LTB at T = 2 and 4, and the low-latency network tuned for T = 2, give
    the stored accuracies exactly (each converter read out as the script reads it)."""
    import snnlite
    from snnlite.latency import tune_for_latency
    from snnlite.metrics import accuracy_curve
    from snnlite.zoo import load

    args = bench.parser().parse_args(shlex.split(stored["command"])[2:])
    x, y, calibration, _ = bench.inputs(args)
    model = load("fmnist_resnet")
    rows = stored["models"]["fmnist_resnet"]["rows"]
    steps = bench.GRID[:2]

    def measured(label: str, T: int) -> float:
        return rows[label]["curve"][str(T)]

    paper = snnlite.convert(model, calibration, progress=False)
    ours = accuracy_curve(paper, x, y, steps, batch_size=args.batch_size, progress=False)
    net, loader = bench.spikingjelly_ltb(model, calibration)
    theirs = bench.spikingjelly_accuracy_at(net, loader, x, y, args.batch_size)
    for T in steps:
        assert ours[T] == measured("snnlite paper (LTB)", T), T
        assert theirs(T) == measured("SpikingJelly 2.0 (LTB)", T), T

    base, tuning = bench.low_latency_start(model, calibration)
    tuned = tune_for_latency(copy.deepcopy(base), tuning, steps[0], progress=False)
    accuracy = accuracy_curve(tuned, x, y, steps[:1], batch_size=args.batch_size,
                              progress=False)[steps[0]]  # fmt: skip
    assert accuracy == measured("snnlite low latency", steps[0])
