"""Threshold recipes: the LTB rule's known properties, max and robust norms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import snnlite
from snnlite.recipes import LocalThresholdBalancing, MaxNorm, RobustNorm


def half_normal_batches(count: int, size: int = 4096, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 1, generator=generator, dtype=torch.float64).abs()
            for _ in range(count)]  # fmt: skip


def test_ltb_thresholds_never_decrease() -> None:
    recipe = LocalThresholdBalancing("channel")
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(200):
        recipe(torch.randn(32, 6, 5, 5, generator=generator) * torch.arange(1, 7).view(6, 1, 1))
        history.append(recipe.threshold().clone())
    steps = torch.stack(history).diff(dim=0)
    assert (steps >= 0).all()


@pytest.mark.parametrize("updates", [100, 1000])
def test_ltb_iteration_count_is_a_hidden_percentile(updates: int) -> None:
    """After K updates on half-normal input, P(z > theta_K) ~ 1 / (2K) (within a factor 2)."""
    recipe = LocalThresholdBalancing("layer")
    for batch in half_normal_batches(updates):
        recipe(batch)
    theta = recipe.threshold().double()
    exceed = torch.erfc(theta / np.sqrt(2)).item()  # P(|N(0,1)| > theta), exact
    target = 1 / (2 * updates)
    assert target / 2 < exceed < target * 2, (theta.item(), exceed, target)


def test_large_step_overshoots_and_stays_above_the_data() -> None:
    batches = half_normal_batches(50, seed=1)
    small, large = LocalThresholdBalancing("layer"), LocalThresholdBalancing("layer", step_size=8)
    for batch in batches:
        small(batch)
        large(batch)
    maximum = max(batch.max().item() for batch in batches)
    assert small.threshold() < maximum < large.threshold()


@pytest.mark.parametrize("shape", [(7, 5, 9, 11), (6, 13), (3, 4, 1, 1)])
@pytest.mark.parametrize("granularity", ["channel", "layer"])
def test_ltb_statistic_fused_equals_the_torch_ops(shape, granularity) -> None:
    """The fused CPU kernel's E[(z - theta)+] is the plain torch computation's (float64)."""
    from snnlite.recipes import excess_sums

    generator = torch.Generator().manual_seed(0)
    z = torch.randn(shape, generator=generator)
    theta = torch.rand(shape[1], generator=generator) if granularity == "channel" else (
        torch.tensor(0.3))  # fmt: skip
    dims = (0, *range(2, z.dim())) if granularity == "channel" else tuple(range(z.dim()))
    levels = theta.view(-1, *[1] * (z.dim() - 2)) if granularity == "channel" else theta
    expected = (z.double() - levels.double()).clamp(min=0).sum(dims)
    assert torch.allclose(excess_sums(z, theta), expected, rtol=1e-6)
    if z.dim() == 4:  # a channels-last input takes the torch path: the same sums
        other = excess_sums(z.contiguous(memory_format=torch.channels_last), theta)
        assert torch.allclose(other, expected, rtol=1e-5)


@pytest.mark.parametrize("shape", [(7, 5, 9, 11), (6, 13), (3, 4, 1, 1)])
def test_ltb_channel_clip_fused_equals_the_torch_clamp(shape) -> None:
    """LTB's output with channel thresholds (a fused kernel on CPUs) is torch's exact clamp,
    also for a channel that never fires (threshold 0) and for a channels-last input."""
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(shape, generator=generator).abs()
    z[:, 0] = -z[:, 0]  # channel 0 never positive: its threshold stays 0
    inputs = [z]
    if z.dim() == 4:
        inputs.append(z.contiguous(memory_format=torch.channels_last))  # the torch path
    for x in inputs:
        recipe = LocalThresholdBalancing("channel")
        out = recipe(x)
        assert recipe.theta[0] == 0
        ceiling = recipe.theta.float().view(-1, *[1] * (z.dim() - 2))
        assert torch.equal(out, torch.minimum(x.clamp(min=0), ceiling))
        assert not out[:, 0].any()


def test_ltb_output_uses_the_updated_threshold() -> None:
    recipe = LocalThresholdBalancing("layer")
    z = torch.tensor([[3.0], [1.0], [-1.0]])
    out = recipe(z)
    theta = 2 * (3.0 + 1.0) / 3  # from theta = 0: mean of 2 (z - 0)+
    assert torch.allclose(recipe.threshold(), torch.tensor(theta))
    assert torch.allclose(out, torch.tensor([[theta], [1.0], [0.0]]))


def test_silent_channels_keep_zero_and_cause_no_nan(resnet18_photos, photo_crops) -> None:
    recipe = LocalThresholdBalancing("channel")
    z = torch.randn(16, 3, 4, 4)
    z[:, 1] = -z[:, 1].abs() - 0.1  # channel 1 never activates
    recipe(z)
    assert recipe.threshold()[1] == 0
    # In a real network: silence some channels of a conv completely.
    model = resnet18_photos
    import copy

    model = copy.deepcopy(model)
    with torch.no_grad():
        model.layer2[0].bn1.bias[:5] = -1e4  # these channels are always negative
    snn = snnlite.convert(model, [photo_crops[:16]], iterations=4, progress=False)
    theta = snn.thresholds["layer2_0_relu"]
    assert (theta[:5] == 0).all() and (theta[5:] > 0).all()
    assert np.isfinite(snn.delay_estimate) and snn.delay_estimate >= 0
    out = snn.simulate(photo_crops[16:18], [8], delay="auto")[8]
    assert torch.isfinite(out).all()


def test_max_norm_is_the_maximum_activation() -> None:
    z = torch.randn(8, 4, 3, 3)
    layer, channel = MaxNorm("layer"), MaxNorm("channel")
    layer(z[:4]), layer(z[4:]), channel(z[:4]), channel(z[4:])
    assert torch.equal(layer.threshold(), z.amax())
    assert torch.equal(channel.threshold(), z.amax(dim=(0, 2, 3)).clamp(min=0))


def test_robust_norm_is_the_percentile_of_positive_activations() -> None:
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(64, 2, 8, 8, generator=generator)
    recipe = RobustNorm("channel", percentile=99.0)
    recipe(z)
    for c in range(2):
        values = z[:, c].flatten()
        expected = np.percentile(values[values > 0].numpy(), 99.0)
        assert abs(recipe.threshold()[c].item() - expected) < 0.02


def test_relu6_threshold_never_exceeds_the_cap() -> None:
    recipe = LocalThresholdBalancing("layer", cap=6.0)
    for _ in range(20):
        recipe(torch.full((10, 1), 50.0))
    assert recipe.threshold() == 6.0


@pytest.mark.parametrize("method", ["ltb", "max", "robust"])
@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_every_method_and_granularity_converts(method, granularity, resnet18_photos, photo_crops):
    snn = snnlite.convert(resnet18_photos, [photo_crops[:16]], method=method, iterations=4,
                          granularity=granularity, progress=False)  # fmt: skip
    assert len(snn.thresholds) == 17
    for name, theta in snn.thresholds.items():
        assert torch.isfinite(theta).all() and (theta >= 0).all(), name
        assert theta.dim() == (0 if granularity == "layer" else 1)
    if method == "max":  # max-norm: no ReLUX output is clipped on the calibration data
        with torch.no_grad():
            prepared = snnlite.prepare(resnet18_photos)
            assert torch.allclose(snn.relux()(photo_crops[:16]), prepared(photo_crops[:16]),
                                  rtol=1e-4, atol=1e-5)  # fmt: skip


def test_ltb_default_reuses_few_batches_up_to_600_updates() -> None:
    """Reusing one batch 600 times gives the thresholds 600 updates give (not 1 update's)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    batch = torch.randn(8192, 8)
    default = snnlite.convert(model, [batch], progress=False)
    explicit = snnlite.convert(model, [batch], iterations=600, progress=False)
    single = snnlite.convert(model, [batch], iterations=1, progress=False)
    theta = next(iter(default.thresholds.values()))
    assert torch.equal(theta, next(iter(explicit.thresholds.values())))
    assert (theta >= next(iter(single.thresholds.values()))).all()
    with torch.no_grad():  # about 1 / (2 * 600) of the calibration activations exceed theta
        z = model[0](batch)
    exceed = (z > theta).float().mean().item()
    assert 1 / 4800 < exceed < 4 / 1200


def test_one_shot_calibration_iterator_warns_when_too_short() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    batches = (torch.randn(16, 4) for _ in range(3))
    with pytest.warns(UserWarning, match="one-shot iterator"):
        snnlite.convert(model, batches, progress=False)
