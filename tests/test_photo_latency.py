"""The MobileNetV2 (224 px) low-latency table: stored by its command, and a small slice of it
re-run here (64 px crops, a few of them, short T) through the same code.

The issue's targets for this network (agreement >= 80% at T = 64, >= 95% at T = 256) are
not met yet; what is asserted is what the stored run shows: the tuned network agrees with
the ANN at least as often as the paper's at every T, and its clipped ANN at least as often.
"""

from __future__ import annotations

import json

import pytest

from snnlite.zoo.photo_latency import MODEL, measure
from snnlite.zoo.registry import RESULTS_DIR

STORED = RESULTS_DIR / f"{MODEL}_latency.json"


@pytest.fixture(scope="module")
def stored() -> dict:
    return json.loads(STORED.read_text())


def test_the_stored_table_names_its_command(stored) -> None:
    assert stored["command"].startswith("python -m snnlite.zoo.photo_latency ")
    assert stored["size"] == 224 and stored["test_crops"] >= 24
    steps = [str(T) for T in stored["timesteps"]]
    for entry in [stored["paper"], *stored["targets"].values()]:
        assert sorted(entry["agreement"], key=int) == steps
        assert all(0.0 <= v <= 1.0 for v in entry["agreement"].values())
        sops = [entry["sops_per_image"][T] for T in steps]
        assert all(b > a > 0 for a, b in zip(sops, sops[1:]))  # more steps, more events


def test_the_tuned_network_never_trails_the_papers(stored) -> None:
    paper = stored["paper"]
    for target, entry in stored["targets"].items():
        assert entry["relux_agreement"] >= paper["relux_agreement"], target
        for T, value in entry["agreement"].items():
            assert value >= paper["agreement"][T], (target, T)


def test_a_small_slice_reruns_through_the_same_code(stored) -> None:
    table = measure(calibration_crops=8, test_crops=4, updates=20, size=64, batch=4,
                    timesteps=(8, 16), targets=(8,))  # fmt: skip
    assert table.keys() == stored.keys() - {"command"}
    assert table["targets"]["8"].keys() == next(iter(stored["targets"].values())).keys()
    for entry in [table["paper"], table["targets"]["8"]]:
        assert set(entry["agreement"]) == {"8", "16"}
        assert all(v in {0.0, 0.25, 0.5, 0.75, 1.0} for v in entry["agreement"].values())
    assert table["targets"]["8"]["conversion_ratio"] > 1.0
