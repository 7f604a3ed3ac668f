"""Simulation: convergence to the clipped ANN, one run = many runs, an independent oracle."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import snnlite
from snnlite import network
from snnlite.network import CHUNK_STEPS, _tiling, readout_start
from tests.helpers import oracle


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def resnet_snn(resnet18_photos, photo_crops):
    calibration = [photo_crops[:16], photo_crops[16:32]]
    return snnlite.convert(resnet18_photos, calibration, iterations=50, progress=False)


def test_snn_approaches_the_clipped_ann(resnet_zoo_snn, fashion) -> None:
    """Relative error of the readout against relux(): falls with T, under 2% at T = 1024.

    On the zoo's trained ResNet with LTB channel thresholds (600 updates) this measured
    25% / 6.4% / 1.7% / 0.4% at T = 16 / 64 / 256 / 1024 (delay 0).
    """
    x = fashion["test"][:8]
    with torch.no_grad():
        target = resnet_zoo_snn.relux()(x)
    outputs = resnet_zoo_snn.simulate(x, [16, 64, 256, 1024], delay=0)
    errors = [relative_error(outputs[T], target) for T in (16, 64, 256, 1024)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.02, errors


def test_auto_delay_helps_at_short_time_steps(resnet_zoo_snn, fashion) -> None:
    """The estimated delay gives a better readout than no delay at small T."""
    x = fashion["test"][:16]
    with torch.no_grad():
        target = resnet_zoo_snn.relux()(x)
    auto = resnet_zoo_snn.simulate(x, [16, 32], delay="auto")
    none = resnet_zoo_snn.simulate(x, [16, 32], delay=0)
    for T in (16, 32):
        assert relative_error(auto[T], target) < relative_error(none[T], target)


def test_gated_pooling_converges_where_per_step_pooling_is_biased(vgg_zoo_snn, fashion) -> None:
    """Max pools after spiking layers: gating by accumulated input converges to relux();
    pooling the per-step currents (the paper's form) keeps a bias that does not vanish.

    Measured on the zoo VGG: gated 31% / 17% / 10% / 4.4% at T = 16 / 64 / 256 / 1024.
    """
    mode, snn = vgg_zoo_snn
    x = fashion["test"][:8]
    with torch.no_grad():
        target = snn.relux()(x)
    outputs = snn.simulate(x, [64, 256, 1024], delay=0)
    errors = [relative_error(outputs[T], target) for T in (64, 256, 1024)]
    if mode == "gated":
        assert errors[0] > errors[1] > errors[2] and errors[2] < 0.06, errors
    else:
        assert errors[2] > 0.06, errors


@pytest.mark.parametrize("delay", [0, 5, "auto", "half"])
def test_one_run_equals_separate_runs(resnet_snn, photo_crops, delay) -> None:
    x = photo_crops[36:38]
    curve = resnet_snn.simulate(x, [3, 8, 20], delay=delay)
    for T in (3, 8, 20):
        alone = resnet_snn.simulate(x, [T], delay=delay)[T]
        assert torch.allclose(curve[T], alone, rtol=1e-5, atol=1e-6), T


def test_several_delays_from_one_run_equal_separate_runs(resnet_snn, photo_crops) -> None:
    x = photo_crops[36:38]
    together = resnet_snn.simulate(x, [8, 20], delay=["auto", "half", 2])
    assert set(together) == {(T, d) for T in (8, 20) for d in ("auto", "half", 2)}
    for (T, d), readout in together.items():
        alone = resnet_snn.simulate(x, [T], delay=d)[T]
        assert torch.allclose(readout, alone, rtol=1e-5, atol=1e-6), (T, d)


def test_chunk_size_and_batch_tiles_do_not_change_the_result(resnet_snn, photo_crops) -> None:
    x = photo_crops[38:40]
    reference = resnet_snn.simulate(x, [12], delay=0, chunk_size=12)[12]
    for chunk in (1, 5):
        out = resnet_snn.simulate(x, [12], delay=0, chunk_size=chunk)[12]
        assert torch.allclose(out, reference, rtol=1e-5, atol=1e-6)
    tiled = resnet_snn.simulate(x, [12], delay=0, batch_size=1, chunk_size=5)[12]
    assert torch.allclose(tiled, reference, rtol=1e-5, atol=1e-6)
    channels_last = resnet_snn.simulate(x, [12], delay=0, channels_last=True)[12]
    assert torch.allclose(channels_last, reference, rtol=1e-4, atol=1e-5)


def test_tiles_one_at_a_time_are_the_simulation_in_pieces(resnet_snn, photo_crops) -> None:
    """``simulate_tiles`` yields each tile's rows and readouts: joined, they are
    ``simulate``'s result bit for bit, and its checks run before any tile is simulated."""
    x = photo_crops[36:41]
    whole = resnet_snn.simulate(x, [6, 12], delay=[0, "half"], batch_size=2, chunk_size=4)
    tiles = list(resnet_snn.simulate_tiles(x, [6, 12], delay=[0, "half"], batch_size=2,
                                           chunk_size=4))  # fmt: skip
    assert [rows for rows, _ in tiles] == [slice(0, 2), slice(2, 4), slice(4, 5)]
    for key, readout in whole.items():
        assert torch.equal(torch.cat([part[key] for _, part in tiles]), readout), key
    one_delay = next(iter(resnet_snn.simulate_tiles(x, 12, delay=0, batch_size=2)))[1]
    assert list(one_delay) == [12]
    with pytest.raises(ValueError, match="positive"):
        resnet_snn.simulate_tiles(x, 0)  # raised at the call, not at the first tile


def test_the_front_in_sub_chunks_changes_nothing(resnet_snn, photo_crops, monkeypatch) -> None:
    """The layers with large activations run each chunk in sub-chunks of fewer steps (made to
    here with small thresholds, one step each: these crops are small). Readouts, spike
    counts and site rates (watched values, offset within the chunk) are those of one tiling
    for all layers."""
    x = photo_crops[40:43]

    def run():
        out = resnet_snn.simulate(x, [5, 12], delay=[0, 3], record_spikes=True)
        return out, dict(resnet_snn.spike_counts), resnet_snn.site_rates(x, 12, start=3)

    monkeypatch.setattr(network, "FRONT_BYTES", float("inf"))
    plain = run()
    monkeypatch.setattr(network, "FRONT_BYTES", 10_000)  # layer1 of ResNet-18 at 32 px
    monkeypatch.setattr(network, "FRONT_CALL_BYTES", 1)  # one step per sub-chunk
    runner = network._Runner(resnet_snn.ann, "gated", False)
    runner.plan_front(runner.activation_bytes(x[:1]))
    assert 0 < runner.front_end < len(runner.nodes) - 1 and runner.exits  # a real front
    front = run()
    for key, readout in plain[0].items():
        assert torch.allclose(front[0][key], readout, rtol=1e-5, atol=1e-6), key
    assert plain[1].keys() == front[1].keys()
    for name, counts in plain[1].items():
        assert torch.equal(front[1][name], counts), name
    for name, rates in plain[2].items():
        assert torch.allclose(front[2][name], rates, rtol=1e-5, atol=1e-6), name


class SkipToTheEnd(nn.Module):
    """A large early activation read again by a large last layer, as a U-Net's skips are:
    no cut after the last large value is small, so there is no front."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Conv2d(3, 16, 3, padding=1)
        self.down = nn.Conv2d(16, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 16, 2, stride=2)
        self.head = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        skip = torch.relu(self.wide(x))
        return self.head(torch.relu(self.up(torch.relu(self.down(skip)))) + skip)


def test_no_front_where_a_large_value_is_read_at_the_end(photo_crops, monkeypatch) -> None:
    torch.manual_seed(0)
    snn = snnlite.convert(SkipToTheEnd().eval(), [photo_crops[:8]], iterations=4,
                          progress=False)  # fmt: skip
    x = photo_crops[8:10]
    monkeypatch.setattr(network, "FRONT_BYTES", 32 * 2**10)  # 16 x 32 x 32 floats are large
    runner = network._Runner(snn.ann, "gated", False)
    sizes = runner.activation_bytes(x[:1])
    assert runner.plan_front(sizes) == max(sizes.values())  # the tiling sees every layer
    assert runner.front_end == 0
    reference = snn.simulate(x, 6, chunk_size=6, batch_size=2)[6]  # fixed tiling: no front
    assert torch.equal(snn.simulate(x, 6)[6], reference)


@pytest.mark.parametrize("work", [1, 7, 80, 10_000])
@pytest.mark.parametrize("total", [1, 3, 64, 1024])
def test_default_tiling_takes_time_steps_first_within_the_work_size(work, total) -> None:
    chunk, batch = _tiling(work, total, samples=500, chunk=None, batch=None)
    assert chunk == min(total, CHUNK_STEPS, work)  # time first, as long as it is useful
    assert 1 <= batch <= 500
    assert chunk * batch <= max(work, chunk)  # one layer call stays within the work size
    if work >= chunk * 500:
        assert batch == 500
    # what the caller fixes is kept; the other one fills the work size
    assert _tiling(work, total, 500, chunk=None, batch=4)[1] == 4
    assert _tiling(work, total, 500, chunk=2, batch=None)[0] == min(2, total)


def test_auto_delay_is_a_finite_estimate(resnet_snn, photo_crops) -> None:
    t0 = resnet_snn.delay_estimate
    assert math.isfinite(t0) and t0 >= 0
    assert resnet_snn.estimate_delay(photo_crops[:8]) == pytest.approx(t0, rel=0.5)
    # the window rule: skip floor(t0) steps, but always keep the last 4
    assert readout_start(100, 7.9) == 7
    assert readout_start(10, 7.9) == 6
    assert readout_start(3, 7.9) == 0


def test_the_first_layer_current_is_computed_once(resnet_snn, photo_crops) -> None:
    """Direct coding: conv1 (and the stem pool) run once per simulation, not once per step."""
    calls = []
    conv1 = resnet_snn.ann.get_submodule("conv1")
    handle = conv1.register_forward_hook(lambda *_: calls.append(1))
    try:
        resnet_snn.simulate(photo_crops[:2], [16], chunk_size=4, batch_size=2)
    finally:
        handle.remove()
    assert len(calls) == 1


# --- an independent oracle: the plainest possible step-by-step simulation -----------------
# (StepIF, StepGatedPool and oracle live in tests/helpers.py, shared with test_properties)


class VGGStyle(nn.Module):
    """conv-BN-ReLU blocks with max pools after spiking layers (the case pooling must handle)."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.features = nn.Sequential(
            *block(3, 16), *block(16, 16), nn.MaxPool2d(2),
            *block(16, 32), nn.MaxPool2d(2), *block(32, 32), nn.MaxPool2d(2, 2, 1),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 5 * 5, 32), nn.ReLU(),
                                  nn.Linear(32, 10))  # fmt: skip

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize("max_pool", ["gated", "cumulative", "current"])
def test_simulate_equals_a_step_by_step_oracle(photo_crops, max_pool) -> None:
    """In float64, chunked simulation equals the plainest per-step loop (every pool form)."""
    from tests.conftest import with_data_statistics

    torch.manual_seed(0)
    model = with_data_statistics(VGGStyle(), photo_crops[:32]).double()
    images = photo_crops.double()
    snn = snnlite.convert(model, [images[:16]], max_pool=max_pool, iterations=8,
                          progress=False)  # fmt: skip
    x = images[32:36]
    ours = snn.simulate(x, [7, 30], delay=0, chunk_size=8)
    for T in (7, 30):
        reference = oracle(snn, x, T, gated=max_pool == "gated",
                           cumulative=max_pool == "cumulative")  # fmt: skip
        assert torch.allclose(ours[T].double(), reference, rtol=1e-5, atol=1e-6)


