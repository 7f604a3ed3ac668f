"""The book's notebooks: run with papermill at their CI parameters, then check what they claim.

Each notebook writes the numbers it states to ``<results_dir>/<notebook>.json``; the tests
point ``results_dir`` at a temporary folder and assert the properties the text relies on
(exact identities, bounds, orderings), with margins measured at the CI sizes. Static checks
(parameters cell, stripped outputs, a params.yml entry for every chapter in the toc) run first
and cost nothing.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from tests.conftest import CELL_TIMEOUT
from tests.helpers import book_results

pytestmark = pytest.mark.notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PARAMS = yaml.safe_load((NOTEBOOKS / "params.yml").read_text())
TOC = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
NOTEBOOK_PAGES = [
    Path(entry["file"]).name
    for part in TOC["parts"]
    for entry in part["chapters"]
    if entry["file"].startswith("notebooks/")
]
CHAPTERS = [name for name in NOTEBOOK_PAGES if re.match(r"\d\d_", name)]  # numbered
NBVAL_SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
METRIC_KEY = re.compile(r"^(.*_)?(ann_(accuracy|miou|map)|snn_(accuracy|miou|map)_T\d+)$")


# --- static checks -----------------------------------------------------------------------


@pytest.mark.parametrize("name", NOTEBOOK_PAGES)
def test_notebook_is_stripped_and_parametrised(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), (
        f"{name}: commit notebooks with outputs stripped"
    )
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: exactly one cell tagged 'parameters'"
    assert "results_dir" in tagged[0].source
    assert f'profile_parameters("{name}")' in "".join(cell.source for cell in code)
    if name in CHAPTERS:
        _check_teaching_structure(name, nb)
        assert "ipywidgets" in "".join(cell.source for cell in code), "no widget"
    for profile in ("ci", "book"):
        assert name in PARAMS[profile], f"notebooks/params.yml has no {profile}.{name}"
        unknown = set(PARAMS[profile][name]) - _parameter_names(tagged[0].source)
        assert not unknown, f"{profile}.{name} sets parameters the notebook lacks: {unknown}"


def _check_teaching_structure(name: str, nb: nbformat.NotebookNode) -> None:
    """Objectives, prerequisites, run time, summary, 3-5 exercises with folded solutions."""
    text = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    for heading in ("**Learning objectives.**", "**Prerequisites.**", "**Run time.**",
                    "## Summary", "## Exercises", "## Further reading"):  # fmt: skip
        assert heading in text, f"{name}: no {heading!r}"
    exercises = re.findall(r"^### Exercise \d+ \((.*)\)$", text, flags=re.M)
    assert 3 <= len(exercises) <= 5, f"{name}: {len(exercises)} exercises, want 3 to 5"
    assert text.count("<details>") == text.count("</details>") == len(exercises), (
        f"{name}: every exercise needs one <details> solution (folded in Jupyter too)"
    )
    assert any("predict, then run" in kind for kind in exercises), f"{name}: no predict-and-run"
    assert any("code against the API" in kind for kind in exercises), f"{name}: no API exercise"
    tags = [tag for cell in nb.cells for tag in cell.metadata.get("tags", [])]
    assert "hide-cell" not in tags, f"{name}: hide-cell folds only on the web; use <details>"


def _parameter_names(source: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^(\w+)\s*=", source, flags=re.M)}


# --- execution (the run_notebook fixture is in conftest.py) ------------------------------


def _check_keys(values: dict) -> None:
    for key, value in values.items():
        assert isinstance(value, int | float), (key, value)
        if "ann_" in key or "snn_" in key:
            assert METRIC_KEY.match(key), f"metric key {key!r} breaks the naming convention"


def claims_01_spiking_neurons(r: dict, p: dict) -> None:
    assert r["rate_vs_simulation_max_abs_diff"] == 0.0  # psi_T is the neuron, exactly
    for T in p["T_values"]:
        half, zero = r[f"max_abs_error_u0_half_T{T}"], r[f"max_abs_error_u0_zero_T{T}"]
        assert half <= 1 / (2 * T) + 1e-6 and zero <= 1 / T + 1e-6
        assert half < 0.6 * zero  # rounding vs flooring: half the worst error
        assert abs(r[f"mean_error_u0_half_T{T}"]) < 0.1 * abs(r[f"mean_error_u0_zero_T{T}"])
    # The unevenness example: the same ten inputs, two orders, two outputs.
    assert r["unevenness_relu_of_average"] == pytest.approx(0.2)
    assert r["unevenness_positive_first"] == pytest.approx(0.3)
    assert r["unevenness_negative_first"] == pytest.approx(0.2)
    # The step-by-step figure: it fires, and every reset subtracts exactly theta.
    assert r["schematic_spikes"] >= 2
    assert r["schematic_reset_max_dev"] < 1e-6


def test_01_spiking_neurons(run_notebook) -> None:
    r = run_notebook("01_spiking_neurons")
    _check_keys(r)
    claims_01_spiking_neurons(r, PARAMS["ci"]["01_spiking_neurons"])


def claims_02_error_bound(r: dict, p: dict) -> None:
    Ts = p["T_values"]
    assert r["bound_holds_fraction"] == 1.0 and r["split_holds_fraction"] == 1.0
    errors = [r[f"output_error_T{T}"] for T in Ts]
    assert errors == sorted(errors, reverse=True)  # the error falls with T
    assert all(r[f"tightness_T{T}"] < 1e-2 for T in Ts)  # holds with a wide margin
    assert r[f"agreement_T{max(Ts)}"] >= 0.9
    bounds = [r[f"output_bound_T{T}"] for T in Ts]
    assert bounds == sorted(bounds, reverse=True)  # "both curves fall"
    assert r["error_fall_ratio"] < max(Ts) / min(Ts)  # "more slowly than 1/T"
    assert r["output_intra_relative"] < 1e-4  # the analog output layer adds only rounding
    assert r["margin_orders_min"] >= 2  # "a wide margin"


def test_02_error_bound(run_notebook) -> None:
    r = run_notebook("02_error_bound")
    _check_keys(r)
    claims_02_error_bound(r, PARAMS["ci"]["02_error_bound"])


def claims_03_threshold_balancing(r: dict, p: dict) -> None:
    Ks, Ts = p["K_values"], p["T_values"]
    assert r["theta_smallest_step"] >= 0.0  # theta never decreases
    # "The thresholds rise fast, then slower and slower, but they do not settle".
    assert r["theta_growth_first_tenth"] > 5 * r["theta_growth_last_tenth"]
    assert r["theta_growth_last_tenth"] > 0
    assert r["overshoot_theta"] == pytest.approx(2.0)  # c = 1 jumps past max z = 1
    # Fig. 3b: the conversion error falls with the LTB iterations.
    assert r["clip_error_last"] < 0.5 * r["clip_error_first"]
    assert r["clip_output_error_last"] < r["clip_output_error_first"]
    for dist in ("exponential", "half-normal", "log-normal"):
        for K in Ks:  # P(z > theta_K) ~ 1 / (2K); measured ratios 0.49 .. 0.97
            assert 0.4 < r[f"synthetic_{dist}_exceedance_K{K}"] * 2 * K < 1.5, (dist, K)
    network = [r[f"exceedance_K{K}"] for K in Ks]
    assert network == sorted(network, reverse=True)
    assert all(0.25 < r[f"exceedance_K{K}"] * 2 * K < 4 for K in Ks)  # measured 0.9 .. 1.4
    # LTB fires early where max-norm has hardly started (measured 90% vs 25% at T = 8).
    assert r[f"snn_accuracy_T{min(Ts)}"] > r[f"max_snn_accuracy_T{min(Ts)}"] + 0.2
    # Too few updates clip too much: a low ceiling (measured 59% vs 91%).
    assert r[f"K{min(Ks)}_snn_accuracy_T{max(Ts)}"] < r[f"K{max(Ks)}_snn_accuracy_T{max(Ts)}"]


def test_03_threshold_balancing(run_notebook) -> None:
    r = run_notebook("03_threshold_balancing")
    _check_keys(r)
    claims_03_threshold_balancing(r, PARAMS["ci"]["03_threshold_balancing"])


def claims_04_channels_and_pooling(r: dict, p: dict) -> None:
    T = max(p["T_values"])
    assert r["theorem2_max_abs_diff"] == 0.0
    assert r["window_pool_currents"] == r["window_ann"] == 0.5
    assert r["window_pool_spikes"] > r["window_ann"] + 0.2  # spike pooling over-counts
    # The gate settles on the most active neuron and passes its rate.
    assert r["window_leader_final"] == 0
    assert abs(r["window_pool_gated"] - r["window_ann"]) <= 0.1
    assert r[f"snn_accuracy_T{T}"] >= r["ann_accuracy"] - 0.07
    assert r[f"snn_accuracy_T{T}"] > r[f"current_pool_snn_accuracy_T{T}"]
    assert r[f"snn_accuracy_T{T}"] > r[f"spike_pool_snn_accuracy_T{T}"]
    assert r["channel_threshold_spread"] > 1.5
    # "Channel-wise thresholds gain most at short T".
    assert r["channel_minus_layer_Tmin"] >= r["channel_minus_layer_Tmax"]
    assert r["channel_minus_layer_Tmin"] > 0


def test_04_channels_and_pooling(run_notebook) -> None:
    r = run_notebook("04_channels_and_pooling")
    _check_keys(r)
    claims_04_channels_and_pooling(r, PARAMS["ci"]["04_channels_and_pooling"])


def claims_05_classification(r: dict, p: dict) -> None:
    Ts = p["T_values"]
    # 100 test images: one image is one point. Measured: ANN 95%, SNN 94% at T = 64.
    assert r["snn_accuracy_T64"] >= r["ann_accuracy"] - 0.02
    assert r["vgg_snn_accuracy_T64"] >= r["vgg_ann_accuracy"] - 0.04
    # The estimated delay helps at the shortest T (measured 91.5% vs 85%).
    assert r[f"snn_accuracy_T{min(Ts)}"] >= r[f"nodelay_snn_accuracy_T{min(Ts)}"]
    assert r["own_snn_accuracy_T64"] >= r["own_ann_accuracy"] - 0.04
    assert 2 < r["delay_estimate"] < 20
    assert r["delay_gain_Tmin"] >= r["delay_gain_Tmax"]  # "helps most at small T"


def test_05_classification(run_notebook) -> None:
    r = run_notebook("05_classification")
    _check_keys(r)
    claims_05_classification(r, PARAMS["ci"]["05_classification"])


def test_06_low_latency(run_notebook) -> None:
    r = run_notebook("06_low_latency")
    _check_keys(r)
    claims_06_low_latency(r, PARAMS["ci"]["06_low_latency"])


def claims_06_low_latency(r: dict, p: dict) -> None:
    Ts, error_T, target = p["T_values"], p["error_T"], p["targets"][0]
    T0, T_max = min(Ts), max(Ts)

    # Why long T: the intra-layer error splits exactly into quantisation + clipping (their
    # supports are disjoint); quantisation obeys its bound and falls with T; it dominates at
    # the smallest T (measured 37x) and falls below clipping at the largest.
    clip = r["channel_clip_mse"]
    quant = [r[f"channel_quant_mse_T{T}"] for T in error_T]
    for T in error_T:
        total = r[f"channel_quant_mse_T{T}"] + clip
        assert r[f"channel_total_mse_T{T}"] == pytest.approx(total, rel=1e-9, abs=1e-15)
        assert r[f"channel_quant_mse_T{T}"] <= r[f"channel_quant_bound_T{T}"] * (1 + 1e-9)
    assert quant == sorted(quant, reverse=True)
    scaled = [q * T**2 for q, T in zip(quant, error_T)]  # "shrinks like 1/T^2"
    assert max(scaled) < 2 * min(scaled), scaled
    assert quant[0] > 10 * clip and quant[-1] < clip
    assert r[f"channel_low_stairs_T{min(error_T)}"] > 0.25  # "a large share": measured 43%

    # The T-aware threshold: at least as good as a plain grid, below LTB's at the smallest T,
    # growing with T towards the largest current, in every layer.
    for T in error_T:
        assert r[f"channel_star_objective_T{T}"] <= r[f"channel_grid_min_T{T}"] * (1 + 1e-6)
    stars = [r[f"channel_theta_star_T{T}"] for T in error_T]
    assert stars == sorted(stars) and stars[0] < r["channel_theta_ltb"]
    layers = sorted((k.removesuffix("_position") for k in r if k.endswith("_position")),
                    key=lambda name: r[f"{name}_position"])  # fmt: skip
    assert len(layers) >= 4
    for name in layers:
        ratios = [r[f"{name}_theta_ratio_T{T}"] for T in error_T]
        assert ratios == sorted(ratios), (name, ratios)
        assert ratios[0] < 1, name
        # never above the largest current; close to it at the largest T (measured 0.95+)
        assert 0.8 * r[f"{name}_max_ratio"] < ratios[-1] <= r[f"{name}_max_ratio"], name

    # A charge c moves the mean rate by s c / T, a constant current b by s b (any T).
    for T in error_T:
        assert r[f"charge_shift_ratio_T{T}"] == pytest.approx(1, abs=0.05)
        assert r[f"bias_shift_ratio_T{T}"] == pytest.approx(1, abs=0.05)

    # Mean errors on test images: the first layer starts small (window from t = 0) and is
    # barely changed; every later layer is cut, most several times over (measured 2-11x).
    first, later = layers[0], layers[1:]
    smallest_later = min(r[f"{name}_mean_error_before"] for name in later)
    assert r[f"{first}_mean_error_before"] < 0.5 * smallest_later
    for before, after in (("before", "potential"), ("bias_window_before", "bias")):
        ratio = {n: r[f"{n}_mean_error_{after}"] / r[f"{n}_mean_error_{before}"]
                 for n in layers}  # fmt: skip
        assert 0.7 < ratio[first] < 1.3, (after, ratio)
        assert all(ratio[n] < 0.7 for n in later), (after, ratio)
        assert sorted(ratio[n] for n in later)[len(later) // 2] < 0.4, (after, ratio)

    # The delay: the minimum of the label-free criterion, within a few points of the best.
    assert r["chosen_delay"] == r["delay_mse_argmin"]
    assert r["chosen_delay_accuracy"] >= r["best_delay_accuracy"] - 0.05

    # Curves (100 test images: one image is one point). Measured at T = 4: paper 79%,
    # thresholds 71%, thresholds+bias 69%, default 86% (book size: 71, 73, 78, 88%).
    def acc(prefix: str, T: int) -> float:
        return r[f"{prefix}_snn_accuracy_T{T}"]

    assert acc("default", T0) > acc("paper", T0) + 0.04  # well ahead at the smallest T
    assert acc("default", T0) > acc("thresholds", T0) + 0.05  # thresholds alone: far below
    assert acc("default", T0) > acc("thresholds_bias", T0) + 0.05  # behind below the target
    for T in Ts:
        if T >= target:  # level with the default from the target on (within 5 images of
            # 100: at T = 8 the gap measured 1 point on one CPU and 4 on another, whose
            # convolutions round differently and so tune slightly different thresholds)
            assert abs(acc("default", T) - acc("thresholds_bias", T)) <= 0.05, T
    for prefix in ("paper", "thresholds", "thresholds_bias", "default"):
        assert acc(prefix, T_max) >= r["ann_accuracy"] - 0.05, prefix

    # Energy at equal accuracy. SOPs per step of the tuned networks against the paper's:
    # measured -3% .. +5% here, +7% .. +26% at the book's size (lower thresholds); whatever
    # they cost, the default reaches 90% / 95% of the ANN no later (fewer SOPs if sooner).
    for prefix in ("thresholds", "thresholds_bias", "default"):
        for T in Ts:
            assert 0.7 < r[f"{prefix}_sops_T{T}"] / r[f"paper_sops_T{T}"] < 1.5, (prefix, T)
    for level in ("sop90", "sop95"):
        if f"paper_{level}" in r:
            assert r[f"default_{level}_T"] <= r[f"paper_{level}_T"], level
            if r[f"default_{level}_T"] < r[f"paper_{level}_T"]:
                assert r[f"default_{level}"] < r[f"paper_{level}"], level

    # Bursts of B spikes per step, tuned for target / B: the same stairs in B times fewer
    # steps. At T they send about the spikes (SOPs) the binary network sends at B T
    # (measured within 1%; allowed 10%), and at the smallest T they are ahead of it.
    B = r["burst_spikes_per_step"]
    assert B == 2 and r["burst_target"] == max(1, target // B)
    for T in Ts:
        if B * T in Ts:
            ratio = r[f"burst_sops_T{T}"] / r[f"default_sops_T{B * T}"]
            assert 0.9 < ratio < 1.1, (T, ratio)
    assert acc("burst", T0) >= acc("default", T0), (acc("burst", T0), acc("default", T0))

    # Signed spikes: the one-neuron demo (a strong start, then a negative input; exact
    # binary fractions) sends net what its input so far asks for, the binary neuron keeps
    # the surplus of the start; on the VGG a share of the events take a spike back, and at
    # the longest T it is as close to the ANN as the others.
    assert r["signed_demo_net_spikes"] == r["signed_demo_input"]
    surplus = r["signed_demo_binary_spikes"] - r["signed_demo_net_spikes"]
    assert surplus > 0 and r["signed_demo_taken_back"] == surplus
    assert r["signed_target"] == target and 0 < r["signed_negative_share"] < 0.5
    assert acc("signed", T_max) >= r["ann_accuracy"] - 0.05
    # "On this shallow VGG, signed spikes buy little or nothing" (measured: at most 1 point
    # ahead of the binary network at any T, up to 3 points behind).
    for T in Ts:
        assert acc("signed", T) <= acc("default", T) + 0.03, T

    # MobileNetV2 (the stored photo table, when present): deeper than the VGG; tuned, its
    # clipped ANN agrees at least as often as the paper's and more often than its SNN at
    # every T ("the thresholds are no longer what limits it"); the SNN never trails the
    # paper's and some agreement is still missing at the largest T.
    if "photo_sites" in r:
        assert r["photo_sites"] > len(layers)
        photo = sorted(int(k.rsplit("_T", 1)[1]) for k in r
                       if k.startswith("photo_tuned_agreement_T"))  # fmt: skip
        relux = r["photo_tuned_relux_agreement"]
        assert relux >= r["photo_paper_relux_agreement"]
        for T in photo:
            tuned = r[f"photo_tuned_agreement_T{T}"]
            assert r[f"photo_paper_agreement_T{T}"] <= tuned < relux, T
        # With signed spikes (the stored twin table): every network agrees at least as
        # often at every T, the deep chain settling sooner; the SOPs ratio is stated.
        if "photo_signed_sops_ratio" in r:
            for key in ("paper", "tuned"):
                for T in photo:
                    signed = r[f"photo_signed_{key}_agreement_T{T}"]
                    assert signed >= r[f"photo_{key}_agreement_T{T}"], (key, T)
            assert r["photo_signed_sops_ratio"] > 1
        # Catching up (the third stored table): the tuned network agrees at least as often
        # as the signed one at every T and spends more SOPs than the binary one ("x times
        # the binary network's"); the targets' "(met)" / "(not met)" are computed.
        if "photo_catch_up_sops_ratio" in r:
            assert r["photo_catch_up_sops_ratio"] > r["photo_signed_sops_ratio"]
            for T in photo:
                caught_up = r[f"photo_catch_up_tuned_agreement_T{T}"]
                assert caught_up >= r[f"photo_signed_tuned_agreement_T{T}"], T
                assert r[f"photo_catch_up_binary_sops_T{T}"] == r[f"photo_tuned_sops_T{T}"]
            # "at the SOPs that catching up spends at its target T, the signed network
            # with one spike per step, run longer, agrees at least as often"
            at_target = r[f"photo_catch_up_tuned_agreement_T{r['photo_catch_up_target']}"]
            assert r["photo_catch_up_signed_same_sops_agreement"] >= at_target
        # Finer spikes (the fourth stored table, tuned for T = 256): "met" / "not met" is
        # computed, log2 9 bits are stated, and "x times the catching-up network's" SOPs
        # is a price (more than one).
        if "photo_fine_target" in r:
            fine_T = r["photo_fine_target"]
            at_fine = r[f"photo_fine_agreement_T{fine_T}"]
            assert r["photo_fine_target_met"] == (at_fine >= 0.95)
            assert r["photo_fine_bits_per_step"] == pytest.approx(math.log2(9))
            assert r["photo_fine_sops_ratio"] > 1 and r["photo_fine_binary_sops_ratio"] > 1
            assert at_fine > r[f"photo_catch_up_tuned_agreement_T{fine_T}"]
    # Detection (the stored FCOS tuned for T = 32 with catching up): the target is met
    # ("**met**"), the paper's network meets it only at a longer run, and at its target the
    # tuned network spends more SOPs than the paper's there ("steps, not energy").
    if "detection_catch_up_target_met" in r:
        assert r["detection_catch_up_target_met"] == 1.0
        assert r["detection_catch_up_bits_per_step"] == pytest.approx(math.log2(7))
        assert r["detection_paper_first_T"] > 32
        assert r["detection_catch_up_sops_ratio"] > 1


def claims_07_segmentation(r: dict, p: dict) -> None:
    T = max(p["timesteps"])
    for prefix in ("", "deeplabv3_"):
        # 24 scenes at CI size: the SNN within 3 points of its clipped ANN at the largest T,
        # clipping (200 LTB updates at CI size) within 5 points of the ANN, better late than
        # early.
        assert abs(r[f"{prefix}snn_miou_T{T}"] - r[f"{prefix}relux_miou"]) < 0.03
        assert abs(r[f"{prefix}relux_miou"] - r[f"{prefix}ann_miou"]) < 0.05
        assert r[f"{prefix}snn_miou_T{T}"] > r[f"{prefix}snn_miou_T16"]


def test_07_segmentation(run_notebook) -> None:
    r = run_notebook("07_segmentation")
    _check_keys(r)
    claims_07_segmentation(r, PARAMS["ci"]["07_segmentation"])


def claims_08_detection(r: dict, p: dict) -> None:
    T = max(p["timesteps"])
    for prefix in ("", "fcos_"):
        assert r[f"{prefix}snn_map_T{T}"] > 0.85 * r[f"{prefix}ann_map"]
        assert r[f"{prefix}snn_map_T{T}"] > r[f"{prefix}snn_map_T16"]
        assert r[f"{prefix}iou50_snn_map_T{T}"] >= r[f"{prefix}snn_map_T{T}"]
    # Freezing GroupNorm's statistics costs the ANN little.
    assert r["fcos_frozen_group_norm_ann_map"] > r["fcos_ann_map"] - 0.05


def test_08_detection(run_notebook) -> None:
    r = run_notebook("08_detection")
    _check_keys(r)
    claims_08_detection(r, PARAMS["ci"]["08_detection"])


def claims_deviations(r: dict, p: dict) -> None:
    T = max(p["T_values"])
    assert r[f"gated_minus_current_T{T}"] > 0  # gating beats the paper's per-step pooling
    # The estimated delay does not lose to having no delay at the shortest T.
    assert r["delay_auto_minus_none_Tmin"] >= 0


def test_deviations(run_notebook) -> None:
    r = run_notebook("deviations")
    _check_keys(r)
    claims_deviations(r, PARAMS["ci"]["deviations"])


@pytest.mark.parametrize("name", [n for n in NOTEBOOK_PAGES if n != "09_energy"])
def test_claims_hold_at_book_parameters(name: str) -> None:
    """The prose's claims, checked on the numbers of the last `make book` as well."""
    r = book_results(name)
    _check_keys(r)
    globals()[f"claims_{name}"](r, PARAMS["book"][name])


