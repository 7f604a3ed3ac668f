"""The stored speed tables (bench/speed_zoo.* from bench/bench_simulate.py, bench/speed_224.*
from bench/bench_224.py, bench/neurons_224.* from bench/bench_neurons.py): their rendering,
what they claim, and the profiler behind the 224 px table's "where the time goes".

Speeds are not re-measured here: timings belong to bench/, as ratios taken in one run (a
test run shares the machine with other tests, which would make them noise). What the suite
holds is that each Markdown table is the script's rendering of its JSON, headed by the
command that wrote it, and that the stored ratios meet the targets they are shown against.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import snnlite
from tests.helpers import bench_script

BENCH = Path(__file__).resolve().parents[1] / "bench"
speed_zoo = bench_script("bench_simulate")
speed_224 = bench_script("bench_224")
speed_gpu = bench_script("bench_gpu")
speed_neurons = bench_script("bench_neurons")


def stored(stem: str) -> dict:
    return json.loads((BENCH / f"{stem}.json").read_text())


@pytest.mark.parametrize(("stem", "script"), [("speed_zoo", speed_zoo), ("speed_224", speed_224),
                                             ("neurons_224", speed_neurons)])  # fmt: skip
def test_the_stored_table_is_the_scripts_rendering_of_its_numbers(stem, script) -> None:
    table = stored(stem)
    assert table["command"].startswith(f"python bench/{Path(script.__file__).name}")
    text = (BENCH / f"{stem}.md").read_text()
    assert text.startswith(f"<!-- written by: {table['command']} -->")
    assert text == script.markdown(table)


def test_zoo_classifiers_simulate_at_the_dense_bound_and_beyond_spikingjelly() -> None:
    table = stored("speed_zoo")
    assert set(table["models"]) == {"fmnist_vgg", "fmnist_resnet"}
    for name, result in table["models"].items():
        ratios = result["ratios"]
        assert ratios["snnlite / dense bound"] >= 1.0, name
        assert ratios["snnlite / SpikingJelly"] >= 1.3, name
    memory = table["memory"]
    assert memory["T=1024 MB"] <= 1.1 * memory["T=64 MB"]  # flat in T


def test_224px_models_simulate_at_least_at_the_plain_dense_bound() -> None:
    """MobileNetV2 at least at its dense bound in either layout, ResNet-18 1.4x the plain one
    (its stem runs once) and at least its channels-last one."""
    results = stored("speed_224")["results"]
    for name, result in results.items():
        speed = result["speed"]
        assert speed["snnlite / dense bound"] >= 1.0, name
        assert speed["snnlite / dense bound channels-last"] >= 1.0, name
        assert speed["snnlite / SpikingJelly 2.0"] > 1.0, name
        if name.startswith("resnet18"):
            assert speed["snnlite / dense bound"] >= 1.4, name
        profile = result["profile"]["snnlite channels-last"]
        assert "IFNeuron" in profile and "BatchNorm2d" not in profile  # BN folded away


def test_each_neuron_option_is_priced_against_binary_spikes() -> None:
    """bench/neurons_224.*: every option with its bits per step; in the same rounds each is
    slower than binary spikes (it does more per step); catching up within 25% of the signed
    neurons' time (the same fused kernel's loop, with divisions)."""
    results = stored("neurons_224")["results"]
    assert list(results) == list(speed_neurons.OPTIONS)
    for label, result in results.items():
        assert result["bits per step"] == speed_neurons.OPTIONS[label][1], label
    assert results["binary"]["time / binary"] == 1.0
    signed = results["signed"]["time / binary"]
    for label, result in results.items():
        if label != "binary":
            assert result["time / binary"] > 1.0, label
        if "catch-up" in label:
            assert result["time / binary"] <= 1.25 * signed, label


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pointwise = nn.Conv2d(8, 8, 1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.depthwise(torch.relu(self.pointwise(torch.relu(self.conv(x))))))
        return self.head(x.mean((2, 3)))


def test_the_profile_splits_one_run_by_layer_kind(photo_crops) -> None:
    """Every layer call lands in its kind, neurons included; the parts add up to the run."""
    torch.manual_seed(0)
    model = Tiny().eval()
    snn = snnlite.convert(model, [photo_crops[:8]], iterations=2, progress=False)
    assert speed_224.kind(model.pointwise) == "Conv2d 1x1"
    assert speed_224.kind(model.depthwise) == "Conv2d depthwise"
    assert speed_224.kind(model.conv) == "Conv2d"
    profile = speed_224.time_per_kind(lambda: snn.simulate(photo_crops[:4], 8), work=32)
    assert {"IFNeuron", "Conv2d 1x1", "Conv2d depthwise", "Linear"} <= set(profile)
    assert all(ms > 0 for name, ms in profile.items() if name != "outside layers")
    hooks = nn.modules.module._global_forward_hooks
    assert not hooks  # removed after the run


def test_switching_a_neuron_option_simulates_what_convert_builds(photo_crops) -> None:
    """The neuron bench converts once and switches each option on a copy: the same readout,
    bit for bit, as ``convert(..., **options)`` from the same calibration."""
    torch.manual_seed(0)
    model = Tiny().eval()
    calibration, x = [photo_crops[:8]], photo_crops[8:12]
    binary = snnlite.convert(model, calibration, iterations=2, progress=False)
    for label, (options, _bits) in speed_neurons.OPTIONS.items():
        built = snnlite.convert(model, calibration, iterations=2, progress=False, **options)
        switched = speed_neurons.with_neuron(binary, options)
        assert binary.spikes_per_step == 1 and not binary.signed_spikes  # left as it was
        want, got = built.simulate(x, [4, 8]), switched.simulate(x, [4, 8])
        for T in (4, 8):
            assert torch.equal(got[T], want[T]), (label, T)


def test_the_gpu_bench_runs_end_to_end_on_a_cpu(monkeypatch) -> None:
    """bench/bench_gpu.py waits for a lent GPU; on small CPU crops every part runs and says
    what it measured (peak device memory is a CUDA measurement: none here)."""
    argv = ["bench_gpu.py", "--device", "cpu", "--images", "2", "--timesteps", "2", "--size",
            "32", "--repeats", "1", "--memory-timesteps", "2", "--calibration-batches", "1",
            "--calibration-batch", "2", "--updates", "4", "--no-write"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    table = speed_gpu.main()
    assert table["device"] == "cpu" and table["peak memory MB"] is None
    for name, speed in table["speed"].items():
        assert speed["snnlite (image-steps/s)"] > 0 and speed["snnlite / dense bound"] > 0, name
    assert table["conversion"]["seconds"] > 0
    assert speed_gpu.markdown(table).startswith(f"<!-- written by: {table['command']} -->")
    if not torch.cuda.is_available():
        monkeypatch.setattr(sys, "argv", ["bench_gpu.py"])
        with pytest.raises(SystemExit, match="no CUDA device"):
            speed_gpu.main()
