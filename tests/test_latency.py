"""Low-latency tuning: T-aware thresholds, bias correction, delay choice, and the API."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import snnlite
from snnlite import latency
from snnlite.graph import activation_sites
from snnlite.latency import (
    _site_inputs,
    choose_delay,
    choose_delays,
    correct_bias,
    correction_groups,
    delay_grid,
    latency_parts_of,
    quantisation_objective,
    site_errors,
    t_aware_threshold,
)
from snnlite.neurons import rate


def _distributions() -> dict[str, torch.Tensor]:
    """Rows of activations of different shapes, half of them negative (ReLU inputs)."""
    g = torch.Generator().manual_seed(0)
    n = 4000
    normal = torch.randn(n, generator=g)
    return {
        "normal": normal,
        "exponential": torch.empty(n).exponential_(generator=g) - 0.5,
        "uniform": torch.rand(n, generator=g) * 3 - 1,
        "heavy tail": torch.randn(n, generator=g) / torch.rand(n, generator=g).clamp(min=0.05),
        "two modes": torch.cat(
            [
                torch.randn(n // 2, generator=g) * 0.1 + 0.3,
                torch.randn(n // 2, generator=g) * 0.2 + 2.0,
            ]
        ),  # fmt: skip
    }


@pytest.mark.parametrize("cap", [math.inf, 6.0])
@pytest.mark.parametrize("timesteps", [1, 3, 16, 256])
def test_objective_by_stairs_equals_the_direct_sum(timesteps: int, cap: float) -> None:
    """The objective summed stair by stair on the sorted values equals the direct sum of
    (psi_T(z; theta) - a(z))^2 over every value (float64, to float32 rounding), silent
    thresholds (0) included."""
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 3000, generator=g) * 3
    thresholds = torch.rand(5, 17, generator=g) * 8
    thresholds[0, 0] = 0.0
    target = z.clamp(min=0, max=cap)[:, None, :].double()
    direct = rate(z[:, None, :].double(), thresholds[:, :, None].double(), timesteps) - target
    expected = direct.square().sum(dim=2)
    got = quantisation_objective(z, thresholds, timesteps, cap)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("timesteps", [1, 4, 16, 64])
@pytest.mark.parametrize("name", list(_distributions()))
def test_t_aware_threshold_is_the_minimiser_of_its_objective(name: str, timesteps: int) -> None:
    """Compared with a grid 30x finer than the search's own, over (0, max]: the search finds
    an objective at least as low (to 1e-9 relative)."""
    z = _distributions()[name].double()[None]  # (1, n)
    theta = t_aware_threshold(z, timesteps)
    top = float(z.max())
    fine = torch.linspace(top / 2000, top, 2000, dtype=torch.float64)[None]
    grid_best = quantisation_objective(z, fine, timesteps).min()
    found = quantisation_objective(z, theta[:, None], timesteps)[0, 0]
    assert found <= grid_best * (1 + 1e-9), (float(theta), float(found), float(grid_best))


def test_t_aware_thresholds_grow_with_t_and_stay_below_the_maximum() -> None:
    """At small T a lower threshold buys finer stairs; as T grows the clipping term wins and
    the minimiser tends to the maximum (the fixed point of local threshold balancing)."""
    z = _distributions()["normal"].double()[None]
    thetas = [float(t_aware_threshold(z, T)[0]) for T in (2, 4, 8, 16, 64, 256)]
    assert thetas == sorted(thetas)
    assert thetas[-1] <= float(z.max())
    assert thetas[0] < 0.6 * thetas[-1]


def test_t_aware_threshold_per_channel_matches_one_row_at_a_time() -> None:
    rows = torch.stack([_distributions()[k] for k in ("normal", "uniform", "two modes")])
    together = t_aware_threshold(rows, 8)
    alone = torch.cat([t_aware_threshold(row[None], 8) for row in rows])
    torch.testing.assert_close(together, alone)


def test_t_aware_threshold_silent_and_capped_channels() -> None:
    z = torch.stack([-torch.rand(1000), torch.rand(1000) * 20])
    theta = t_aware_threshold(z, 8, cap=6.0)
    assert theta[0] == 0  # never active: silent, no division anywhere
    assert 0 < theta[1] <= 6.0


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10),
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(96, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_target_none_keeps_the_paper_pipeline(images: torch.Tensor) -> None:
    model = _small_cnn()
    calibration = list(images.split(32))
    paper = snnlite.convert(model, calibration, iterations=30, progress=False)
    same = snnlite.convert(model, calibration, iterations=30, progress=False,
                           target_timesteps=None)  # fmt: skip
    for name, theta in paper.thresholds.items():
        assert torch.equal(theta, same.thresholds[name])
    for site in activation_sites(same.ann).values():
        assert site.bias is None and site.charge is None
    assert paper.delay_estimate == same.delay_estimate
    assert paper.max_pool == same.max_pool == "gated"  # the pool the book measures
    x = images[:8]
    torch.testing.assert_close(paper.simulate(x, 16)[16], same.simulate(x, 16)[16], rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0, -3, 8.0, 2.5, "8", True, None.__class__])
def test_target_timesteps_must_be_a_positive_integer(images: torch.Tensor, bad: object) -> None:
    model = _small_cnn()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="target_timesteps"):
        snnlite.convert(model, [images], iterations=2, progress=False, target_timesteps=bad)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_numpy_integer_target_and_unknown_parts(images: torch.Tensor) -> None:
    snn = snnlite.convert(_small_cnn(), [images], iterations=5, progress=False,
                          target_timesteps=np.int64(4), tuning_size=32)  # fmt: skip
    assert snn.delay_estimate is not None
    with pytest.raises(ValueError, match="unknown latency part"):
        latency_parts_of(["thresholds", "speed"])


def test_site_rates_of_a_constant_current_follow_psi_t(images: torch.Tensor) -> None:
    """The first site sees a constant current under direct coding: its rate over T steps is
    exactly ``psi_T(z; theta)`` (with the same spike condition)."""
    snn = snnlite.convert(_small_cnn(), [images], iterations=10, progress=False)
    first = next(iter(snn.thresholds))
    x = images[:4]
    z = _site_inputs(snn.ann, first, [x])  # the pooled conv output: constant in time
    theta = snn.thresholds[first].view(-1, 1, 1)
    for T in (3, 8, 20):
        got = snn.site_rates(x, T, sites=[first])[first]
        torch.testing.assert_close(got, rate(z, theta, T), rtol=1e-5, atol=1e-6)


def test_bias_correction_zeroes_the_mean_error_of_each_site(images: torch.Tensor) -> None:
    """Corrected site by site, the SNN's mean rate at T equals the clipped ANN's mean
    activation at every site on the calibration images (per channel, to a small fraction of
    the error before)."""
    snn = snnlite.convert(_small_cnn(), list(images.split(32)), iterations=30, progress=False)
    T = 6
    before = site_errors(snn, images, T)
    correct_bias(snn, images, T, progress=False)
    after = site_errors(snn, images, T)
    for name in before:
        assert after[name].abs().mean() <= 0.1 * before[name].abs().mean() + 1e-5, name


def test_potential_correction_zeroes_the_mean_error_from_t0(images: torch.Tensor) -> None:
    """The charge added to each site's initial potential cancels (to a fifth or less) its
    mean error over the window that starts at t = 0, and (a charge, not a current) it leaves
    the clipped ANN and every threshold as they were."""
    snn = snnlite.convert(_small_cnn(), list(images.split(32)), iterations=30, progress=False)
    thresholds = {name: theta.clone() for name, theta in snn.thresholds.items()}
    T = 6
    before = site_errors(snn, images, T)
    correct_bias(snn, images, T, into="charge", progress=False)
    after = site_errors(snn, images, T)
    for name in before:  # a charge moves whole spikes: a coarser control than a current
        assert after[name].abs().mean() <= 0.2 * before[name].abs().mean() + 1e-5, name
        assert torch.equal(thresholds[name], snn.thresholds[name])
    sites = activation_sites(snn.ann).values()
    assert all(site.bias is None and site.charge is not None for site in sites)


def test_correction_groups_cut_the_sites_in_order() -> None:
    """Consecutive runs, in order, every site once, at most the number asked for, sizes
    within one of each other; with enough groups every site is alone."""
    names = [f"s{i}" for i in range(35)]
    for count in (1, 3, 8, 35, 50):
        groups = correction_groups(names, count)
        assert [name for group in groups for name in group] == names
        assert len(groups) == min(count, len(names))
        sizes = [len(group) for group in groups]
        assert max(sizes) - min(sizes) <= 1
    assert correction_groups(names[:6], 8) == [[name] for name in names[:6]]


def test_joint_correction_also_zeroes_the_mean_errors(images: torch.Tensor) -> None:
    """All sites measured in one simulation per round (one group): a site's error also
    holds what the sites above it pass down before their correction, so it converges
    more slowly than site by site, but after four rounds each site's mean error is down
    to a quarter of what it was (site by site: a fifth after two rounds)."""
    snn = snnlite.convert(_small_cnn(), list(images.split(32)), iterations=30, progress=False)
    T = 6
    assert len(snn.thresholds) > 1
    before = site_errors(snn, images, T)
    correct_bias(snn, images, T, into="charge", groups=1, rounds=4, progress=False)
    after = site_errors(snn, images, T)
    for name in before:
        assert after[name].abs().mean() <= 0.25 * before[name].abs().mean() + 1e-5, name


def test_rates_measured_in_slices_equal_one_pass(
    images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The corrections' mean rates do not depend on how many images go in one simulation
    (RATE_BYTES bounds their memory)."""
    snn = snnlite.convert(_small_cnn(), list(images.split(32)), iterations=30, progress=False)
    names = list(snn.thresholds)
    whole = latency._mean_rates(snn, images[:50], 5, 1, names)
    monkeypatch.setattr(latency, "RATE_BYTES", 1)  # one image per simulation
    sliced = latency._mean_rates(snn, images[:50], 5, 1, names)
    for name in names:
        torch.testing.assert_close(sliced[name], whole[name], rtol=1e-10, atol=1e-12)


