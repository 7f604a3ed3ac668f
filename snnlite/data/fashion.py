"""Fashion-MNIST through torchvision, working offline.

Online users simply get torchvision's download. Offline machines (and CI) can
seed torchvision's cache from Debian's ``dataset-fashion-mnist`` package: its
``.gz`` files are recompressed, so torchvision's md5 check rejects them, but
once gunzipped into ``<root>/FashionMNIST/raw/`` torchvision loads them with
``download=False``. No data is ever faked.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import torch
from torchvision import datasets, transforms

FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Where Debian's dataset-fashion-mnist package puts the files. Module-level so
# tests can point it elsewhere.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_SPLITS = ("train", "test")


class DatasetNotFoundError(RuntimeError):
    """The data is neither on disk nor downloadable; the message lists the ways to get it."""


def default_root() -> Path:
    """Data root: ``$SNNLITE_DATA`` if set, else ``~/.cache/snnlite/data``."""
    env = os.environ.get("SNNLITE_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "snnlite" / "data"


def _raw_dir(root: Path) -> Path:
    # Same layout torchvision.datasets.FashionMNIST uses.
    return root / "FashionMNIST" / "raw"


def _has_raw(root: Path) -> bool:
    raw = _raw_dir(root)
    return all((raw / name).is_file() for name in RAW_FILES)


def seed_from_debian(root: Path, debian_dir: Path | None = None) -> bool:
    """Gunzip Debian's Fashion-MNIST files into torchvision's raw folder.

    Returns True if the raw folder is complete afterwards. Each file is written
    to a temporary name and renamed, so a crash never leaves a truncated file
    that torchvision would try to parse.
    """
    src_dir = DEBIAN_DIR if debian_dir is None else Path(debian_dir)
    sources = [src_dir / f"{name}.gz" for name in RAW_FILES]
    if not all(src.is_file() for src in sources):
        return False
    raw = _raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    for name, src in zip(RAW_FILES, sources):
        dst = raw / name
        if dst.is_file():
            continue
        tmp = raw / f".{name}.{os.getpid()}.tmp"
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, dst)
    return _has_raw(root)


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _transform(normalize: bool) -> transforms.Compose:
    steps: list = [transforms.ToTensor()]  # uint8 28x28 -> float32 1x28x28 in [0, 1]
    if normalize:
        steps.append(transforms.Normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD))
    return transforms.Compose(steps)


def fashion_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    normalize: bool = True,
    download: bool = True,
) -> datasets.FashionMNIST:
    """Fashion-MNIST ``split`` as a torchvision dataset of (1x28x28 float32, int label).

    Finds the data in this order: already in ``root``; seeded from Debian's
    package; torchvision download (only if ``download``). Raises
    :class:`DatasetNotFoundError` (a RuntimeError) with instructions if all fail.
    """
    _check_split(split)
    root_path = default_root() if root is None else Path(root).expanduser()
    if not _has_raw(root_path):
        seed_from_debian(root_path)
    transform = _transform(normalize)
    train = split == "train"
    if _has_raw(root_path):
        return datasets.FashionMNIST(
            str(root_path), train=train, download=False, transform=transform
        )
    error: Exception | None = None
    if download:
        try:
            return datasets.FashionMNIST(
                str(root_path), train=train, download=True, transform=transform
            )
        except Exception as exc:  # network errors come in many types
            error = exc
    raise DatasetNotFoundError(
        f"Fashion-MNIST not found in {_raw_dir(root_path)} and could not be "
        f"downloaded ({'download disabled' if error is None else error}). Fix one of: "
        f"`apt-get install dataset-fashion-mnist` (provides {DEBIAN_DIR}; `make data` runs "
        "it as root); "
        "set SNNLITE_DATA to a folder that contains FashionMNIST/raw; "
        "or go online so torchvision can download it."
    ) from error


def fashion_mnist_tensors(
    split: str = "train",
    root: str | os.PathLike | None = None,
    normalize: bool = True,
    download: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole split as tensors: images (N, 1, 28, 28) float32, labels (N,) int64.

    Vectorised over the dataset's ``.data``/``.targets`` (no per-item loop), so
    evaluating or training on all 60 000 images is fast. Values match
    ``fashion_mnist(split)[i]`` exactly.
    """
    ds = fashion_mnist(split, root=root, normalize=normalize, download=download)
    images = ds.data.unsqueeze(1).to(torch.float32).div_(255.0)  # (N, 1, 28, 28)
    if normalize:
        images.sub_(FASHION_MNIST_MEAN[0]).div_(FASHION_MNIST_STD[0])
    labels = ds.targets.to(torch.int64)  # (N,)
    return images, labels


def fashion_mnist_benchmark(
    images: int, calibration_batches: int, calibration_batch: int
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The zoo tables' data: the first ``images`` test images (N, 1, 28, 28) with their
    labels (N,), and the first ``calibration_batches * calibration_batch`` training images
    cut into calibration batches, in order (the tuning takes the first of them)."""
    x, y = fashion_mnist_tensors("test")
    train, _ = fashion_mnist_tensors("train")
    size = calibration_batch
    calibration = [train[i * size : (i + 1) * size] for i in range(calibration_batches)]
    return x[:images], y[:images], calibration
