"""Shared fixtures: real photos and torchvision networks with realistic batch-norm statistics."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def photo_crops() -> torch.Tensor:
    """48 deterministic augmented crops of scikit-image photos, 32x32, ImageNet-normalised."""
    from snnlite.data import augmented_crops

    return augmented_crops(48, seed=0, size=32)


def with_data_statistics(model: nn.Module, images: torch.Tensor, batch: int = 16) -> nn.Module:
    """Re-estimate every batch norm's running statistics on real images, then eval.

    A ``weights=None`` torchvision network has BN statistics of 0/1, which no trained network
    has; recomputing them on real photos (a standard BN recalibration) gives activations of
    realistic scale without any training, so conversion is tested on a sensible network.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            model(images[start : start + batch])
    return model.eval()


@pytest.fixture(scope="session")
def resnet18_photos(photo_crops: torch.Tensor) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    return with_data_statistics(model, photo_crops)


@pytest.fixture(scope="session")
def fashion() -> dict[str, torch.Tensor]:
    """Real Fashion-MNIST: 2000 training images for calibration, 500 test images + labels."""
    from snnlite.data import fashion_mnist_tensors

    train, _ = fashion_mnist_tensors("train")
    test, labels = fashion_mnist_tensors("test")
    return {"train": train[:2000], "test": test[:500], "labels": labels[:500]}


def _zoo_snn(name: str, fashion: dict, **options):
    import snnlite
    from snnlite import zoo

    calibration = list(fashion["train"][:200].split(20))  # cycled to the default 600 updates
    return snnlite.convert(zoo.load(name), calibration, progress=False, **options)


@pytest.fixture(scope="session")
def resnet_zoo_snn(fashion):
    """The zoo's trained Fashion-MNIST ResNet (torchvision BasicBlocks), converted with LTB."""
    return _zoo_snn("fmnist_resnet", fashion)


@pytest.fixture(scope="session", params=["gated", "current"])
def vgg_zoo_snn(request, fashion):
    """The zoo's trained VGG-style net (max pools after spiking layers), both pool forms."""
    return request.param, _zoo_snn("fmnist_vgg", fashion, max_pool=request.param)


# --- the book's chapters ------------------------------------------------------------------

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
BOOK_EXTENSIONS = Path(__file__).resolve().parents[1] / "book" / "_ext"


def headless_widgets() -> None:
    """The book extension's patch against nbclient's widget hang, applied in this process
    (book/_ext/widget_outputs.py says what it changes and why)."""
    spec = importlib.util.spec_from_file_location(
        "widget_outputs", BOOK_EXTENSIONS / "widget_outputs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.headless_widgets()


SOLUTION = re.compile(r"<details>(.*?)</details>", flags=re.S)
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", flags=re.S)
CELL_TIMEOUT = 300  # seconds per cell: 5x the slowest CI-sized cell, turns a hang into an error


def solution_code(markdown: str) -> list[str]:
    """The Python blocks inside the ``<details>`` solutions of a Markdown cell."""
    return [code for block in SOLUTION.findall(markdown) for code in PYTHON_BLOCK.findall(block)]


def with_solutions(notebook: Path, target: Path) -> Path:
    """A copy of ``notebook`` whose solution blocks run as code cells before its last cell."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    code = [c for cell in nb.cells if cell.cell_type == "markdown"
            for c in solution_code(cell.source)]  # fmt: skip
    nb.cells[-1:-1] = [nbformat.v4.new_code_cell(c) for c in code]
    nbformat.write(nb, target)
    return target


@pytest.fixture(scope="session")
def run_notebook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], dict]]:
    """Run a chapter once with papermill at its CI parameters; return the numbers it wrote.

    The ``ci`` section of notebooks/params.yml overrides the chapter's ``parameters`` cell and
    ``results_dir`` points at a temporary folder, where the chapter writes ``<name>.json``.
    The book's profile variables are cleared so that the ``ci`` values are the ones used.
    The exercises' solutions (Python blocks inside ``<details>``, folded in Jupyter as on the
    web) run too: they are appended as code cells before the chapter's last cell.
    """
    papermill = pytest.importorskip("papermill")
    import yaml

    # Widget cells hung CI (jupyter/nbclient#312: chapter 1's interact cell, kernel and
    # client idle); papermill runs nbclient in this process.
    headless_widgets()
    ci = yaml.safe_load((NOTEBOOKS / "params.yml").read_text())["ci"]
    out = tmp_path_factory.mktemp("notebooks")
    done: dict[str, dict] = {}
    env = {key: os.environ.pop(key, None) for key in ("SNNLITE_PROFILE", "SNNLITE_PARAMS")}

    def run(name: str) -> dict:
        if name not in done:
            parameters = {**(ci.get(name) or {}), "results_dir": str(out)}
            source = with_solutions(NOTEBOOKS / f"{name}.ipynb", out / f"{name}.in.ipynb")
            for attempt in (1, 2):
                try:
                    papermill.execute_notebook(
                        str(source), str(out / f"{name}.ipynb"),
                        parameters=parameters, cwd=str(NOTEBOOKS), kernel_name="python3",
                        progress_bar=False, execution_timeout=CELL_TIMEOUT,
                    )  # fmt: skip
                    break
                except TimeoutError:
                    # Should a cell still hang, it is retried once in a fresh kernel; a
                    # second timeout fails the test.
                    if attempt == 2:
                        raise
            done[name] = json.loads((out / f"{name}.json").read_text())
        return done[name]

    run.folder = out  # the executed notebooks, <name>.ipynb, with their outputs
    yield run
    for key, value in env.items():
        if value is not None:
            os.environ[key] = value
