"""snnlite's model zoo: pretrained CNNs to convert, usable offline.

>>> from snnlite import zoo
>>> zoo.list_models("classification")
['fmnist_resnet', 'fmnist_vgg', 'mobilenet_v2_imagenet']
>>> zoo.list_models("detection")
['scenes_fcos', 'scenes_retinanet']
>>> model = zoo.load("fmnist_vgg")   # eval mode, sha256-verified

The ``scenes_*`` models segment / detect Fashion-MNIST items in ``snnlite.data.FashionScenes``
(96x96); ``zoo.info(name)["extra"]`` names the exact scenes their metrics were measured on.
"""

from snnlite.zoo.models import (
    FashionResNet,
    FashionVGG,
    SceneResNet,
    scenes_deeplabv3,
    scenes_fcn,
    scenes_fcos,
    scenes_retinanet,
)
from snnlite.zoo.registry import (
    REGISTRY,
    RESULTS_DIR,
    WEIGHTS_DIR,
    WeightsFileError,
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
    "RESULTS_DIR",
    "WEIGHTS_DIR",
    "FashionResNet",
    "FashionVGG",
    "SceneResNet",
    "WeightsFileError",
    "WeightsHashError",
    "ZooEntry",
    "build",
    "info",
    "list_models",
    "load",
    "scenes_deeplabv3",
    "scenes_fcn",
    "scenes_fcos",
    "scenes_retinanet",
    "seed_torchvision_cache",
    "sha256_file",
    "verify_file",
    "weight_path",
]
