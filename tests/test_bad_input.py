"""Every wrong input a user can send, in one table: each gets ONE clear error, and changes
nothing.

For each row: the exception type, a message that says what is wrong and what to do, and,
after the error, the same hash of the user's model (parameters, buffers, training flags),
of the converted network, of the calibration tensors, and of the files on disk that the call
may touch (weights, data caches). Inputs that are *not* errors by decision (numpy integer T
and delays, delays longer than T, channels-last tensors) are checked to give the documented
result instead.
"""

from __future__ import annotations

import copy
import math
import pathlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import snnlite
from snnlite import zoo
from snnlite.checks import CalibrationDataError
from snnlite.data import DatasetNotFoundError, fashion, fashion_mnist
from snnlite.graph import SITES, activation_sites
from snnlite.neurons import ActivationSite
from snnlite.recipes import make_recipe
from tests.helpers import state_hash, tree_hash

SHAPE = (3, 8, 8)


def small_cnn() -> nn.Module:
    """conv-BN-ReLU, a max pool after the neuron, conv-ReLU, a linear head (eval mode)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Dropout(0.2), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )  # fmt: skip
    bn = model[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(16, *SHAPE, generator=generator) for _ in range(3)]
    model = small_cnn()
    snn = snnlite.convert(model, calibration, iterations=6, progress=False)
    x = torch.randn(4, *SHAPE, generator=generator)
    return {"model": model, "calibration": calibration, "snn": snn, "x": x}


def fingerprint(setup: dict[str, Any]) -> dict[str, Any]:
    """What no wrong call may change: the model, the SNN and its attributes, the data."""
    snn = setup["snn"]
    return {
        "model": state_hash(setup["model"]),
        "snn": state_hash(snn),
        "snn attributes": (snn.delay_estimate, snn.sample_shape, snn.max_pool),
        "calibration": [state_hash(nn.ParameterList([b])) for b in setup["calibration"]],
        "x": state_hash(nn.ParameterList([setup["x"]])),
    }


def convert(model: nn.Module, calibration: Any, **options: Any) -> snnlite.SpikingNetwork:
    return snnlite.convert(model, calibration, progress=False, **{"iterations": 3, **options})


def raising_midway() -> Iterator[torch.Tensor]:
    yield torch.randn(4, *SHAPE)
    raise OSError("the disk went away")


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[dict[str, Any]], Any]
    error: type[BaseException]
    match: str


def _train_only(model: nn.Module, kind: type) -> nn.Module:
    """A copy of ``model`` with only its ``kind`` modules in training mode."""
    model = copy.deepcopy(model)
    for module in model.modules():
        module.train(isinstance(module, kind))
    return model


def test_a_model_in_training_mode_is_refused_and_left_in_training_mode(setup) -> None:
    """Not put in eval mode behind the user's back, not converted as another function."""
    model = copy.deepcopy(setup["model"]).train()
    before = state_hash(model)
    with pytest.raises(ValueError, match="training mode"):
        convert(model, setup["calibration"])
    assert model.training and state_hash(model) == before
    # a training-mode model without batch norm or dropout computes its eval function: accepted
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    assert plain.training and convert(plain, setup["calibration"]).thresholds


def _on_meta(s: dict[str, Any]) -> Any:
    snn = copy.deepcopy(s["snn"]).to("meta")  # a network on another device than x
    return snn.simulate(s["x"], [8])