@pytest.mark.parametrize("name", NOTEBOOK_PAGES)
def test_outputs_repeat_in_a_second_run(name: str, run_notebook) -> None:
    """nbval in strict mode (not ``--nbval-lax``): the chapter as the papermill run above
    executed it (CI parameters, solutions included, outputs kept) runs again in a fresh
    kernel, and every cell's text output, stdout and stderr must come back identical.

    The notebooks are committed without outputs, so the reference is that first run: this
    holds every printed number, table and warning to run-to-run reproducibility, and fails
    on a warning the reader would see only sometimes. Not compared: durations (sanitised by
    tests/nbval_sanitize.cfg), figures (nbval leaves images to nbdime) and the widget cells
    marked ``# NBVAL_IGNORE_OUTPUT`` (their output is drawn by a frontend, which papermill's
    recording and nbval's bare kernel client model differently).
    """
    run_notebook(name)
    folder = run_notebook.folder
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
        "--rootdir", str(folder), "--nbval", "--nbval-current-env",
        "--nbval-sanitize-with", str(NBVAL_SANITIZE),
        "--nbval-cell-timeout", str(CELL_TIMEOUT), str(folder / f"{name}.ipynb"),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    report = result.stdout[-6000:]
    assert result.returncode == 0, f"{name}: outputs changed in a second run\n{report}"