class CurrentReadTwice(nn.Module):
    """A conv output read by a neuron and again later (the skip), next to one that a neuron
    alone reads: only the second may be overwritten by the spikes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.inner = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 5))

    def forward(self, x):
        y = self.stem(nn.functional.avg_pool2d(x, 8))  # (N, 8, 4, 4), constant in time
        z = self.inner(torch.relu(y))  # time-varying, read by the next neuron alone
        return self.head(torch.relu(z) + z)  # z read again after its neuron


def test_spikes_overwrite_a_current_only_where_nothing_reads_it_later(photo_crops) -> None:
    torch.manual_seed(0)
    model = CurrentReadTwice().double().eval()
    images = photo_crops.double()
    snn = snnlite.convert(model, [images[:16]], iterations=8, progress=False)
    x = images[32:36]
    ours = snn.simulate(x, 20, delay=0, chunk_size=8)
    assert torch.allclose(ours[20], oracle(snn, x, 20, gated=True), rtol=1e-5, atol=1e-6)


# --- analog parts and errors -----------------------------------------------------------


class WithGELU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.mix = nn.Conv2d(8, 8, 1)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.gelu(self.mix(self.act(self.conv(x))))
        return self.fc(x.mean((2, 3)))


def test_gelu_is_refused_with_its_name_and_source_line(photo_crops) -> None:
    model = WithGELU().eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(snnlite.UnsupportedLayerError, match=r"'gelu'.*test_simulate\.py:\d+.*GELU"):
        snnlite.convert(model, [photo_crops[:4]], progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_kept_analog_parts_run_on_average_inputs_and_converge(photo_crops) -> None:
    torch.manual_seed(0)
    model = WithGELU().eval()
    snn = snnlite.convert(model, [photo_crops[:16]], keep_analog=["gelu"], iterations=20,
                          progress=False)  # fmt: skip
    assert list(snn.thresholds) == ["act"]
    x = photo_crops[16:20]
    with torch.no_grad():
        target = snn.relux()(x)
    out = snn.simulate(x, [16, 256], delay=0)
    assert relative_error(out[256], target) < relative_error(out[16], target)
    assert relative_error(out[256], target) < 0.05


def test_bad_inputs_raise_clear_errors(resnet18_photos, photo_crops) -> None:
    model = resnet18_photos
    with pytest.raises(ValueError, match="calibration data is empty"):
        snnlite.convert(model, [], progress=False)
    bad = photo_crops[:4].clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="calibration batch 1 contains NaN"):
        snnlite.convert(model, [photo_crops[:4], bad], progress=False)
    with pytest.raises(ValueError, match="method"):
        snnlite.convert(model, [photo_crops[:4]], method="magic", progress=False)
    with pytest.raises(TypeError, match="expected a tensor"):
        snnlite.convert(model, ["not a batch"], progress=False)
    snn = snnlite.convert(model, [(photo_crops[:4], torch.zeros(4))], iterations=2,
                          progress=False)  # fmt: skip
    thresholds = {k: v.clone() for k, v in snn.thresholds.items()}
    for T in (0, -3, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            snn.simulate(photo_crops[:2], [8, T])
    with pytest.raises(ValueError, match="delay"):
        snn.simulate(photo_crops[:2], [8], delay=-1)
    with pytest.raises(ValueError, match="NaN"):
        snn.simulate(bad, [8])
    assert all(torch.equal(thresholds[k], v) for k, v in snn.thresholds.items())


def test_progress_false_is_silent(resnet18_photos, photo_crops, capfd) -> None:
    snn = snnlite.convert(resnet18_photos, [photo_crops[:4]], iterations=2, progress=False)
    snn.simulate(photo_crops[:2], [4])
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    snn.simulate(photo_crops[:2], [4], progress=True)
    assert "simulate" in capfd.readouterr().err


def test_converted_zoo_resnet_keeps_its_accuracy(resnet_zoo_snn, fashion) -> None:
    """Real task check: on 500 test images the SNN at T = 64 is within 1.5 points of the ANN
    (measured here: ANN 93.8%, SNN 89.4 / 93.0 / 93.6 / 93.2% at T = 8 / 16 / 32 / 64)."""
    from snnlite import zoo
    from snnlite.metrics import accuracy_curve, ann_accuracy

    x, y = fashion["test"], fashion["labels"]
    ann = ann_accuracy(zoo.load("fmnist_resnet"), x, y)
    snn = accuracy_curve(resnet_zoo_snn, x, y, [16, 64], progress=False)
    assert snn[64] > ann - 0.015, (ann, snn)
    assert snn[16] < snn[64] + 0.01