CASES = [
    Case(
        "model in training mode (batch statistics)",
        lambda s: convert(copy.deepcopy(s["model"]).train(), s["calibration"]),
        ValueError,
        r"in training mode: its BatchNorm2d '1' normalises each batch by its own "
        r"statistics.*Call model\.eval\(\)",
    ),
    Case(
        "dropout alone in training mode",
        lambda s: convert(_train_only(s["model"], nn.Dropout), s["calibration"]),
        ValueError,
        r"its Dropout '6' drops activations at random",
    ),
    Case(
        "half-precision calibration",
        lambda s: convert(s["model"], [b.half() for b in s["calibration"]]),
        TypeError,
        r"calibration batch 0 has dtype torch\.float16 but the network's weights "
        r"are torch\.float32: pass \.to\(torch\.float32\)",
    ),
    Case(
        "integer calibration",
        lambda s: convert(s["model"], [torch.randint(0, 255, (4, *SHAPE))]),
        TypeError,
        r"calibration batch 0 has dtype torch\.int64: .*floating-point.*\.float\(\)",
    ),
    Case(
        "calibration batch on the meta device",
        lambda s: convert(s["model"], [torch.empty(4, *SHAPE, device="meta")]),
        ValueError,
        r"calibration batch 0 is a meta tensor",
    ),
    Case(
        "calibration batches of mixed shapes",
        lambda s: convert(s["model"], [s["calibration"][0], torch.randn(4, 3, 6, 6)]),
        ValueError,
        r"cannot run on calibration batch 1 of shape \(4, 3, 6, 6\) \(batch 0 "
        r"had samples of shape \(3, 8, 8\)\)",
    ),
    Case(
        "calibration of the wrong number of channels",
        lambda s: convert(s["model"], [torch.randn(4, 1, 8, 8)]),
        ValueError,
        r"cannot run on calibration batch 0 of shape \(4, 1, 8, 8\): pass batches",
    ),
    Case(
        "calibration generator that raises midway",
        lambda s: convert(s["model"], raising_midway()),
        CalibrationDataError,
        r"raised OSError after 1 batch\(es\): the disk went away\. "
        r"Fix or replace the data source",
    ),
    Case(
        "empty calibration",
        lambda s: convert(s["model"], []),
        ValueError,
        "calibration data is empty",
    ),
    Case(
        "NaN in calibration",
        lambda s: convert(s["model"], [s["calibration"][0], torch.full((2, *SHAPE), math.nan)]),
        ValueError,
        "calibration batch 1 contains NaN",
    ),
    Case(
        "half-precision input",
        lambda s: s["snn"].simulate(s["x"].half(), [8]),
        TypeError,
        r"the input x has dtype torch\.float16 but the network's weights are "
        r"torch\.float32",
    ),
    Case(
        "integer input",
        lambda s: s["snn"].simulate((s["x"] * 10).long(), [8]),
        TypeError,
        r"dtype torch\.int64: the network takes floating-point inputs",
    ),
    Case(
        "input on the meta device",
        lambda s: s["snn"].simulate(s["x"].to("meta"), [8]),
        ValueError,
        "the input x is a meta tensor",
    ),
    Case(
        "network on another device than the input",
        _on_meta,
        ValueError,
        r"the input x is on device cpu but the network is on meta: move one",
    ),
    Case(
        "wrong number of channels",
        lambda s: s["snn"].simulate(torch.randn(2, 1, 8, 8), [8]),
        ValueError,
        r"cannot run on x of shape \(2, 1, 8, 8\); it was calibrated on samples "
        r"of shape \(3, 8, 8\)",
    ),
    Case(
        "wrong image size for a linear head",
        lambda s: s["snn"].simulate(torch.randn(2, 3, 10, 10), [8]),
        ValueError,
        r"cannot run on x of shape \(2, 3, 10, 10\)",
    ),
    Case(
        "one sample without its batch dimension",
        lambda s: s["snn"].simulate(s["x"][0], [8]),
        ValueError,
        r"x has shape \(3, 8, 8\).*x\.unsqueeze\(0\)",
    ),
    Case(
        "T as a float",
        lambda s: s["snn"].simulate(s["x"], 8.0),
        ValueError,
        r"positive integer, got 8\.0 \(a float: pass the int 8\)",
    ),
    Case(
        "T as a float in a list",
        lambda s: s["snn"].simulate(s["x"], [8, 16.0]),
        ValueError,
        r"got 16\.0 \(a float: pass the int 16\)",
    ),
    Case("T = 0", lambda s: s["snn"].simulate(s["x"], [0]), ValueError, "positive integer"),
    Case("T a bool", lambda s: s["snn"].simulate(s["x"], True), ValueError, "positive integer"),
    Case(
        "empty timesteps list",
        lambda s: s["snn"].simulate(s["x"], []),
        ValueError,
        r"timesteps is empty: pass one T or a list",
    ),
    Case(
        "negative delay",
        lambda s: s["snn"].simulate(s["x"], [8], delay=-1),
        ValueError,
        "delay must be a non-negative number of steps",
    ),
    Case(
        "NaN delay",
        lambda s: s["snn"].simulate(s["x"], [8], delay=math.nan),
        ValueError,
        "delay must be a non-negative number of steps",
    ),
    Case(
        "infinite delay",
        lambda s: s["snn"].simulate(s["x"], [8], delay=math.inf),
        ValueError,
        "delay must be a non-negative number of steps",
    ),
    Case(
        "unknown delay name",
        lambda s: s["snn"].simulate(s["x"], [8], delay="Auto"),
        ValueError,
        r"'auto' or 'half', got 'Auto'",
    ),
    Case(
        "empty delay list",
        lambda s: s["snn"].simulate(s["x"], [8], delay=[]),
        ValueError,
        "delay is an empty list",
    ),
]
if torch.cuda.is_available():
    CASES.append(
        Case(
            "input on the GPU, network on the CPU",
            lambda s: s["snn"].simulate(s["x"].cuda(), [8]),
            ValueError,
            r"is on device cuda:0 but the network is on cpu",
        )
    )


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_wrong_input_gets_one_clear_error_and_changes_nothing(setup, case: Case) -> None:
    before = fingerprint(setup)
    with pytest.raises(case.error, match=case.match) as raised:
        case.call(setup)
    assert type(raised.value) is case.error  # one error of its own type, not a wrapper
    assert fingerprint(setup) == before


