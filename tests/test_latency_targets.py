"""The low-latency mode on the zoo's trained classifiers: measured live at each target's
own tolerance, and the stored full-size tables (``python -m snnlite.zoo.latency_table``)
checked against the targets they are meant to show.

Live, with the stored tables' settings (600 LTB batches of 100 training images, tuning on
the first 512, the zoo models as stored): the network tuned for T is scored at T against
the ANN on the same images. The targets are defined on the whole test set; a subset of n
images estimates the gap with a standard error of sqrt(d / n), where d is the share of
images that one of the two gets right and the other wrong. Measured d on the whole test
set: about 3% at T = 8, 2% at T = 16 and under 0.5% at T = 64. Each target is checked on
enough images for that error to be at most a third of its tolerance:

* T = 8 (within 2.5 points): the first 1000 images (standard error <= 0.6 points);
* T = 16 (within 0.5): the whole test set, since a third of 0.5 points would need more
  than 10 000 images (on the whole test set the gap is exact, and the accuracy is the
  stored table's own measurement, re-run: it must give the stored value);
* T = 64 (within 0.3): the first 5000 images (standard error <= 0.1 points).
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import snnlite
from snnlite import zoo
from snnlite.data import fashion_mnist_benchmark
from snnlite.latency import tune_for_latency
from snnlite.zoo import RESULTS_DIR
from snnlite.zoo.dense_curves import headline
from snnlite.zoo.latency_table import tuning_start
from tests.helpers import DETECTION_SHARE, scene_metric

# The targets: points below the ANN, each target's network at its own T, on the whole test
# set, and the first test images each is measured on live (see the module's docstring).
MET_TARGETS = {
    "fmnist_vgg": {"8": 0.025, "16": 0.005, "64": 0.003},
    "fmnist_resnet": {"8": 0.025, "16": 0.005, "64": 0.003},
}
LIVE_IMAGES = {8: 1000, 16: 10000, 64: 5000}
BELOW_PAPER_AT_64 = 0.003
# A live measurement on the whole test set against the stored table: equal on the machine
# that wrote the table; on another CPU the convolutions sum in another order, and the tuning
# can turn that into a few images (seen: 0.15 points on 2000 images).
REPRODUCED = 0.0005
WHOLE_TEST_SET = 10000
CALIBRATION_BATCHES, CALIBRATION_BATCH = 600, 100  # the stored tables' calibration
TUNING_IMAGES = 512  # what convert(target_timesteps=...) tunes on by default


@pytest.fixture(scope="module", params=["fmnist_vgg", "fmnist_resnet"])
def stored_setting(request) -> dict:
    """One zoo classifier converted as the stored table converts it, with its test set."""
    name = request.param
    torch.manual_seed(0)
    model = zoo.load(name)
    x, y, calibration = fashion_mnist_benchmark(WHOLE_TEST_SET, CALIBRATION_BATCHES,
                                                CALIBRATION_BATCH)  # fmt: skip
    paper = snnlite.convert(model, calibration, progress=False)
    cumulative, tuning = tuning_start(paper, calibration, TUNING_IMAGES)
    return {"name": name, "model": model, "x": x, "y": y, "paper": paper,
            "cumulative": cumulative, "tuning": tuning}  # fmt: skip


def right_answers(network, x: torch.Tensor, y: torch.Tensor, T: int | None = None,
                  batch: int = 500) -> torch.Tensor:  # fmt: skip
    """(N,) bool: which images the ANN (``T=None``) or the SNN at T (automatic delay, as the
    tables read it) classifies correctly."""
    right = []
    for start in range(0, len(x), batch):
        images = x[start : start + batch]
        if T is None:
            with torch.no_grad():
                logits = network(images)
        else:
            logits = network.simulate(images, [T], delay="auto", progress=False)[T]
        right.append(logits.argmax(dim=1) == y[start : start + batch])
    return torch.cat(right)


@pytest.mark.parametrize("target", sorted(LIVE_IMAGES))
def test_each_target_comes_within_its_tolerance_of_the_ann(stored_setting, target) -> None:
    s = stored_setting
    n = LIVE_IMAGES[target]
    tolerance = MET_TARGETS[s["name"]][str(target)]
    x, y = s["x"][:n], s["y"][:n]
    tuned = tune_for_latency(copy.deepcopy(s["cumulative"]), s["tuning"], target,
                             progress=False)  # fmt: skip
    snn, ann = right_answers(tuned, x, y, target), right_answers(s["model"], x, y)
    gap = float(ann.double().mean() - snn.double().mean())
    assert gap <= tolerance, (s["name"], target, gap)
    if n < WHOLE_TEST_SET:  # the subset is large enough to stand for the whole set
        discordant = float((ann != snn).double().mean())
        assert (discordant / n) ** 0.5 <= tolerance / 3, (s["name"], target, discordant)
    if n == WHOLE_TEST_SET:  # the stored table's own measurement, re-run
        table = json.loads((RESULTS_DIR / f"{s['name']}_latency.json").read_text())
        stored = table["targets"][str(target)]["default"]["accuracy"][str(target)]
        assert float(ann.double().mean()) == table["ann_accuracy"]
        assert abs(float(snn.double().mean()) - stored) <= REPRODUCED, (s["name"], stored)
    if target == 8:  # the paper's network is far behind there
        paper = right_answers(s["paper"], x, y, 8)
        assert snn.double().mean() >= paper.double().mean() + 0.02, (s["name"], gap)


@pytest.mark.parametrize("name", ["fmnist_vgg", "fmnist_resnet"])
def test_stored_latency_tables_are_complete(name: str) -> None:
    """The stored table has every network at every T, with the command that made it, and
    each target's default network beats the paper's network at its target below 64, and
    falls at most 0.3 points below it at T = 64 (where both are within noise of the ANN)."""
    path = RESULTS_DIR / f"{name}_latency.json"
    if not path.is_file():
        pytest.fail(f"{path.name} is missing: run python -m snnlite.zoo.latency_table "
                    f"--model {name}")  # fmt: skip
    table = json.loads(path.read_text())
    assert table["command"].startswith("python -m snnlite.zoo.latency_table")
    steps = {str(T) for T in table["timesteps"]}
    entries = [table["paper"], *[e for t in table["targets"].values() for e in t.values()]]
    if "paper_cumulative_pool" in table:  # the pool's share alone (tables since the pool)
        entries.append(table["paper_cumulative_pool"])
        assert table["max_pool"] == {"paper": "gated", "targets": "cumulative"}
    for entry in entries:
        assert set(entry["accuracy"]) == steps == set(entry["sops_per_image"])
    for target, by_label in table["targets"].items():
        if int(target) < 64:  # at 64 both are at the ANN: BELOW_PAPER_AT_64 below
            accuracy = by_label["default"]["accuracy"][target]
            assert accuracy >= table["paper"]["accuracy"][target], (target, accuracy)
    assert table["test_images"] == WHOLE_TEST_SET
    for target, gap in MET_TARGETS[name].items():
        accuracy = table["targets"][target]["default"]["accuracy"][target]
        assert table["ann_accuracy"] - accuracy <= gap + 1e-9, (target, accuracy)
    paper_at_64 = table["paper"]["accuracy"]["64"]
    for target, by_label in table["targets"].items():
        tuned = by_label["default"]["accuracy"]["64"]
        assert paper_at_64 - tuned <= BELOW_PAPER_AT_64 + 1e-9, (target, tuned, paper_at_64)


def test_stored_scene_latency_result_beats_the_paper_network_at_its_target() -> None:
    """``python -m snnlite.zoo.dense_curves --model scenes_fcn --images 100
    --target-timesteps 16`` (stored under "t16"): on the same test scenes as the paper
    network's stored curve, the tuned FCN is ahead at its target T with either readout
    delay, its clipped ANN is within a point of the ANN, and it keeps its delay schedule."""
    tuned = json.loads((RESULTS_DIR / "scenes_fcn_latency.json").read_text())["t16"]
    paper = json.loads((RESULTS_DIR / "scenes_fcn.json").read_text())
    assert tuned["target_timesteps"] == 16 and tuned["test_scenes"] == paper["test_scenes"]
    for delay in ("auto", "half"):
        assert tuned[f"snn_miou_{delay}"]["16"] > paper[f"snn_miou_{delay}"]["16"], delay
    assert abs(tuned["relux_miou"] - tuned["ann_miou"]) <= 0.01
    assert set(tuned["delay_schedule"]) == {"4", "8", "16", "32", "64"}


def test_scene_bursts_of_two_are_stored_with_their_price() -> None:
    """``... --target-timesteps 16 --spikes-per-step 2`` (stored under "t16_b2"): bursts of
    up to two spikes per step carry log2(3) = 1.58 bits per step. The FCN with them is
    within one mIoU point of its ANN at T = 16, which binary spikes do not reach ("t16");
    DeepLabV3 is not. The honest price, for both: every spike of a burst is counted, so
    their SOPs at T = 16 exceed the binary network's at 16 by far (at least 1.5x) and come
    within 15% of the binary network's at T = 32, the run whose stairs they climb in half
    the steps."""
    for name in ("scenes_fcn", "scenes_deeplabv3"):
        table = json.loads((RESULTS_DIR / f"{name}_latency.json").read_text())
        burst, binary = table["t16_b2"], table["t16"]
        assert burst["spikes_per_step"] == 2
        assert burst["bits_per_step"] == pytest.approx(1.585, rel=1e-3)
        sops, binary_sops = burst["snn_sops"], binary["snn_sops"]
        assert sops["16"] >= 1.5 * binary_sops["16"], name
        assert abs(sops["16"] / binary_sops["32"] - 1) <= 0.15, name
    fcn = json.loads((RESULTS_DIR / "scenes_fcn_latency.json").read_text())
    assert fcn["t16_b2"]["ann_miou"] - fcn["t16_b2"]["snn_miou_auto"]["16"] <= 0.01
    assert fcn["t16"]["ann_miou"] - fcn["t16"]["snn_miou_auto"]["16"] > 0.01


def test_scene_signed_spikes_meet_the_segmentation_target_with_their_price() -> None:
    """``... --target-timesteps 16 --signed-spikes`` (stored under "t16_signed"): DeepLabV3,
    which binary spikes and bursts of two leave more than a point below its ANN at T = 16,
    comes within one point with signed spikes (1.58 bits per step). The same thresholds (the
    same clipped ANN), and the honest price: a spike taken back is an event too, so at
    T = 16 they cost at least twice the binary network's SOPs at T = 16, more than the
    binary network's at T = 32 (which is further from the ANN)."""
    table = json.loads((RESULTS_DIR / "scenes_deeplabv3_latency.json").read_text())
    signed, binary, burst = table["t16_signed"], table["t16"], table["t16_b2"]
    assert signed["signed_spikes"] is True
    assert signed["bits_per_step"] == pytest.approx(1.585, rel=1e-3)
    assert signed["relux_miou"] == binary["relux_miou"]
    ann = signed["ann_miou"]
    assert ann - signed["snn_miou_auto"]["16"] <= 0.01
    assert ann - binary["snn_miou_auto"]["16"] > 0.01 and ann - burst["snn_miou_auto"]["16"] > 0.01
    sops, binary_sops = signed["snn_sops"], binary["snn_sops"]
    assert sops["16"] >= 2 * binary_sops["16"] and sops["16"] > binary_sops["32"]
    assert ann - binary["snn_miou_auto"]["32"] > 0.01


