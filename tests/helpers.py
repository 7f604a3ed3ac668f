"""Shared test helpers: an independent step-by-step oracle of the simulation, state hashes,
and the rule for missing test data.

The oracle is the plainest possible simulation, written independently of snnlite.neurons
and snnlite.pooling: the clipped ANN's graph run once per time step with stateful IF
neurons (and gated or cumulative max pools) in place of its activation sites.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

import snnlite
from snnlite.graph import SITES


class StepIF(nn.Module):
    """One IF neuron step at a time, written independently of snnlite.neurons."""

    def __init__(self, threshold: torch.Tensor) -> None:
        super().__init__()
        self.theta = threshold
        self.u = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        theta = self.theta.view(-1, *([1] * (z.dim() - 2))) if self.theta.dim() else self.theta
        if self.u is None:
            self.u = (theta / 2).expand_as(z).clone()
        self.u = self.u + z
        spike = torch.where((self.u >= theta) & (theta > 0), theta, torch.zeros_like(self.u))
        self.u = self.u - spike
        return spike


class StepGatedPool(nn.Module):
    """Max pool gated by the running sum of its input, one step at a time."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool, self.sum = pool, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sum = x.clone() if self.sum is None else self.sum + x
        _, idx = nn.functional.max_pool2d(
            self.sum, self.pool.kernel_size, self.pool.stride, self.pool.padding,
            return_indices=True,
        )  # fmt: skip
        return x.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)


class StepCumulativePool(nn.Module):
    """Max pool of the running sums, passed as its increment, one step at a time."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool, self.sum, self.largest = pool, None, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sum = x.clone() if self.sum is None else self.sum + x
        largest = self.pool(self.sum)
        before = torch.zeros_like(largest) if self.largest is None else self.largest
        self.largest = largest
        return largest - before


def oracle(
    snn: snnlite.SpikingNetwork,
    x: torch.Tensor,
    steps: int,
    gated: bool,
    start: int = 0,
    cumulative: bool = False,
) -> torch.Tensor:
    """Mean output over the steps ``start < t <= steps`` of the graph with per-step stateful
    modules (a tensor output); max pools gated, cumulative or (neither) per step."""
    net = snn.relux()
    for name, site in list(net.get_submodule(SITES).named_children()):
        setattr(net.get_submodule(SITES), name, StepIF(site.threshold))
    if gated or cumulative:
        step_pool = StepCumulativePool if cumulative else StepGatedPool
        for name, module in list(net.named_modules()):
            if isinstance(module, nn.MaxPool2d):
                parent, _, attr = name.rpartition(".")
                setattr(net.get_submodule(parent) if parent else net, attr, step_pool(module))
    with torch.no_grad():
        return torch.stack([net(x) for _ in range(steps)])[start:].mean(0)


def state_hash(module: nn.Module) -> str:
    """sha256 of everything a module holds: parameters and buffers (names, dtypes, devices,
    values) and every submodule's training flag; equal hashes mean an unchanged module."""
    digest = hashlib.sha256()
    tensors = [*module.named_parameters(remove_duplicate=False),
               *module.named_buffers(remove_duplicate=False)]  # fmt: skip
    for name, tensor in tensors:
        digest.update(f"{name}:{tensor.dtype}:{tensor.device}:{tuple(tensor.shape)}".encode())
        if tensor.device.type != "meta":
            flat = tensor.detach().cpu().reshape(-1).contiguous()
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    for name, sub in module.named_modules():
        digest.update(f"{name}:{sub.training}".encode())
    return digest.hexdigest()


def tree_hash(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (empty if it does not exist)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def in_ci() -> bool:
    """Whether the tests run in CI: ``CI`` set to true (GitHub Actions, ``make test``)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def skip_or_fail(message: str) -> None:
    """Fail in CI, skip elsewhere: a CI run must never go green without the tests that need a
    dataset or a tool; on a developer's machine a skip that says how to get it is enough.
    ``message`` must name the command that fixes it."""
    if in_ci():
        pytest.fail(f"{message} (CI=true: what is missing fails instead of skipping)",
                    pytrace=False)  # fmt: skip
    pytest.skip(message)


def bench_script(name: str) -> ModuleType:
    """A script of bench/ as a module. The scripts run as ``python bench/<name>.py``, with
    bench/ on sys.path, and import each other by their bare names; so must the tests."""
    folder = str(Path(__file__).resolve().parents[1] / "bench")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


BOOK_RESULTS = Path(__file__).resolve().parents[1] / "notebooks" / "results" / "book"


def book_results(name: str) -> dict:
    """The numbers chapter ``name`` computed at the book's parameters (``make book``), stored
    in notebooks/results/book and committed, so every run (CI too) checks the claims of the
    published pages. Fails if the file is missing or was computed by another version of the
    chapter or of its book parameters: the stored numbers would not be the book's."""
    import json

    import yaml

    from snnlite.notebook import chapter_fingerprint

    path = BOOK_RESULTS / f"{name}.json"
    redo = "run `make book` and commit notebooks/results/book"
    assert path.is_file(), f"no book results at {path}: {redo}"
    stored = json.loads(path.read_text())
    notebooks = BOOK_RESULTS.parents[1]
    params = yaml.safe_load((notebooks / "params.yml").read_text())["book"][name] or {}
    current = chapter_fingerprint(notebooks / f"{name}.ipynb", params)
    assert stored.get("_chapter_sha256") == current, (
        f"{path.name} was computed by another version of the chapter or of its book "
        f"parameters: {redo}"
    )
    return {k: v for k, v in stored.items() if not k.startswith("_")}


def signed_start(
    theta: torch.Tensor, shape: tuple[int, ...], channels_last: bool = False, levels: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """A signed neuron's state at t = 0: the membrane at half a spike (theta / 2, or
    theta / 2 S for spikes of theta / S) and nothing sent, in the layout the kernels read
    (channels-last when asked)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    membrane = (theta / (2 * levels)).expand(shape).contiguous(memory_format=layout)
    return membrane, torch.zeros_like(membrane)


def per_step_layout(currents: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(steps, N, C, H, W) currents with every step channels-last, as the runner lays them."""
    if not channels_last:
        return currents
    return torch.stack([c.contiguous(memory_format=torch.channels_last) for c in currents])


# The scene models' targets (issue 11): segmentation within 1 mIoU point of its ANN at
# T = 16, detection at least 94% of its ANN's mAP at T = 32.
SEGMENTATION_POINTS = 0.01
DETECTION_SHARE = 0.94


def scene_metric(result: dict) -> str:
    """A stored scene result's metric: "miou" (segmentation) or "map" (detection)."""
    return "miou" if "ann_miou" in result else "map"