def test_a_calibration_error_keeps_its_cause(setup) -> None:
    with pytest.raises(CalibrationDataError) as raised:
        convert(setup["model"], raising_midway())
    assert isinstance(raised.value.__cause__, OSError)


def test_keyboard_interrupt_during_calibration_passes_and_leaves_no_trace(setup) -> None:
    """Ctrl-C is never wrapped nor swallowed; afterwards nothing remembers the interrupted run:
    the model is unchanged and a new conversion gives exactly the thresholds of a fresh one."""
    model, calibration = setup["model"], setup["calibration"]
    before = state_hash(model)

    def interrupted() -> Iterator[torch.Tensor]:
        yield calibration[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(model, interrupted())
    assert state_hash(model) == before
    again = convert(model, calibration, iterations=6)
    assert state_hash(again) == state_hash(setup["snn"])


def test_calibrate_puts_the_sites_back_after_an_error(setup) -> None:
    """``calibrate`` swaps recipes into the prepared graph: any error, an interrupt included,
    puts the original sites back, thresholds and all."""
    ann = snnlite.prepare(setup["model"])
    sites = activation_sites(ann)
    for site in sites.values():
        site.threshold = torch.tensor(1.5)
    before = state_hash(ann)
    recipes = {name: make_recipe("ltb", "channel", site.cap) for name, site in sites.items()}

    def interrupted() -> Iterator[torch.Tensor]:
        yield setup["calibration"][0]
        raise KeyboardInterrupt

    for data, error in ((raising_midway(), CalibrationDataError),
                        (interrupted(), KeyboardInterrupt),
                        ([torch.randn(2, 1, 8, 8)], ValueError)):  # fmt: skip
        with pytest.raises(error):
            snnlite.calibrate(ann, recipes, data, iterations=3, progress=False)
        assert state_hash(ann) == before
        assert all(type(s) is ActivationSite for s in ann.get_submodule(SITES).children())


# --- inputs that are accepted, by decision: the documented result --------------------------


def test_numpy_integers_are_time_step_counts_and_delays(setup) -> None:
    snn, x = setup["snn"], setup["x"]
    reference = snn.simulate(x, [8, 12], delay=2)
    assert torch.equal(snn.simulate(x, np.int64(8), delay=np.int32(2))[8], reference[8])
    numpy_list = snn.simulate(x, [np.int64(12), np.int16(8)], delay=2)
    assert sorted(numpy_list) == [8, 12] and all(type(T) is int for T in numpy_list)
    assert all(torch.equal(numpy_list[T], reference[T]) for T in (8, 12))
    assert torch.equal(snn(x, np.int64(8), delay=2), reference[8])  # forward too


def test_a_delay_longer_than_T_reads_the_last_steps(setup) -> None:
    """Not an error: the readout rule reads the last MIN_WINDOW (4) steps, as it does for an
    ``"auto"`` estimate beyond a small T, so one fixed delay can serve a whole T curve."""
    snn, x = setup["snn"], setup["x"]
    long = snn.simulate(x, [8, 64], delay=100)
    assert torch.equal(long[8], snn.simulate(x, [8], delay=8 - 4)[8])
    assert torch.equal(long[64], snn.simulate(x, [64], delay=60)[64])
    assert torch.equal(snn.simulate(x, [3], delay=50)[3], snn.simulate(x, [3], delay=0)[3])


def test_channels_last_inputs_give_the_same_results(setup) -> None:
    """Channels-last tensors (simulated and as calibration) are accepted and change nothing."""
    snn, x = setup["snn"], setup["x"]
    last = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(snn.simulate(last, [4, 16], delay=0)[16],
                       snn.simulate(x, [4, 16], delay=0)[16])  # fmt: skip
    calibration = [b.contiguous(memory_format=torch.channels_last) for b in setup["calibration"]]
    converted = convert(setup["model"], calibration, iterations=6)
    for name, theta in setup["snn"].thresholds.items():
        torch.testing.assert_close(converted.thresholds[name], theta, rtol=1e-6, atol=1e-7)


def test_a_model_on_any_device_keeps_calibration_batches_movable(setup) -> None:
    """Calibration batches on another real device are moved to the model's (a CPU data
    loader for a GPU model); this checks the CPU -> CPU no-op and, with a GPU, CPU -> GPU."""
    if not torch.cuda.is_available():
        converted = convert(setup["model"], setup["calibration"], iterations=6)
        assert state_hash(converted) == state_hash(setup["snn"])
        return
    model = copy.deepcopy(setup["model"]).cuda()
    converted = convert(model, setup["calibration"], iterations=6)  # CPU batches, GPU model
    assert converted.simulate(setup["x"].cuda(), [8])[8].device.type == "cuda"


# --- weight files and data sets -------------------------------------------------------------


class Trap:
    """Unpickling this would create ``marker``: weights_only loading must never do it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.marker,))


def test_corrupt_truncated_or_foreign_weight_files_get_one_clear_error(tmp_path: Path) -> None:
    name = "fmnist_vgg"
    weights_before = tree_hash(zoo.WEIGHTS_DIR)
    original = Path(zoo.info(name)["file"])
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(original.read_bytes()[: original.stat().st_size // 3])
    marker = tmp_path / "code-ran"
    trapped = tmp_path / "trapped.pth"
    torch.save({"weight": torch.zeros(1), "trap": Trap(marker)}, trapped)
    foreign = tmp_path / "resnet.pth"
    shutil.copyfile(zoo.info("fmnist_resnet")["file"], foreign)
    files_before = tree_hash(tmp_path)

    with pytest.raises(zoo.WeightsHashError, match=r"(?s)sha256 mismatch.*git checkout -- "
                       r"snnlite/zoo/weights/fmnist_vgg\.pth.*train_classifier"):  # fmt: skip
        zoo.load(name, path=truncated)
    with pytest.raises(zoo.WeightsFileError, match=r"truncated, corrupt, or not a state dict"):
        zoo.load(name, path=truncated, verify=False)
    with pytest.raises(zoo.WeightsFileError, match=r"weights_only|Unpickl"):
        zoo.load(name, path=trapped, verify=False)
    assert not marker.exists()  # the file's code never ran
    with pytest.raises(zoo.WeightsFileError, match=r"does not hold weights of zoo model"):
        zoo.load(name, path=foreign, verify=False)
    with pytest.raises(FileNotFoundError, match=r"not found.*Restore the shipped file"):
        zoo.load(name, path=tmp_path / "missing.pth")
    assert tree_hash(zoo.WEIGHTS_DIR) == weights_before
    assert tree_hash(tmp_path) == files_before


def test_a_missing_dataset_without_network_says_how_to_get_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(fashion, "DEBIAN_DIR", tmp_path / "no-debian")

    def offline(*args: Any, **kwargs: Any) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(fashion.datasets.FashionMNIST, "download", offline)
    root = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError) as raised:
        fashion_mnist("train", root=root)
    message = str(raised.value)
    for hint in ("apt-get install dataset-fashion-mnist", "make data", "SNNLITE_DATA",
                 "network unreachable"):  # fmt: skip
        assert hint in message, hint
    assert isinstance(raised.value, RuntimeError)  # what callers caught before
    assert tree_hash(root) == {}  # no partial file that a later run would trust