def test_default_tuning_sets_every_part(images: torch.Tensor) -> None:
    """target_timesteps with the default parts: T-aware thresholds (new, at most the largest
    input current of their site), a charge per site, no bias, and the only delay T = 4
    allows (the whole window)."""
    calibration = list(images.split(32))
    paper = snnlite.convert(_small_cnn(), calibration, iterations=30, progress=False)
    fast = snnlite.convert(_small_cnn(), calibration, iterations=30, progress=False,
                           target_timesteps=4, tuning_size=64)  # fmt: skip
    for name, theta in fast.thresholds.items():
        top = _site_inputs(fast.ann, name, [images[:64]]).transpose(0, 1).flatten(1).amax(1)
        assert not torch.equal(theta, paper.thresholds[name])
        assert ((theta >= 0) & (theta <= top.clamp(min=0) + 1e-6)).all()
    for site in activation_sites(fast.ann).values():
        assert site.bias is None and site.charge is not None
    assert fast.delay_estimate in (0.0,)  # T = 4 leaves one candidate: the whole window
    assert fast.max_pool == "cumulative"  # exact at every step: the low-latency default
    explicit = snnlite.convert(_small_cnn(), calibration, iterations=30, progress=False,
                               target_timesteps=4, tuning_size=64, max_pool="gated")  # fmt: skip
    assert explicit.max_pool == "gated"