def _tuned_scene_tables() -> list[tuple[str, str, dict, dict]]:
    """(model, key, tuned result, the paper pipeline's stored result) for every stored scene
    model tuned for a target T."""
    tables = []
    for path in sorted(RESULTS_DIR.glob("scenes_*_latency.json")):
        name = path.name.removesuffix("_latency.json")
        paper = json.loads((RESULTS_DIR / f"{name}.json").read_text())
        for key, tuned in json.loads(path.read_text()).items():
            tables.append((name, key, tuned, paper))
    return tables


def test_tuned_scene_models_never_trail_the_paper_network_at_long_runs() -> None:
    """At T >= 64, on the same test scenes, no tuned scene model is more than 0.3 mIoU (or
    mAP) points below the paper's network (the classifiers' rule) with the automatic delay,
    the readout its tuning chose; the segmentation models with the delay "half" too. (FCOS
    with catching up settles within a step or two, its chosen delays are 0 and 1, so "half"
    throws away half of its window there: stored, not held.)"""
    tables = _tuned_scene_tables()
    assert {name for name, *_ in tables} >= {"scenes_fcn", "scenes_deeplabv3", "scenes_fcos"}
    for name, key, tuned, paper in tables:
        assert tuned["test_scenes"] == paper["test_scenes"], name
        metric = scene_metric(tuned)
        for delay in ("auto", "half") if metric == "miou" else ("auto",):
            for T, value in tuned[f"snn_{metric}_{delay}"].items():
                if int(T) >= 64:
                    gap = headline(paper[f"snn_{metric}_{delay}"][T]) - headline(value)
                    assert gap <= BELOW_PAPER_AT_64 + 1e-9, (name, key, delay, T)


