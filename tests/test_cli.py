"""The ``snnlite`` command line: a zoo model end to end, ``--help``, and bad input.

The end-to-end run is small (200 calibration images in 4 batches, 200 test images, T = 8
and 16) and its numbers are checked against the library's own functions on the same inputs.
So are a zoo segmenter's and a zoo detector's (4 calibration scenes in batches of 2, 40
updates, 2 test scenes, T = 4 and 8: enough updates that the clipped ANN does not label
every pixel background, as it does after a handful).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import snnlite
from snnlite import zoo
from snnlite.cli import main, parser
from snnlite.cli.report import staging
from snnlite.data import fashion_mnist_tensors
from snnlite.detection import convert_detector
from snnlite.metrics import (
    accuracy_curve,
    ann_accuracy,
    ann_map,
    ann_miou,
    detection_map,
    map_curve,
    miou_curve,
)
from snnlite.zoo.scene_eval import NUM_CLASSES, TEST_SCENES, TRAIN_SCENES, load_scenes

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--calibration-images", "200", "--calibration-batches", "4", "--images", "200",
         "--timesteps", "8,16", "--no-progress"]  # fmt: skip
SCENES = {"calibration": 4, "batch": 2, "updates": 40, "test": 2}
SMALL_SCENES = ["--data", "fashion-scenes", "--calibration-images", str(SCENES["calibration"]),
                "--calibration-batch-size", str(SCENES["batch"]),
                "--calibration-batches", str(SCENES["updates"]), "--images", str(SCENES["test"]),
                "--timesteps", "4,8", "--no-progress"]  # fmt: skip
DELAYS = ["auto", "half", 0]


def test_the_console_script_is_this_main() -> None:
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+)
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert re.findall(r'^(\w+) = "([\w.:]+)"', section, flags=re.M) == [
        ("snnlite", "snnlite.cli:main")
    ]


def test_every_flag_is_explained() -> None:
    cli = parser()
    commands = next(a for a in cli._actions if a.dest == "command").choices
    assert set(commands) == {"convert", "export", "energy"}
    for name in ("convert", "export"):
        flags = [a for a in commands[name]._actions if a.option_strings and a.dest != "help"]
        assert {"model", "weights", "data", "calibration", "method", "granularity",
                "target_timesteps", "task"} <= {a.dest for a in flags}  # fmt: skip
        assert all(a.help and len(a.help) > 20 for a in flags), name
        task = next(a for a in flags if a.dest == "task")
        assert task.default == "auto" and set(task.choices) == {
            "auto", "classification", "segmentation", "detection"}  # fmt: skip


def test_help_runs_as_a_module() -> None:
    result = subprocess.run([sys.executable, "-m", "snnlite", "convert", "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for flag in ("--model", "--data", "--timesteps", "--target-timesteps", "--out"):
        assert flag in result.stdout


def test_energy_is_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["energy", "--help"])
    assert exit_.value.code == 0
    assert "snnlite energy" in capsys.readouterr().out


def test_a_zoo_model_end_to_end_equals_the_api(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert main(["convert", "--model", "zoo:fmnist_resnet", "--data", "fashion-mnist",
                 "--out", str(out), "--calibration-batch-size", "50", *SMALL]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.png", "firing_rates.png", "results.json", "summary.md"]  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no staging folder left
    values = json.loads((out / "results.json").read_text())

    # The same conversion and evaluation through the library.
    train, train_labels = fashion_mnist_tensors("train")
    test, labels = fashion_mnist_tensors("test")
    test, labels = test[:200], labels[:200]
    model = zoo.load("fmnist_resnet")
    calibration = DataLoader(TensorDataset(train[:200], train_labels[:200]), batch_size=50)
    snn = snnlite.convert(model, calibration, iterations=4, progress=False)
    curves = accuracy_curve(snn, test, labels, [8, 16], delay=["auto", "half", 0],
                            progress=False, record_spikes=True)  # fmt: skip
    assert values["images"] == 200
    assert values["ann_accuracy"] == ann_accuracy(model, test, labels)
    assert values["clipped_ann_accuracy"] == ann_accuracy(snn.relux(), test, labels)
    for T in (8, 16):
        assert values[f"snn_accuracy_T{T}"] == curves["auto"][T]
        assert values[f"snn_accuracy_T{T}_half"] == curves["half"][T]
        assert values[f"snn_accuracy_T{T}_d0"] == curves[0][T]
        assert values[f"delay_T{T}"] == snn.skipped_steps(T, "auto")
        assert values[f"snn_sops_T{T}"] == pytest.approx(snn.last_activity.sops_at([T])[T])
    for name, theta in snn.thresholds.items():
        assert values[f"threshold_{name}_max"] == pytest.approx(float(theta.max()))
    assert "| 16 |" in (out / "summary.md").read_text()


@pytest.mark.parametrize(
    ("flags", "option", "row"),
    [
        (["--spikes-per-step", "2"], {"spikes_per_step": 2}, "| spikes per step | `2` |"),
        (["--signed-spikes"], {"signed_spikes": True}, "| signed spikes | `True` |"),
        (
            ["--signed-spikes", "--catch-up", "3"],
            {"signed_spikes": True, "catch_up": 3},
            "| catch-up (spikes per step) | `3` |",
        ),
    ],
)
def test_spike_options_from_the_command_line_equal_the_api(
    tmp_path: Path, flags: list[str], option: dict, row: str
) -> None:
    """``--spikes-per-step 2``, ``--signed-spikes`` (``--catch-up 3``): the library's burst
    or signed network, its accuracy and SOPs, and the summary says which spikes a step carries."""
    out = tmp_path / "report"
    assert main(["convert", "--model", "zoo:fmnist_resnet", "--data", "fashion-mnist",
                 "--out", str(out), "--calibration-batch-size", "50", *flags,
                 "--no-plots", *SMALL]) == 0  # fmt: skip
    values = json.loads((out / "results.json").read_text())
    train, train_labels = fashion_mnist_tensors("train")
    test, labels = fashion_mnist_tensors("test")
    calibration = DataLoader(TensorDataset(train[:200], train_labels[:200]), batch_size=50)
    snn = snnlite.convert(zoo.load("fmnist_resnet"), calibration, iterations=4, progress=False,
                          **option)  # fmt: skip
    curves = accuracy_curve(snn, test[:200], labels[:200], [8, 16], progress=False,
                            record_spikes=True)  # fmt: skip
    for T in (8, 16):
        assert values[f"snn_accuracy_T{T}"] == curves[T]
        assert values[f"snn_sops_T{T}"] == pytest.approx(snn.last_activity.sops_at([T])[T])
    assert row in (out / "summary.md").read_text()


def _scenes() -> tuple[list, dict]:
    """The CLI's calibration batches and test scenes, made here with the library."""
    train = load_scenes(progress=False, **{**TRAIN_SCENES, "num_scenes": SCENES["calibration"]})
    test = load_scenes(progress=False, **{**TEST_SCENES, "num_scenes": SCENES["test"]})
    return list(train["images"].split(SCENES["batch"])), test