def test_auto_delay_follows_the_schedule() -> None:
    """delay="auto" takes the entry of the largest scheduled T not above the run, the
    smallest entry below the schedule, and the same fraction of the run beyond it."""
    snn = snnlite.SpikingNetwork(nn.Identity(), delay_estimate=3.0,
                                 delay_schedule={8: 4, 16: 6, 64: 32})  # fmt: skip
    expected = {4: 4, 8: 4, 12: 4, 16: 6, 63: 6, 64: 32, 128: 64, 256: 128}
    assert {T: snn.auto_delay(T) for T in expected} == expected
    snn.delay_schedule = None
    assert snn.auto_delay(128) == 3.0


def test_choose_delays_from_one_run_equals_one_choice_per_t(images: torch.Tensor) -> None:
    """The schedule read from one simulation equals choosing each T's delay on its own, and
    tune_for_latency installs it: delay="auto" reads every T with its own delay."""
    calibration = list(images.split(32))
    snn = snnlite.convert(_small_cnn(), calibration, iterations=30, progress=False,
                          target_timesteps=8, tuning_size=64)  # fmt: skip
    grid = delay_grid(8)
    assert grid == [4, 8, 16, 32, 64]
    schedule = choose_delays(snn, images[:64], grid)
    assert schedule == {T: choose_delay(snn, images[:64], T) for T in grid}
    assert snn.delay_schedule == schedule and snn.delay_estimate == schedule[8]
    auto = snn.simulate(images[:16], grid, progress=False)
    for T in grid:
        fixed = snn.simulate(images[:16], [T], delay=schedule[T], progress=False)[T]
        assert torch.equal(auto[T], fixed)