def test_detection_target_is_met_by_catching_up_with_its_price() -> None:
    """``python -m snnlite.zoo.dense_curves --model scenes_fcos --images 100
    --target-timesteps 32 --signed-spikes --catch-up 3`` (stored under
    "t32_signed_catch_up3"): FCOS tuned for T = 32, with signed neurons that may send or take
    back up to three spikes in one step (log2 7 = 2.81 bits per step), reaches at least 94%
    of its ANN's mAP at T = 32, which the paper's network (binary spikes) reaches only at
    T = 64. The price, counted: at T = 32 it spends more SOPs per image than the paper's
    network does at T = 64, so catching up buys steps, not energy (chapter 6 says so)."""
    table = json.loads((RESULTS_DIR / "scenes_fcos_latency.json").read_text())
    tuned = table["t32_signed_catch_up3"]
    paper = json.loads((RESULTS_DIR / "scenes_fcos.json").read_text())
    assert tuned["signed_spikes"] is True and tuned["catch_up"] == 3
    assert tuned["bits_per_step"] == pytest.approx(math.log2(7))
    target = DETECTION_SHARE * headline(tuned["ann_map"])
    assert tuned["ann_map"] == paper["ann_map"] and tuned["test_scenes"] == paper["test_scenes"]
    assert headline(tuned["snn_map_auto"]["32"]) >= target
    assert headline(paper["snn_map_auto"]["32"]) < target <= headline(paper["snn_map_auto"]["64"])
    assert tuned["snn_sops"]["32"] > paper["snn_sops"]["64"]


def test_the_books_chapter_shows_the_stored_scene_tables() -> None:
    """Chapter 6 tabulates every stored tuned scene model as the book build found it: the
    numbers it saved (``notebooks/results/book/06_low_latency.json``) are the stored ones,
    so a regenerated table needs the chapter re-run (``make book``)."""
    book_path = RESULTS_DIR.parents[2] / "notebooks" / "results" / "book" / "06_low_latency.json"
    book = json.loads(book_path.read_text())
    for name, key, tuned, paper in _tuned_scene_tables():
        T, prefix = str(tuned["target_timesteps"]), f"scene_{name.removeprefix('scenes_')}_{key}"
        metric = scene_metric(tuned)
        assert book[f"{prefix}_ann_{metric}"] == headline(tuned[f"ann_{metric}"]), name
        assert book[f"{prefix}_tuned_{metric}"] == headline(tuned[f"snn_{metric}_auto"][T]), name
        assert book[f"{prefix}_paper_{metric}"] == headline(paper[f"snn_{metric}_auto"][T]), name
