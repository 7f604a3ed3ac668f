"""snnlite's model zoo: pretrained CNNs to convert, usable offline.

>>> from snnlite import zoo
>>> zoo.list_models()
['fmnist_resnet', 'fmnist_vgg', 'mobilenet_v2_imagenet']
>>> model = zoo.load("fmnist_vgg")   # eval mode, sha256-verified
"""

from snnlite.zoo.models import FashionResNet, FashionVGG
from snnlite.zoo.registry import (
    REGISTRY,
    WEIGHTS_DIR,
    WeightsHashError,
    ZooEntry,
    build,
    info,
    list_models,
    load,
    seed_torchvision_cache,
    sha256_file,
    verify_file,
    weight_path,
)

__all__ = [
    "REGISTRY",
    "WEIGHTS_DIR",
    "FashionResNet",
    "FashionVGG",
    "WeightsHashError",
    "ZooEntry",
    "build",
    "info",
    "list_models",
    "load",
    "seed_torchvision_cache",
    "sha256_file",
    "verify_file",
    "weight_path",
]