def test_the_charge_is_kept_only_where_it_pays(images: torch.Tensor) -> None:
    """With the delay part, the tuned network's readout at T (best delay) is at least as
    close to the clipped ANN as the same network without the charges: a correction that
    does not pay on the calibration images is dropped."""
    calibration = list(images.split(32))
    fast = snnlite.convert(_small_cnn(), calibration, iterations=30, progress=False,
                           target_timesteps=6, tuning_size=64)  # fmt: skip
    plain = copy.deepcopy(fast)
    for site in activation_sites(plain.ann).values():
        site.charge = None
    probe = images[: latency.DELAY_SAMPLES]
    tuned, without = (latency._readout_fit(n, probe, 6) for n in (fast, plain))
    assert tuned.no_worse_than(without)


def test_changed_decisions_mark_argmax_flips_per_image_and_pixel() -> None:
    """Which class decisions (argmax over dim 1) a readout changes: per image for (N, C),
    per pixel for (N, C, H, W); None for outputs without class decisions."""
    reference = torch.tensor([[0.0, 1.0, 0.5], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    readout = reference.clone()
    readout[0, 2] = 1.5  # image 0 flips to class 2
    assert latency._changed_decisions(readout, reference).tolist() == [True, False, False, False]
    maps = torch.zeros(2, 3, 4, 5)
    maps[:, 1] = 1.0  # every pixel decides class 1
    moved = maps.clone()
    moved[0, 2, :2, :] = 2.0  # 10 of the 40 pixels decide class 2
    changed = latency._changed_decisions(moved, maps)
    assert changed.shape == (40,) and changed.sum() == 10 and changed[:10].all()
    wrapped = {"out": moved, "aux": maps}  # torchvision's segmentation output
    assert torch.equal(latency._changed_decisions(wrapped, {"out": maps, "aux": maps}), changed)
    assert latency._changed_decisions(torch.ones(4, 1), torch.zeros(4, 1)) is None
    heads = {"cls_logits": torch.zeros(2, 6, 3), "bbox_regression": torch.zeros(2, 6, 4)}
    assert latency._changed_decisions(heads, heads) is None


def _flips(*indices: int, size: int = 1000) -> torch.Tensor:
    mask = torch.zeros(size, dtype=torch.bool)
    mask[list(indices)] = True
    return mask


def test_a_fit_is_worse_only_if_its_error_or_significantly_more_decisions_grow() -> None:
    """McNemar on the paired decisions: b flips only in this readout, c only in the other;
    worse when b - c > 2 sqrt(b + c)."""
    fit = latency.ReadoutFit
    base = fit(0, 1.0, _flips(*range(10)))
    assert fit(3, 1.0, _flips(*range(10))).no_worse_than(base)  # the same decisions
    assert fit(0, 0.9, _flips(*range(12))).no_worse_than(base)  # b = 2, c = 0: chance
    assert not fit(0, 0.9, _flips(*range(20))).no_worse_than(base)  # b = 10 > 2 sqrt(10)
    assert fit(0, 0.9, _flips(*range(5, 20))).no_worse_than(base)  # b = 10, c = 5: chance
    assert not fit(0, 1.1, _flips()).no_worse_than(base)  # the error grew
    assert fit(0, 0.9).no_worse_than(fit(0, 1.0))  # detection: the error alone


def test_changed_decisions_in_tiles_of_one_image_equal_one_tile(images: torch.Tensor) -> None:
    snn = snnlite.convert(_small_cnn(), list(images.split(32)), iterations=30, progress=False)
    whole = latency._best_delays(snn, images[:40], [8], decisions=True)[8]
    snn.work_bytes = 1  # simulated in tiles of one image
    sliced = latency._best_delays(snn, images[:40], [8], decisions=True)[8]
    assert whole.delay == sliced.delay and torch.equal(whole.changed, sliced.changed)
    assert whole.changed.shape == (40,)


def test_choose_delays_in_tiles_of_one_image_equals_one_tile(images: torch.Tensor) -> None:
    """Reduced one image at a time (tiles of one image), the schedule is the same as from
    tiles of many images."""
    snn = snnlite.convert(_small_cnn(), list(images.split(32)), iterations=30, progress=False)
    grid = delay_grid(8)
    whole = choose_delays(snn, images[:40], grid)
    snn.work_bytes = 1
    assert choose_delays(snn, images[:40], grid) == whole
