"""Chapter 9 (energy): run the notebook with its CI parameters and check the numbers it claims.

The notebook runs once (the ``run_notebook`` fixture of conftest.py: papermill, into a
temporary folder); every test reads the flat ``09_energy.json`` it wrote. The checks are known
values (the paper's arithmetic, fan-outs of a padded 3x3 convolution, FPS/W = 1 / joules),
equivalences (events counted by re-running the first neurons = events recorded in the
simulation) and bounds (SOPs grow with T, the SNN beats the ANN per watt, accuracy at the
largest T close to the ANN's).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.helpers import book_results

NAME = "09_energy"
E_SOP, E_MAC = 77e-15, 12.5e-12  # the paper's constants, joules per SOP / per MAC


@pytest.fixture(scope="module", params=["ci", "book"])
def results(request, run_notebook) -> dict[str, Any]:
    """The CI run's numbers, then the book's (stored by `make book`, checked to be current)."""
    if request.param == "ci":
        return run_notebook(NAME)
    return book_results(NAME)


def _models(results: dict[str, Any]) -> list[str]:
    return sorted(k.removesuffix("_ann_macs") for k in results
                  if k.endswith("_ann_macs") and k != "ann_macs")  # fmt: skip


def _by_T(results: dict[str, Any], prefix: str) -> dict[int, float]:
    pattern = re.compile(re.escape(prefix) + r"_T(\d+)$")
    return {int(m.group(1)): v for k, v in results.items() if (m := pattern.match(k))}


def test_paper_arithmetic(results: dict[str, Any]) -> None:
    # ResNet-34 on ImageNet: 3.66e9 MACs x 12.5 pJ -> 22 FPS/W; 20.86e9 SOPs x 77 fJ -> 622.
    assert results["paper_ann_fps_per_watt"] == pytest.approx(22, rel=0.03)
    assert results["paper_snn_fps_per_watt"] == pytest.approx(622, rel=0.03)
    assert results["paper_ratio"] == pytest.approx(28, rel=0.03)
    assert results["resnet34_imagenet_macs"] == pytest.approx(3.66e9, rel=0.01)


def test_sops_positive_and_increasing_in_T(results: dict[str, Any]) -> None:
    models = _models(results)
    assert len(models) >= 1
    for model in models:
        sops = _by_T(results, f"{model}_snn_sops")
        assert len(sops) >= 3, model
        values = [sops[T] for T in sorted(sops)]
        assert values[0] > 0, model
        assert all(b > a for a, b in zip(values, values[1:])), (model, values)


def test_snn_beats_ann_per_watt(results: dict[str, Any]) -> None:
    assert results["ratio"] > 1
    for model in _models(results):
        assert results[f"{model}_ratio_sop90"] > 1, model
        # FPS/W is exactly 1 / joules per frame with the paper's constants.
        assert results[f"{model}_ann_fps_per_watt"] == pytest.approx(
            1 / (results[f"{model}_ann_macs"] * E_MAC), rel=1e-9
        )
        assert results[f"{model}_snn_fps_per_watt_sop90"] == pytest.approx(
            1 / (results[f"{model}_snn_sop90"] * E_SOP), rel=1e-9
        )
        # SOP95 needs at least the steps (hence the operations) of SOP90.
        assert results[f"{model}_snn_sop95_T"] >= results[f"{model}_snn_sop90_T"]
        assert results[f"{model}_snn_sop95"] >= results[f"{model}_snn_sop90"]
        # SOP90 is the SOP count at its own T.
        sop90_T = results[f"{model}_snn_sop90_T"]
        assert results[f"{model}_snn_sop90"] == results[f"{model}_snn_sops_T{sop90_T}"]


def test_accuracy_at_largest_T_close_to_ann(results: dict[str, Any]) -> None:
    for model in _models(results):
        curve = _by_T(results, f"{model}_snn_accuracy")
        gap = results[f"{model}_ann_accuracy"] - curve[max(curve)]
        assert gap <= 0.02, (model, gap)
    headline = _by_T(results, "snn_accuracy")
    assert results["ann_accuracy"] - headline[max(headline)] <= 0.02


def test_theta_valued_spikes_are_counted(results: dict[str, Any]) -> None:
    # A counter of exact ones sees nothing; re-running the first neurons with
    # integrate_and_fire gives exactly the events recorded during the simulation.
    assert results["naive_counter_events"] == 0
    assert results["first_layer_events_ifsim"] > 0
    assert results["first_layer_events_recorded"] == results["first_layer_events_ifsim"]


def test_fanout_border_of_padded_conv(results: dict[str, Any]) -> None:
    # The VGG's first neurons feed a padded 3x3 stride-1 conv: 9 C_out inside, 4 C_out in the
    # corners (edges 6 C_out).
    high, low = results["fmnist_vgg_first_fanout_max"], results["fmnist_vgg_first_fanout_min"]
    assert high * 4 == low * 9
    assert high % 9 == 0
    # The numbers the text derives from the next conv's C_out (printed, not typed).
    assert high == 9 * results["fmnist_vgg_next_conv_out_channels"]


def test_sops_about_linear_in_T(results: dict[str, Any]) -> None:
    # "the SOPs grow about linearly in T": a straight line through the cumulative SOPs.
    for model in _models(results):
        assert results[f"{model}_sops_linear_r2"] > 0.98, model


def test_mac_per_sop_ratios_quoted_in_the_text(results: dict[str, Any]) -> None:
    # The prose: a SOP costs "about 160" times less than a MAC with the paper's constants.
    assert results["mac_per_sop_paper"] == pytest.approx(160, rel=0.05)
    assert results["mac_per_sop_45nm"] < 10  # "the gap shrinks"


def test_folded_network_agrees(results: dict[str, Any]) -> None:
    # fold_thresholds in float64: the same readouts, unit spikes, the same events and SOPs.
    assert results["fold_readout_difference"] <= 1e-9
    assert results["fold_spike_values_unit"] == 1.0
    assert results["fold_same_events"] == 1.0
    assert results["fold_sops_equal"] == 1.0