def test_widget_cells_record_outputs_without_messaging_the_kernel(tmp_path) -> None:
    """headless_widgets (applied by the run_notebook fixture and the book's extension): an
    interact cell's outputs are still recorded in the widget state, and nbclient's Output
    widget mimic sends nothing on the shell socket it awaits the cell's reply on (the race
    behind jupyter/nbclient#312, which hung CI)."""
    papermill = pytest.importorskip("papermill")
    from nbclient import output_widget

    from tests.conftest import headless_widgets

    headless_widgets()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import ipywidgets as w\nw.interact(lambda x=2: print('x =', x), x=(0, 4));"
        )
    ]
    nbformat.write(nb, tmp_path / "widget.ipynb")
    sent = []
    original = output_widget.OutputWidget._publish_msg
    output_widget.OutputWidget._publish_msg = lambda self, *a, **k: sent.append(a)
    try:
        papermill.execute_notebook(str(tmp_path / "widget.ipynb"), str(tmp_path / "out.ipynb"),
                                   kernel_name="python3", progress_bar=False)  # fmt: skip
    finally:
        output_widget.OutputWidget._publish_msg = original
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    state = out.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    recorded = [m["state"]["outputs"] for m in state.values() if m["model_name"] == "OutputModel"]
    assert recorded and any("x = 2" in o.get("text", "") for o in recorded[0])
    assert sent == []
