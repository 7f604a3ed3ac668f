"""The MobileNetV2 (224 px) low-latency table: stored by its command with each test crop's
class; a slice re-run here crop by crop with the stored settings (the paper's network on
the first batch), the tuned network's path through the same code at 64 px; and chapter 6
showing the stored numbers.

The issue's targets for this network (agreement >= 80% at T = 64, >= 95% at T = 256) are
not met with binary spikes; what is asserted is what the stored run shows: the tuned network
agrees with the ANN at least as often as the paper's at every T, and its clipped ANN at
least as often. The same table with signed spikes (``--signed-spikes``) is stored beside it
and held to the same checks, plus its own: it changes no threshold of the paper's network
(the same clipped ANN, crop by crop), and its paper network is re-run here on the same
slice, from the same calibration. So is the table of signed neurons that catch up
(``--signed-spikes --catch-up 2``: up to two spikes per step, log2 5 = 2.32 bits), and the
table of finer signed spikes tuned for T = 256 (``--targets 256 --signed-spikes
--spikes-per-step 2 --catch-up 2``: up to four spikes of theta / 2 per step, log2 9 = 3.17
bits), which meets the target at T = 256 with its price stated.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pytest

from snnlite.data import augmented_crops
from snnlite.zoo.photo_latency import CALIBRATION_SEED, MODEL, agreement, measure
from snnlite.zoo.registry import RESULTS_DIR

ROOT = Path(__file__).resolve().parents[1]
STORED = RESULTS_DIR / f"{MODEL}_latency.json"
STORED_SIGNED = RESULTS_DIR / f"{MODEL}_latency_signed.json"
STORED_CATCH_UP = RESULTS_DIR / f"{MODEL}_latency_signed_catch_up2.json"
STORED_FINE = RESULTS_DIR / f"{MODEL}_latency_signed_b2_catch_up2.json"


@pytest.fixture(scope="module")
def stored() -> dict:
    return json.loads(STORED.read_text())


@pytest.fixture(scope="module")
def signed() -> dict:
    return json.loads(STORED_SIGNED.read_text())


@pytest.fixture(scope="module")
def catch_up() -> dict:
    return json.loads(STORED_CATCH_UP.read_text())


@pytest.fixture(scope="module")
def fine() -> dict:
    return json.loads(STORED_FINE.read_text())


@pytest.fixture(params=["binary", "signed", "catch_up", "fine"])
def table(request, stored, signed, catch_up, fine) -> dict:
    """Each stored table in turn, for the checks that hold for all."""
    tables = {"binary": stored, "signed": signed, "catch_up": catch_up, "fine": fine}
    return tables[request.param]


def test_the_stored_table_names_its_command(table) -> None:
    stored = table
    assert stored["command"].startswith("python -m snnlite.zoo.photo_latency ")
    assert stored["size"] == 224 and stored["test_crops"] >= 96
    steps = [str(T) for T in stored["timesteps"]]
    for entry in [stored["paper"], *stored["targets"].values()]:
        assert sorted(entry["agreement"], key=int) == steps
        assert all(0.0 <= v <= 1.0 for v in entry["agreement"].values())
        sops = [entry["sops_per_image"][T] for T in steps]
        assert all(b > a > 0 for a, b in zip(sops, sops[1:]))  # more steps, more events


def test_the_signed_table_is_the_binary_one_with_signed_spikes(stored, signed) -> None:
    """The same command but for the flag, the bits per step stated, the same ANN classes,
    and the same clipped ANN crop by crop (signed spikes change no threshold)."""
    assert signed["command"] == stored["command"] + " --signed-spikes"
    assert signed["signed_spikes"] is True and "signed_spikes" not in stored
    assert signed["bits_per_step"] == pytest.approx(1.58496, abs=1e-5)
    assert signed["ann_top1"] == stored["ann_top1"]
    assert signed["paper"]["relux_top1"] == stored["paper"]["relux_top1"]


def test_the_catch_up_table_is_the_signed_one_with_two_spikes_per_step(signed, catch_up) -> None:
    """The signed command with ``--catch-up 2``, its 2.32 bits per step stated, and the same
    ANN and clipped ANN crop by crop (catching up changes no threshold either)."""
    assert catch_up["command"] == signed["command"] + " --catch-up 2"
    assert catch_up["signed_spikes"] is True and catch_up["catch_up"] == 2
    assert catch_up["bits_per_step"] == pytest.approx(2.32193, abs=1e-5)
    assert catch_up["ann_top1"] == signed["ann_top1"]
    assert catch_up["paper"]["relux_top1"] == signed["paper"]["relux_top1"]


def test_catching_up_meets_the_target_at_64_and_pays_for_it_in_events(signed, catch_up) -> None:
    """The issue's target at T = 64 (agreement >= 80%) is met by the network tuned for 64
    that catches up; the one at T = 256 (>= 95%) is not, so it is not claimed. Against
    signed neurons with one spike per step it agrees at least as often at every T, every
    network; the spikes it no longer owes are sent, so it spends more SOPs at every T."""
    tuned = catch_up["targets"]["64"]
    assert tuned["agreement"]["64"] >= 0.80
    pairs = [(catch_up["paper"], signed["paper"])]
    pairs += [(catch_up["targets"][k], signed["targets"][k]) for k in signed["targets"]]
    for faster, one_per_step in pairs:
        for T, value in faster["agreement"].items():
            assert value >= one_per_step["agreement"][T], T
            assert faster["sops_per_image"][T] > one_per_step["sops_per_image"][T], T


def test_signed_spikes_agree_more_often_at_equal_t_and_at_equal_sops(stored, signed) -> None:
    """With signed spikes every network agrees with the ANN at least as often as with
    binary ones at the same T. They send about twice the events (a spike taken back is
    one more event, and the spike it corrects was one too), so the honest comparison is at
    equal SOPs: the signed network at T against the binary one at 2 T, whose SOPs are
    within 10% of its own; there too it agrees at least as often."""
    pairs = [(signed["paper"], stored["paper"])]
    pairs += [(signed["targets"][k], stored["targets"][k]) for k in stored["targets"]]
    assert len(pairs) == 2
    for with_signed, binary in pairs:
        for T, value in with_signed["agreement"].items():
            assert value >= binary["agreement"][T], T
            if str(2 * int(T)) in binary["agreement"]:
                sops = with_signed["sops_per_image"][T] / binary["sops_per_image"][str(2 * int(T))]
                assert abs(sops - 1) <= 0.10, (T, sops)
                assert value >= binary["agreement"][str(2 * int(T))], T


def test_the_fine_table_is_the_catch_up_one_tuned_for_256_with_spikes_of_half_theta(
    catch_up, fine
) -> None:
    """The catch-up command tuned for T = 256 with ``--spikes-per-step 2``: 9 values per
    step (log2 9 = 3.17 bits) stated, the same ANN classes and the same paper thresholds
    (the same clipped ANN, crop by crop: finer spikes change no threshold of LTB's)."""
    assert fine["command"] == (
        catch_up["command"].replace("--targets 64", "--targets 256") + " --spikes-per-step 2"
    )
    assert fine["signed_spikes"] is True and fine["catch_up"] == 2
    assert fine["spikes_per_step"] == 2
    assert fine["bits_per_step"] == pytest.approx(math.log2(9), abs=1e-12)
    assert fine["ann_top1"] == catch_up["ann_top1"]
    assert fine["paper"]["relux_top1"] == catch_up["paper"]["relux_top1"]


def test_finer_spikes_meet_the_target_at_256_and_pay_for_it_in_events(catch_up, fine) -> None:
    """The issue's target at T = 256 (agreement >= 95%) is met by the network tuned for 256
    with spikes of theta / 2 (the catching-up network of theta-sized spikes, tuned for 64,
    is below it). Its price at 256: more SOPs per image than that network's, and
    log2 9 bits per step. Its quantised ANN (the lag-free ceiling) is stored at every T."""
    tuned = fine["targets"]["256"]
    assert tuned["agreement"]["256"] >= 0.95
    assert catch_up["targets"]["64"]["agreement"]["256"] < 0.95
    assert tuned["sops_per_image"]["256"] > catch_up["targets"]["64"]["sops_per_image"]["256"]
    for entry in (fine["paper"], tuned):
        assert set(entry["quantised_agreement"]) == set(entry["agreement"])


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


def test_the_papers_network_reproduces_at_the_stored_settings(
    stored, signed, catch_up, fine
) -> None:
    """A slice of the stored tables re-run with their own settings: the paper's network
    calibrated as stored (96 crops at 224 px, 300 LTB updates), scored on the first batch of
    the same test crops at the two shortest T's, with binary spikes, then with signed ones,
    then with signed ones that catch up, then with signed spikes of theta / 2 (the same
    calibration: none changes a threshold; half-sized spikes start firing sooner, so that
    network's delay is estimated again, as its conversion does). Each crop's class from
    the ANN, the clipped ANN and the SNN at each T is the stored one; the delays agree within
    1e-6 (relative: float sums in another order on another CPU). About a minute, most of it
    the LTB calibration; the tuning takes several minutes more, and is re-run at 64 px."""
    command = shlex.split(stored["command"])
    settings = {flag: int(command[command.index(flag) + 1])
                for flag in ("--calibration-crops", "--updates", "--size", "--batch")}  # fmt: skip
    crops = settings["--batch"]  # the first batch of the stored test crops
    timesteps = tuple(stored["timesteps"][:2])
    networks: dict = {}
    table = measure(calibration_crops=settings["--calibration-crops"], test_crops=crops,
                    updates=settings["--updates"], size=settings["--size"],
                    batch=settings["--batch"], timesteps=timesteps, targets=(),
                    keep=networks)  # fmt: skip
    assert table["ann_top1"] == stored["ann_top1"][:crops]
    paper = networks["paper"]
    paper.signed_spikes = True  # the same thresholds, signed neurons
    with_signed = agreement(paper, networks["test"], networks["reference"], timesteps,
                            settings["--batch"])  # fmt: skip
    paper.catch_up = catch_up["catch_up"]
    with_catch_up = agreement(paper, networks["test"], networks["reference"], timesteps,
                              settings["--batch"])  # fmt: skip
    paper.spikes_per_step = fine["spikes_per_step"]
    calibration = augmented_crops(settings["--calibration-crops"], seed=CALIBRATION_SEED,
                                  size=settings["--size"])  # fmt: skip
    # As convert() does: on the first 256 calibration samples it saw (LTB cycles the crops).
    probe = calibration.repeat(-(-256 // len(calibration)), 1, 1, 1)[:256]
    paper.delay_estimate = paper.estimate_delay(probe)
    with_finer = agreement(paper, networks["test"], networks["reference"], timesteps,
                           settings["--batch"])  # fmt: skip
    for T in map(str, timesteps):  # the lag-free ceiling: a plain ANN pass, exact
        assert with_finer["quantised_top1"][T] == fine["paper"]["quantised_top1"][T][:crops]
    pairs = ((table["paper"], stored["paper"]), (with_signed, signed["paper"]),
             (with_catch_up, catch_up["paper"]), (with_finer, fine["paper"]))  # fmt: skip
    for fresh, want in pairs:
        assert fresh["relux_top1"] == want["relux_top1"][:crops]
        for T in map(str, timesteps):
            assert fresh["top1"][T] == want["top1"][T][:crops], T
            assert fresh["delays"][T] == pytest.approx(want["delays"][T], rel=1e-6), T


def test_the_stored_agreements_count_the_stored_classes(table) -> None:
    """Every agreement in the table is the share of crops whose stored class is the ANN's."""
    stored = table
    reference = stored["ann_top1"]
    assert len(reference) == stored["test_crops"]

    def share(classes: list[int]) -> float:
        assert len(classes) == len(reference)
        return sum(a == b for a, b in zip(classes, reference)) / len(reference)

    for entry in [stored["paper"], *stored["targets"].values()]:
        assert entry["relux_agreement"] == share(entry["relux_top1"])
        for T, value in entry["agreement"].items():
            assert value == share(entry["top1"][T]), T


def test_the_books_chapter_shows_the_stored_table(stored, signed, catch_up, fine) -> None:
    """Chapter 6 plots and quotes this table as the book build found it; the numbers it
    saved (``notebooks/results/book/06_low_latency.json``) must be the stored ones, so a
    regenerated table needs the chapter re-run (``make book``)."""
    book = json.loads((ROOT / "notebooks" / "results" / "book" / "06_low_latency.json").read_text())
    target, tuned = next(iter(stored["targets"].items()))
    for key, entry in (("paper", stored["paper"]), ("tuned", tuned)):
        assert book[f"photo_{key}_relux_agreement"] == entry["relux_agreement"], key
        for T, value in entry["agreement"].items():
            assert book[f"photo_{key}_agreement_T{T}"] == value, (key, T)
    for prefix, twin in (("signed", signed), ("catch_up", catch_up)):  # the spike options
        twin_target, twin_tuned = next(iter(twin["targets"].items()))
        for key, entry in (("paper", twin["paper"]), ("tuned", twin_tuned)):
            name = f"photo_{prefix}_{key}"
            assert book[f"{name}_relux_agreement"] == entry["relux_agreement"], name
            for T, value in entry["agreement"].items():
                assert book[f"{name}_agreement_T{T}"] == value, (name, T)
                assert book[f"{name}_sops_T{T}"] == entry["sops_per_image"][T], (name, T)
        ratio = twin_tuned["sops_per_image"][twin_target] / tuned["sops_per_image"][twin_target]
        assert book[f"photo_{prefix}_sops_ratio"] == pytest.approx(ratio, rel=1e-12), prefix
    fine_target, fine_tuned = next(iter(fine["targets"].items()))  # finer spikes
    assert book["photo_fine_target"] == int(fine_target)
    assert book["photo_fine_relux_agreement"] == fine_tuned["relux_agreement"]
    for T, value in fine_tuned["agreement"].items():
        assert book[f"photo_fine_agreement_T{T}"] == value, T
        assert book[f"photo_fine_sops_T{T}"] == fine_tuned["sops_per_image"][T], T
        quantised = fine_tuned["quantised_agreement"][T]
        assert book[f"photo_fine_quantised_agreement_T{T}"] == quantised, T