def _convert_and_read(name: str, out: Path, *flags: str) -> dict:
    assert main(["convert", "--model", f"zoo:{name}", "--out", str(out), *SMALL_SCENES,
                 *flags]) == 0  # fmt: skip
    return json.loads((out / "results.json").read_text())


def test_a_zoo_segmenter_end_to_end_equals_the_api(tmp_path: Path) -> None:
    out = tmp_path / "report"
    values = _convert_and_read("scenes_fcn", out)
    assert sorted(p.name for p in out.iterdir()) == [
        "firing_rates.png", "miou.png", "results.json", "summary.md"]  # fmt: skip

    calibration, test = _scenes()
    model = zoo.load("scenes_fcn")
    snn = snnlite.convert(model, calibration, iterations=SCENES["updates"], progress=False)
    x, masks = test["images"], test["semantic"].long()
    curves = miou_curve(snn, x, masks, NUM_CLASSES, [4, 8], DELAYS, progress=False,
                        record_spikes=True)  # fmt: skip
    assert values["images"] == SCENES["test"]
    assert values["ann_miou"] == ann_miou(model, x, masks, NUM_CLASSES)
    assert values["clipped_ann_miou"] == ann_miou(snn.relux(), x, masks, NUM_CLASSES)
    assert values["clipped_ann_miou"] > 0.2  # not all background (0.1): the numbers mean something
    for T in (4, 8):
        assert values[f"snn_miou_T{T}"] == curves["auto"][T]
        assert values[f"snn_miou_T{T}_half"] == curves["half"][T]
        assert values[f"snn_miou_T{T}_d0"] == curves[0][T]
        assert values[f"snn_sops_T{T}"] == pytest.approx(snn.last_activity.sops_at([T])[T])
    assert "accuracy" not in " ".join(values)
    summary = (out / "summary.md").read_text()
    assert "SNN mIoU" in summary and "| task | `segmentation` |" in summary


