"""Where the command line gets its model and its data from, by a short spec string.

Models: ``zoo:NAME`` (the zoo, hash-checked), ``torchvision:NAME`` with ``--weights MEMBER``
(torchvision's own weights enums), or a user's ``module:function`` / ``path/to/file.py:function``
that returns an ``nn.Module``. Data: ``fashion-mnist`` (the project's offline loader),
``imagefolder:PATH`` (torchvision's ``ImageFolder``) or ``torchvision:NAME:ROOT`` (a
torchvision dataset class already on disk; nothing is downloaded) for classifiers, and
``fashion-scenes`` (the zoo's pinned FashionScenes splits, with masks and boxes) for
segmentation and detection.

Every model has a task: a zoo entry's own, otherwise classification unless ``--task`` says
segmentation or detection. :func:`check_task_data` refuses data of another task before
anything is converted, since a classifier cannot be scored on masks, nor a segmenter on labels.

Every failure is a :class:`SourceError` whose message names the spec and what to do, so the
command line can print it as one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision import transforms

from snnlite import zoo
from snnlite.data import fashion_mnist_tensors, imagenet_transform
from snnlite.zoo.registry import TASKS
from snnlite.zoo.scene_eval import TEST_SCENES, TRAIN_SCENES, load_scenes

__all__ = [
    "SCENES",
    "TASKS",
    "LoadedModel",
    "SourceError",
    "check_task_data",
    "load_data",
    "load_model",
    "scene_split",
]

SCENES = "fashion-scenes"  # the data spec of the dense tasks
_TORCHVISION_MODULES = {
    "classification": torchvision.models,
    "segmentation": torchvision.models.segmentation,
    "detection": torchvision.models.detection,
}

Transform = Callable[[Any], torch.Tensor]


class SourceError(ValueError):
    """A model or data spec that cannot be used (the message says why and what to do)."""


@dataclass
class LoadedModel:
    """A model in eval mode and the input transform its weights expect (None: unknown)."""

    model: nn.Module
    transform: Transform | None
    zoo_dataset: str | None = None  # the data set a zoo model was trained on
    task: str = "classification"


def load_model(spec: str, weights: str | None = None, task: str = "auto") -> LoadedModel:
    """``zoo:NAME``, ``torchvision:NAME`` (with ``weights``) or ``module:function``.

    ``task``: ``"auto"`` (a zoo entry's task, classification for any other model) or the
    task itself, which a zoo model's must then equal.
    """
    kind, _, rest = spec.partition(":")
    if not rest:
        raise SourceError(
            f"--model {spec!r}: expected zoo:NAME, torchvision:NAME or module:function "
            f"(zoo models: {', '.join(zoo.list_models())})"
        )
    if weights is not None and kind != "torchvision":
        raise SourceError(f"--weights applies to torchvision models only, not {spec!r}")
    if kind == "zoo":
        return _zoo_model(rest, task)
    task = "classification" if task == "auto" else task
    loaded = _torchvision_model(rest, weights, task) if kind == "torchvision" else _user_model(spec)
    loaded.task = task
    return loaded


def _zoo_model(name: str, task: str) -> LoadedModel:
    """A zoo model with its entry's task (``task`` must agree unless it is ``"auto"``)."""
    if name not in zoo.list_models():
        raise SourceError(f"unknown zoo model {name!r}; available: {zoo.list_models()}")
    entry = zoo.info(name)
    if task not in ("auto", entry["task"]):
        raise SourceError(
            f"--task {task} does not match zoo:{name}, a {entry['task']} model "
            "(leave --task out: the zoo knows each model's task)"
        )
    try:
        model = zoo.load(name)
    except (FileNotFoundError, zoo.WeightsFileError) as error:
        raise SourceError(str(error)) from error
    return LoadedModel(model, None, entry["dataset"], entry["task"])


def _torchvision_model(name: str, weights: str | None, task: str) -> LoadedModel:
    module = _TORCHVISION_MODULES[task]
    if name not in torchvision.models.list_models(module=module):
        raise SourceError(
            f"unknown torchvision {task} model {name!r} (see "
            f"torchvision.models.list_models(module={module.__name__}))"
        )
    if weights is None:
        raise SourceError(
            f"torchvision:{name} needs --weights (a member of its weights enum such as "
            "IMAGENET1K_V1 or DEFAULT, or 'none' for random weights)"
        )
    if weights.lower() == "none":
        return LoadedModel(torchvision.models.get_model(name, weights=None).eval(), None)
    enum = torchvision.models.get_model_weights(name)
    try:
        member = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        members = [m.name for m in enum]
        raise SourceError(f"--weights {weights!r}: {enum.__name__} has {members}") from None
    try:
        model = torchvision.models.get_model(name, weights=member)
    except Exception as error:  # offline download failures come in many types
        raise SourceError(f"cannot load torchvision weights {member}: {error}") from error
    return LoadedModel(model.eval(), member.transforms())


def _user_model(spec: str) -> LoadedModel:
    target, _, function = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SourceError(f"--model {spec!r}: no such file {path}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise SourceError(f"--model {spec!r}: cannot import {target!r} ({error})") from error
    builder = getattr(module, function, None)
    if not callable(builder):
        raise SourceError(f"--model {spec!r}: {target} has no function {function!r}")
    model = builder()
    if not isinstance(model, nn.Module):
        raise SourceError(
            f"--model {spec!r}: {function}() returned a {type(model).__name__}, not an nn.Module"
        )
    return LoadedModel(model.eval(), None)


def load_data(spec: str, split: str, transform: Transform | None, image_size: int = 224) -> Dataset:
    """The ``split`` ("train" or "test") of a data spec as a dataset of (image, label).

    ``transform``: what the model's weights expect (torchvision weights carry one); without
    it an image folder gets torchvision's ImageNet evaluation preprocessing at
    ``image_size`` and a torchvision data set a plain ``ToTensor``.
    """
    kind, _, rest = spec.partition(":")
    if spec == "fashion-mnist":
        try:
            images, labels = fashion_mnist_tensors(split)
        except RuntimeError as error:  # DatasetNotFoundError says how to get it
            raise SourceError(str(error)) from error
        return TensorDataset(images, labels)
    if kind == "imagefolder":
        folder = Path(rest)
        if not folder.is_dir():
            raise SourceError(f"--data/--calibration {spec!r}: no such folder {folder}")
        try:
            return torchvision.datasets.ImageFolder(
                str(folder), transform=transform or imagenet_transform(image_size)
            )
        except (FileNotFoundError, RuntimeError) as error:
            raise SourceError(f"{spec!r}: {error}") from error
    if kind == "torchvision":
        name, _, root = rest.partition(":")
        cls = getattr(torchvision.datasets, name, None)
        if not isinstance(cls, type) or not issubclass(cls, Dataset):
            raise SourceError(f"unknown torchvision data set {name!r} in {spec!r}")
        if not root or not Path(root).is_dir():
            raise SourceError(f"{spec!r}: give an existing root folder, torchvision:{name}:ROOT")
        try:
            return cls(root, train=split == "train", download=False,
                       transform=transform or transforms.ToTensor())  # fmt: skip
        except (RuntimeError, TypeError) as error:
            raise SourceError(f"{spec!r}: {error}") from error
    raise SourceError(
        f"data spec {spec!r}: expected fashion-mnist, imagefolder:PATH, torchvision:NAME:ROOT "
        f"or {SCENES}"
    )


def check_task_data(model: str, task: str, spec: str, option: str = "--data") -> None:
    """Refuse data of another task than the model's, before anything is loaded or converted:
    a classifier is scored on labels, a segmenter on masks, a detector on boxes."""
    if task == "classification" and spec == SCENES:
        raise SourceError(
            f"the task and the data do not match: {model} is a classification model, but "
            f"{option} {SCENES} holds segmentation and detection scenes (classifiers take "
            "fashion-mnist, imagefolder:PATH or torchvision:NAME:ROOT; --task segmentation or "
            "--task detection says a model of your own is dense)"
        )
    if task != "classification" and spec != SCENES:
        raise SourceError(
            f"the task and the data do not match: {model} is a {task} model, but {option} "
            f"{spec} is classification data ({task} runs on {option} {SCENES})"
        )


def scene_split(split: str, count: int | None, progress: bool = False) -> dict:
    """The first ``count`` scenes (all if None or more) of the zoo's pinned FashionScenes
    ``split`` ("train" or "test"), as :func:`snnlite.data.load_scenes` returns them: the
    scenes every zoo scene model was trained and measured on."""
    scene_args = TRAIN_SCENES if split == "train" else TEST_SCENES
    total = scene_args["num_scenes"]
    scenes = total if count is None else min(count, total)
    return load_scenes(progress=progress, **{**scene_args, "num_scenes": scenes})


def first(dataset: Dataset, count: int | None) -> Dataset:
    """The first ``count`` samples (all if None); an empty result is an error."""
    size = len(dataset)  # type: ignore[arg-type]
    if size == 0:
        raise SourceError("the data set is empty")
    if count is None or count >= size:
        return dataset
    return Subset(dataset, range(count))