def test_a_zoo_detector_end_to_end_equals_the_api(tmp_path: Path) -> None:
    values = _convert_and_read("scenes_retinanet", tmp_path / "report", "--no-plots")

    calibration, test = _scenes()
    model = zoo.load("scenes_retinanet")
    detector = convert_detector(model, calibration, iterations=SCENES["updates"], progress=False)
    x, targets = list(test["images"]), test["targets"]
    ann = ann_map(model, x, targets)
    clipped = detection_map(detector.ann(x), targets)
    curves = map_curve(detector, x, targets, [4, 8], DELAYS, progress=False)
    for prefix, key in (("", "map"), ("iou50_", "map_50")):
        assert values[f"{prefix}ann_map"] == ann[key]
        assert values[f"{prefix}clipped_ann_map"] == clipped[key]
        for T in (4, 8):
            assert values[f"{prefix}snn_map_T{T}"] == curves["auto"][T][key]
            assert values[f"{prefix}snn_map_T{T}_half"] == curves["half"][T][key]
            assert values[f"{prefix}snn_map_T{T}_d0"] == curves[0][T][key]
    assert values["snn_map_T8"] > 0  # the SNN finds boxes at T = 8
    assert "SNN mAP@[.5:.95] | SNN mAP@.5" in (tmp_path / "report" / "summary.md").read_text()


def test_export_refuses_a_dense_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nir = tmp_path / "fcn.nir"
    status = main(["export", "--model", "zoo:scenes_fcn", "--data", "fashion-scenes",
                   "--nir", str(nir)])  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert status == 1 and len(error.splitlines()) == 1 and "segmentation" in error
    assert not nir.exists()


def _model_file(tmp_path: Path) -> str:
    source = "from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(2704, 10)).eval()\n"  # noqa: E501
    (tmp_path / "gelu_model.py").write_text(source)
    return f"{tmp_path / 'gelu_model.py'}:build"


BAD = {
    "missing path": (["--model", "zoo:fmnist_vgg", "--data", "imagefolder:/no/such/folder"],
                     "no such folder"),
    "unknown model": (["--model", "zoo:no_such_model", "--data", "fashion-mnist"],
                      "unknown zoo model"),
    "unknown torchvision model": (["--model", "torchvision:resnet_nope", "--weights", "DEFAULT",
                                   "--data", "fashion-mnist"], "unknown torchvision"),
    "unconvertible model": (["--model", "FILE", "--data", "fashion-mnist"], "gelu"),
    "segmenter on labels": (["--model", "zoo:scenes_fcn", "--data", "fashion-mnist"],
                            "the task and the data do not match: zoo:scenes_fcn is a "
                            "segmentation model"),
    "classifier on scenes": (["--model", "zoo:fmnist_vgg", "--data", "fashion-scenes"],
                             "the task and the data do not match"),
    "user detector on labels": (["--model", "FILE", "--task", "detection", "--data",
                                 "fashion-mnist"], "is a detection model"),
    "scene calibration of a classifier": (["--model", "zoo:fmnist_vgg", "--data",
                                           "fashion-mnist", "--calibration", "fashion-scenes"],
                                          "--calibration fashion-scenes"),
    "task against the zoo": (["--model", "zoo:scenes_retinanet", "--task", "segmentation",
                              "--data", "fashion-scenes"], "does not match zoo:scenes_retinanet"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_leaves_no_report(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, expected = BAD[case]
    args = [_model_file(tmp_path) if a == "FILE" else a for a in args]
    out = tmp_path / "report"
    status = main(["convert", *args, "--out", str(out), *SMALL])
    error = capsys.readouterr().err.strip()
    assert status == 1
    assert len(error.splitlines()) == 1 and error.startswith("snnlite convert: error:")
    assert expected in error.lower()
    assert not out.exists() and not any(p.name.startswith(".report") for p in tmp_path.iterdir())


@pytest.mark.parametrize("timesteps", ["0,8", "-4", "8,x", "4.5"])
def test_timesteps_must_be_positive_integers(
    timesteps: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["convert", "--model", "zoo:fmnist_vgg", "--data", "fashion-mnist",
              "--out", str(tmp_path / "r"), "--timesteps", timesteps])  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(error.splitlines()) == 1
    assert re.search(r"argument --timesteps", error)
    assert not (tmp_path / "r").exists()


def test_an_existing_report_is_kept_unless_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    out.mkdir()
    status = main(["convert", "--model", "zoo:fmnist_vgg", "--data", "fashion-mnist",
                   "--out", str(out), *SMALL])  # fmt: skip
    assert status == 1 and "--overwrite" in capsys.readouterr().err


def test_a_failed_report_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "report"
    with pytest.raises(RuntimeError), staging(out, overwrite=False) as folder:
        (folder / "results.json").write_text("{}")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    with staging(out, overwrite=False) as folder:
        (folder / "results.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_a_torchvision_model_on_an_image_folder(tmp_path: Path) -> None:
    """``torchvision:NAME --weights MEMBER`` with ``imagefolder:PATH`` data: real ImageNet
    weights on real photos (scikit-image's), preprocessed by the weights' own transforms.
    The folder's class indices are not ImageNet's, so only the plumbing is checked: the
    report's ANN accuracy is the one torchvision's model gives on the folder directly."""
    import torchvision
    from PIL import Image
    from skimage import data as photos

    from snnlite.zoo.registry import seed_torchvision_cache

    assert seed_torchvision_cache() is not None  # offline: torchvision's cache, seeded
    folder = tmp_path / "photos"
    for label, names in {"animals": ["cat", "chelsea"], "things": ["coffee", "rocket"]}.items():
        (folder / label).mkdir(parents=True)
        for name in names:
            Image.fromarray(getattr(photos, name)()).save(folder / label / f"{name}.png")
    out = tmp_path / "report"
    assert main(["convert", "--model", "torchvision:mobilenet_v2", "--weights", "IMAGENET1K_V1",
                 "--data", f"imagefolder:{folder}", "--calibration-images", "4",
                 "--calibration-batch-size", "2", "--calibration-batches", "2",
                 "--images", "4", "--timesteps", "4", "--no-progress",
                 "--out", str(out)]) == 0  # fmt: skip
    values = json.loads((out / "results.json").read_text())

    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    dataset = torchvision.datasets.ImageFolder(folder, transform=weights.transforms())
    images, labels = map(torch.stack, zip(*[(x, torch.tensor(y)) for x, y in dataset]))
    model = torchvision.models.mobilenet_v2(weights=weights).eval()
    assert values["images"] == 4
    assert values["ann_accuracy"] == ann_accuracy(model, images, labels)
    assert 0.0 <= values["snn_accuracy_T4"] <= 1.0
    assert values["snn_sops_T4"] > 0
